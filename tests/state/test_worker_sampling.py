"""Under sampling (`workers_per_round` below the task's workers) a worker fetches and
builds a round's global model only when a later round draws it: the rounds it sits out cost
it no fetch and no averaging, and the model it then trains from is the one a worker that
averaged every round has."""

from __future__ import annotations

from dataclasses import replace

from protocol.sortition import worker_selected
from protocol.state import GlobalModel, Update, WorkerMachine
from protocol.state.actions import (
    Action,
    Aggregate,
    Fetch,
    StartTraining,
    Stop,
    TrainAhead,
    Withdraw,
)
from protocol.state.events import (
    BlobFetched,
    Event,
    KeyReleaseReceived,
    RoundFinalized,
    RoundOpened,
    TaskTerminated,
    Tick,
)

from .helpers import (
    INITIAL_CID,
    REQUESTER,
    TASK,
    WORKERS,
    announced,
    deadlines,
    feed,
    only,
    started,
    submitted,
    update_cid,
)

ME, OTHER, THIRD = WORKERS
PER_ROUND = 1


def seed(me_drawn: bool) -> bytes:
    """A seed under which the draw of one of the three workers takes ME or leaves it out."""
    for i in range(256):
        candidate = bytes([i]) * 32
        if worker_selected(candidate, ME, PER_ROUND, len(WORKERS)) is me_drawn:
            return candidate
    raise AssertionError("no such seed among 256")


def others_round(round: int, me_drawn: bool, accepted: tuple[bytes, ...]) -> list[Event]:
    """Round `round` opened with a draw that takes ME or not; OTHER and THIRD submit,
    announce and release their keys; it finalizes accepting `accepted`."""
    training_end, commit_end, _ = deadlines(round)
    events: list[Event] = [RoundOpened(round, *deadlines(round), seed(me_drawn))]
    for worker in (OTHER, THIRD):
        events += [submitted(worker, round), announced(worker, round)]
    events.append(Tick(training_end))
    events += [
        KeyReleaseReceived(round, w, update_cid(w, round), b"key of " + w[:1]) for w in (OTHER, THIRD)
    ]
    events += [Tick(commit_end), RoundFinalized(round, accepted)]
    return events


def released(worker: bytes, round: int) -> Update:
    return Update(worker, update_cid(worker, round), 100, b"key of " + worker[:1])


def sampled_worker() -> WorkerMachine:
    worker = WorkerMachine(ME, TASK)
    feed(worker, replace(started(), workers_per_round=PER_ROUND))
    return worker


def test_rounds_a_worker_sits_out_cost_it_no_fetch_and_no_average() -> None:
    worker = sampled_worker()
    actions: list[Action] = []
    for round in (1, 2):
        actions += feed(worker, *others_round(round, False, (OTHER, THIRD)))
    assert not only(actions, Fetch)  # not the initial model, nor any update
    assert not only(actions, Aggregate) and not only(actions, TrainAhead)
    assert not [a for a in actions if "never aggregated" in getattr(a, "text", "")]


def test_a_worker_drawn_later_builds_the_model_a_worker_averaging_every_round_has() -> None:
    lazy = sampled_worker()
    eager = WorkerMachine(ME, TASK)  # every worker trains every round: it averages each
    feed(eager, started(), BlobFetched(INITIAL_CID))
    for round in (1, 2):
        feed(lazy, *others_round(round, False, (THIRD, OTHER)))
        eager_actions = feed(eager, *others_round(round, False, (THIRD, OTHER)))
        for update in (released(THIRD, round), released(OTHER, round)):
            eager_actions += eager.handle(BlobFetched(update.cid))
        (eager_aggregate,) = only(eager_actions, Aggregate)
    actions = lazy.handle(RoundOpened(3, *deadlines(3), seed(True)))
    # round 2's accepted updates only: round 1's model is not needed by anyone any more
    wanted = [released(THIRD, 2), released(OTHER, 2)]
    assert only(actions, Fetch) == [Fetch(u.cid, (u.worker,)) for u in wanted]
    assert not only(actions, StartTraining)
    actions = feed(lazy, *(BlobFetched(u.cid) for u in wanted))
    (aggregate,) = only(actions, Aggregate)
    # the same updates in the same order with the same key releases: the same average
    assert aggregate.model == eager_aggregate.model == GlobalModel(INITIAL_CID, 2, tuple(wanted))
    assert only(actions, StartTraining) == [StartTraining(3, aggregate.model)]


def test_a_round_that_accepts_nothing_keeps_the_deferred_model() -> None:
    worker = sampled_worker()
    feed(worker, *others_round(1, False, (OTHER,)))
    feed(worker, *others_round(2, False, ()))
    actions = worker.handle(RoundOpened(3, *deadlines(3), seed(True)))
    assert only(actions, Fetch) == [Fetch(update_cid(OTHER, 1), (OTHER,))]
    (aggregate,) = only(worker.handle(BlobFetched(update_cid(OTHER, 1))), Aggregate)
    assert aggregate.model == GlobalModel(INITIAL_CID, 1, (released(OTHER, 1),))


def test_a_worker_drawn_in_the_first_round_fetches_the_initial_model_then() -> None:
    worker = sampled_worker()
    assert not only(worker.handle(Tick(deadlines(1)[0] - 500)), Fetch)  # no round yet
    actions = worker.handle(RoundOpened(1, *deadlines(1), seed(True)))
    assert only(actions, Fetch) == [Fetch(INITIAL_CID, (REQUESTER,))]
    actions = worker.handle(BlobFetched(INITIAL_CID))
    assert only(actions, StartTraining) == [StartTraining(1, GlobalModel(INITIAL_CID))]


def test_the_task_end_drops_a_deferred_model_and_settles_up() -> None:
    worker = sampled_worker()
    feed(worker, *others_round(1, False, (OTHER, THIRD)))
    actions = worker.handle(TaskTerminated("round limit"))
    assert not only(actions, Fetch) and not only(actions, Aggregate)
    assert worker.view.aggregation is None
    assert only(actions, Withdraw) == [Withdraw()]
    assert only(actions, Stop) == [Stop("the task is over")]


def test_a_round_that_accepts_nothing_keeps_an_aggregation_still_under_way() -> None:
    # every worker trains every round: round 1's updates are still being fetched when
    # round 2 ends with none accepted; round 1's average is still the model to go on from
    worker = WorkerMachine(ME, TASK, train_ahead=False)
    feed(worker, started(), BlobFetched(INITIAL_CID))
    feed(worker, *others_round(1, False, (OTHER,)))
    feed(worker, *others_round(2, False, ()))
    (aggregate,) = only(worker.handle(BlobFetched(update_cid(OTHER, 1))), Aggregate)
    assert aggregate.model == GlobalModel(INITIAL_CID, 1, (released(OTHER, 1),))
    assert worker.view.global_model == aggregate.model
