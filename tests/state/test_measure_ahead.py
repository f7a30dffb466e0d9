"""ValidatorMachine: a seated validator has each committed update measured as soon as it
is fetched (MeasureUpdate), while training goes on, once per update and round; never
when unseated, never once its evaluation started, again after a restart."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.state import ValidatorMachine
from protocol.state.actions import Action, MeasureUpdate, StartEvaluation
from protocol.state.events import (
    BlobFetched,
    Event,
    Restarted,
    SortitionDrawn,
    Tick,
)
from protocol.state.persist import from_dict, to_dict

from .helpers import (
    INITIAL_CID,
    TASK,
    VALIDATION_CID,
    WORKERS,
    announced,
    feed,
    only,
    opened,
    started,
    submitted,
    update_cid,
)
from .test_validator import COMMIT_END, ME, PROOF, TRAINING_END, W0, W1


def validator_in_training(seated: bool = True) -> ValidatorMachine:
    validator = ValidatorMachine(ME, TASK)
    feed(validator, started(), opened(1), SortitionDrawn(1, PROOF if seated else None))
    feed(validator, BlobFetched(INITIAL_CID))
    return validator


def measured(actions: list[Action]) -> list[str]:
    return [a.cid for a in actions if isinstance(a, MeasureUpdate)]


def test_each_fetched_update_is_measured_once_while_training_goes_on() -> None:
    validator = validator_in_training()
    actions = feed(validator, submitted(W0, 1), announced(W0, 1), BlobFetched(update_cid(W0, 1)))
    assert measured(actions) == []  # the validation set is not here yet
    actions = validator.handle(BlobFetched(VALIDATION_CID))
    assert only(actions, MeasureUpdate) == [
        MeasureUpdate(1, update_cid(W0, 1), VALIDATION_CID)
    ]
    actions = feed(validator, submitted(W1, 1), announced(W1, 1), Tick(TRAINING_END - 1))
    assert measured(actions) == []  # W1's update is not fetched yet; W0's was asked for
    actions = validator.handle(BlobFetched(update_cid(W1, 1)))
    assert measured(actions) == [update_cid(W1, 1)]


def test_an_unseated_validator_measures_nothing() -> None:
    validator = validator_in_training(seated=False)
    actions = feed(validator, BlobFetched(VALIDATION_CID), submitted(W0, 1), announced(W0, 1))
    actions += feed(validator, BlobFetched(update_cid(W0, 1)))
    assert measured(actions) == []


def test_the_evaluation_measures_what_arrives_once_it_started() -> None:
    validator = validator_in_training()
    feed(validator, BlobFetched(VALIDATION_CID))
    feed(validator, submitted(W0, 1), announced(W0, 1), submitted(W1, 1), announced(W1, 1))
    feed(validator, BlobFetched(update_cid(W0, 1)))
    # the last update arrives in the commit phase: the evaluation starts with it, and
    # nothing more is measured ahead
    actions = feed(validator, Tick(TRAINING_END), BlobFetched(update_cid(W1, 1)))
    assert len(only(actions, StartEvaluation)) == 1
    assert measured(actions) == []


def test_a_restarted_validator_asks_again_for_what_it_had_asked() -> None:
    validator = validator_in_training()
    feed(validator, BlobFetched(VALIDATION_CID), submitted(W0, 1), announced(W0, 1))
    assert measured(validator.handle(BlobFetched(update_cid(W0, 1)))) == [update_cid(W0, 1)]
    restarted = from_dict(to_dict(validator))
    assert isinstance(restarted, ValidatorMachine)
    assert measured(restarted.handle(Restarted())) == [update_cid(W0, 1)]


def test_a_new_round_measures_its_own_updates() -> None:
    validator = validator_in_training()
    feed(validator, BlobFetched(VALIDATION_CID), submitted(W0, 1), announced(W0, 1))
    feed(validator, BlobFetched(update_cid(W0, 1)))
    feed(validator, opened(2), SortitionDrawn(2, PROOF))
    feed(validator, submitted(W0, 2), announced(W0, 2))
    actions = validator.handle(BlobFetched(update_cid(W0, 2)))
    assert [a.cid for a in only(actions, MeasureUpdate)] == [update_cid(W0, 2)]
    assert validator.measuring == {(2, update_cid(W0, 2))}  # round 1's are forgotten


EVENTS = st.sampled_from(
    [
        *(submitted(w, 1) for w in WORKERS),
        *(announced(w, 1) for w in WORKERS),
        *(BlobFetched(update_cid(w, 1)) for w in WORKERS),
        BlobFetched(VALIDATION_CID),
        Tick(TRAINING_END - 1),
        Tick(TRAINING_END),
        Tick(COMMIT_END - 1),
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(EVENTS, max_size=25))
def test_any_history_measures_each_update_at_most_once_and_only_before_the_evaluation(
    history: list[Event],
) -> None:
    validator = validator_in_training()
    asked: list[str] = []
    evaluation_started = False
    for event in history:
        actions = validator.handle(event)
        cids = measured(actions)
        assert not (cids and evaluation_started)
        evaluation_started |= bool(only(actions, StartEvaluation))
        asked += cids
        for cid in cids:  # only a fetched update matched to its worker's commitment
            assert cid in validator.view.have
            assert cid in {u.cid for u in validator.view.updates.values()}
    assert len(asked) == len(set(asked))
