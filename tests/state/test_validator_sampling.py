"""A committee smaller than the validators (`committee_size`): a validator the round's draw
leaves unseated fetches nothing and averages nothing; once a later round seats it, it builds
the previous round's global model from that round's accepted updates alone, the model a
validator seated in every round built, and evaluates from it."""

from __future__ import annotations

from dataclasses import replace

from protocol.state import GlobalModel, Update, ValidatorMachine
from protocol.state.actions import Action, Aggregate, Fetch, Stop, Withdraw
from protocol.state.events import (
    BlobFetched,
    Event,
    KeyReleaseReceived,
    RoundFinalized,
    RoundOpened,
    SortitionDrawn,
    TaskTerminated,
    Tick,
)
from protocol.state.records import BlobKind

from .helpers import (
    INITIAL_CID,
    REQUESTER,
    TASK,
    VALIDATION_CID,
    VALIDATORS,
    announced,
    deadlines,
    feed,
    only,
    opened,
    started,
    submitted,
    update_cid,
)
from .test_validator import ME, PROOF, W0, W1

COMMITTEE = 1  # of three validators


def sampled_validator() -> ValidatorMachine:
    validator = ValidatorMachine(ME, TASK)
    feed(validator, replace(started(), committee_size=COMMITTEE))
    return validator


def unseated_round(round: int, accepted: tuple[bytes, ...]) -> list[Event]:
    """Round `round` with a draw that leaves ME unseated: W0 and W1 submit, announce and
    release their keys; it finalizes accepting `accepted`."""
    training_end, commit_end, _ = deadlines(round)
    events: list[Event] = [opened(round), SortitionDrawn(round, None)]
    for worker in (W0, W1):
        events += [submitted(worker, round), announced(worker, round)]
    events.append(Tick(training_end))
    events += [
        KeyReleaseReceived(round, w, update_cid(w, round), b"key of " + w[:1]) for w in (W0, W1)
    ]
    events += [Tick(commit_end), RoundFinalized(round, accepted)]
    return events


def released(worker: bytes, round: int) -> Update:
    return Update(worker, update_cid(worker, round), 100, b"key of " + worker[:1])


def test_rounds_a_validator_sits_out_cost_it_no_fetch_and_no_average() -> None:
    validator = sampled_validator()
    actions: list[Action] = []
    for round in (1, 2):
        actions += feed(validator, *unseated_round(round, (W0, W1)))
    # not the validation set, not the initial model, no update
    assert not only(actions, Fetch)
    assert not only(actions, Aggregate)


def test_a_validator_seated_later_builds_the_model_a_validator_seated_every_round_has() -> None:
    lazy = sampled_validator()
    eager = ValidatorMachine(ME, TASK)  # a committee of every validator: it averages each round
    feed(eager, started(), BlobFetched(INITIAL_CID), BlobFetched(VALIDATION_CID))
    for round in (1, 2):
        feed(lazy, *unseated_round(round, (W1, W0)))
        eager_actions = feed(eager, *unseated_round(round, (W1, W0)))
        for update in (released(W1, round), released(W0, round)):
            eager_actions += eager.handle(BlobFetched(update.cid))
        (eager_aggregate,) = only(eager_actions, Aggregate)
    assert not only(lazy.handle(RoundOpened(3, *deadlines(3), b"\x03" * 32)), Fetch)
    actions = lazy.handle(SortitionDrawn(3, PROOF))
    # round 2's accepted updates and the validation set: not the initial model, not round 1
    wanted = [released(W1, 2), released(W0, 2)]
    assert only(actions, Fetch) == [
        Fetch(VALIDATION_CID, (REQUESTER,), BlobKind.VALIDATION_SET),
        *(Fetch(u.cid, (u.worker,)) for u in wanted),
    ]
    actions = feed(lazy, BlobFetched(VALIDATION_CID), *(BlobFetched(u.cid) for u in wanted))
    (aggregate,) = only(actions, Aggregate)
    assert aggregate.model == eager_aggregate.model == GlobalModel(INITIAL_CID, 2, tuple(wanted))
    assert lazy.view.global_model == eager.view.global_model


def test_a_validator_seated_in_the_first_round_fetches_what_it_evaluates_with_then() -> None:
    validator = sampled_validator()
    assert not only(validator.handle(opened(1)), Fetch)  # the draw is not known yet
    actions = validator.handle(SortitionDrawn(1, PROOF))
    assert only(actions, Fetch) == [
        Fetch(VALIDATION_CID, (REQUESTER,), BlobKind.VALIDATION_SET),
        Fetch(INITIAL_CID, (REQUESTER,)),
    ]


def test_a_committee_of_every_validator_fetches_before_any_draw() -> None:
    for committee in (0, len(VALIDATORS)):  # not known, or every validator seated
        validator = ValidatorMachine(ME, TASK)
        actions = feed(validator, replace(started(), committee_size=committee))
        actions += validator.handle(opened(1))
        assert {a.cid for a in only(actions, Fetch)} == {VALIDATION_CID, INITIAL_CID}


def test_the_task_end_drops_a_deferred_model_and_settles_up() -> None:
    validator = sampled_validator()
    feed(validator, *unseated_round(1, (W0, W1)))
    assert validator.view.aggregation is not None
    actions = validator.handle(TaskTerminated("round limit"))
    assert not only(actions, Fetch) and not only(actions, Aggregate)
    assert validator.view.aggregation is None
    assert only(actions, Withdraw) == [Withdraw()]
    assert only(actions, Stop) == [Stop("the task is over")]
