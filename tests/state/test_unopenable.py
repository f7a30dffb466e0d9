"""A validator marks UNAVAILABLE an update it fetched but could not open for a reason only
it can see (EvaluationDone.unopenable), as one it could not fetch: a REJECT would contradict
the validators that opened it. Updates it judged keep their ACCEPT or REJECT."""

from __future__ import annotations

from protocol.manifest import WorkerVerdict
from protocol.state import ValidatorMachine
from protocol.state.events import BlobFetched, EvaluationDone, SortitionDrawn, Tick

from .helpers import (
    INITIAL_CID,
    SALT,
    TASK,
    VALIDATION_CID,
    VALIDATORS,
    WORKERS,
    announced,
    deadlines,
    feed,
    logs,
    opened,
    started,
    submitted,
    update_cid,
)

W0, W1, W2 = WORKERS


def evaluating_all_three() -> ValidatorMachine:
    """Selected; every worker submitted, its update fetched; evaluating in the commit phase."""
    validator = ValidatorMachine(VALIDATORS[0], TASK)
    feed(validator, started(), opened(1), SortitionDrawn(1, b"\x07" * 256))
    feed(validator, BlobFetched(VALIDATION_CID), BlobFetched(INITIAL_CID))
    for worker in WORKERS:
        feed(validator, submitted(worker, 1), announced(worker, 1))
        feed(validator, BlobFetched(update_cid(worker, 1)))
    validator.handle(Tick(deadlines(1)[0]))
    assert validator.local.evaluation_requested
    assert validator.local.evaluated == WORKERS
    return validator


def test_an_unopenable_update_is_unavailable_and_the_others_keep_their_verdicts() -> None:
    validator = evaluating_all_three()
    done = EvaluationDone(
        1, WORKERS, (40_000, 0, 0), (True, False, False), 900_000, SALT, unopenable=(W1,)
    )
    feed(validator, done)
    manifest = validator.local.manifest
    assert manifest is not None
    assert manifest.verdicts == (
        WorkerVerdict.ACCEPT,
        WorkerVerdict.UNAVAILABLE,  # could not open it: not REJECT
        WorkerVerdict.REJECT,  # opened, judged bad: stays REJECT
    )


def test_without_unopenable_updates_the_verdicts_are_the_accepts() -> None:
    validator = evaluating_all_three()
    feed(validator, EvaluationDone(1, WORKERS, (1, 0, 0), (True, False, False), 900_000, SALT))
    manifest = validator.local.manifest
    assert manifest is not None
    assert manifest.verdicts == (
        WorkerVerdict.ACCEPT,
        WorkerVerdict.REJECT,
        WorkerVerdict.REJECT,
    )


def test_an_unopenable_worker_that_is_no_submitter_drops_the_result() -> None:
    validator = evaluating_all_three()
    stranger = b"\x99" * 20
    actions = feed(
        validator,
        EvaluationDone(
            1, WORKERS, (1, 0, 0), (True, False, False), 900_000, SALT, unopenable=(stranger,)
        ),
    )
    assert validator.local.manifest is None
    assert any("unopenable is not among the workers" in line for line in logs(actions, "error"))
