"""ValidatorMachine, phase by phase."""

from __future__ import annotations

from protocol.manifest import WorkerVerdict, manifest_commitment
from protocol.state import GlobalModel, Manifest, Phase, TxKind, Update, ValidatorMachine
from protocol.state.actions import (
    Aggregate,
    DrawSortition,
    Fetch,
    Persist,
    PublishCommitteeProof,
    PublishScores,
    SendTx,
    StartEvaluation,
)
from protocol.state.events import (
    AnnouncementReceived,
    BlobFetched,
    EvaluationDone,
    JobFailed,
    ManifestCommitted,
    ManifestRevealed,
    PhaseChanged,
    Restarted,
    RoundFinalized,
    SortitionDrawn,
    Tick,
    TxFailed,
)
from protocol.state.persist import from_dict, to_dict
from protocol.state.records import BlobKind, Job

from .helpers import (
    INITIAL_CID,
    REQUESTER,
    SALT,
    TASK,
    VALIDATION_CID,
    VALIDATORS,
    WORKERS,
    aggregated,
    announced,
    deadlines,
    feed,
    logs,
    only,
    opened,
    started,
    submitted,
    txs,
    update_cid,
)

ME = VALIDATORS[0]
W0, W1, W2 = WORKERS
PROOF = b"\x07" * 256
TRAINING_END, COMMIT_END, REVEAL_END = deadlines(1)
INITIAL = GlobalModel(INITIAL_CID)


def update(worker: bytes, round: int = 1) -> Update:
    return Update(worker, update_cid(worker, round), 100)


def scores_for(workers: tuple[bytes, ...]) -> EvaluationDone:
    n = len(workers)
    return EvaluationDone(1, workers, tuple(range(n)), (True,) * n, 900_000, SALT)


def selected_validator() -> ValidatorMachine:
    """Round 1, selected, validation set and initial model fetched."""
    validator = ValidatorMachine(ME, TASK)
    feed(validator, started(), opened(1), SortitionDrawn(1, PROOF))
    feed(validator, BlobFetched(VALIDATION_CID), BlobFetched(INITIAL_CID))
    return validator


def evaluating_validator() -> ValidatorMachine:
    """Selected, W0 and W1 submitted and announced, in the commit phase, evaluating."""
    validator = selected_validator()
    feed(validator, submitted(W0, 1), announced(W0, 1), submitted(W1, 1), announced(W1, 1))
    feed(validator, BlobFetched(update_cid(W0, 1)), BlobFetched(update_cid(W1, 1)))
    validator.handle(Tick(TRAINING_END))
    assert validator.local.evaluation_requested
    return validator


def committed_validator() -> ValidatorMachine:
    validator = evaluating_validator()
    assert len(txs(validator.handle(scores_for((W0, W1))))) == 1
    validator.handle(ManifestCommitted(1, ME))
    return validator


def test_a_selected_validator_evaluates_commits_then_reveals() -> None:
    validator = ValidatorMachine(ME, TASK)
    actions = feed(validator, started(), opened(1))
    assert only(actions, DrawSortition) == [DrawSortition(1, opened(1).seed)]
    assert set(only(actions, Fetch)) == {
        Fetch(VALIDATION_CID, (REQUESTER,), BlobKind.VALIDATION_SET),
        Fetch(INITIAL_CID, (REQUESTER,), BlobKind.MODEL),
    }
    actions = validator.handle(SortitionDrawn(1, PROOF))
    assert only(actions, PublishCommitteeProof) == [PublishCommitteeProof(1, PROOF)]
    feed(validator, BlobFetched(VALIDATION_CID), BlobFetched(INITIAL_CID))

    # W0: committed and announced -> fetched. W1: announced, no commitment -> not fetched.
    # W2: committed, announced a CID that does not open its commitment -> not fetched.
    actions = feed(validator, submitted(W0, 1), announced(W0, 1), announced(W1, 1))
    actions += feed(
        validator, submitted(W2, 1), AnnouncementReceived(1, W2, update_cid(W1, 1), 100)
    )
    assert only(actions, Fetch) == [Fetch(update_cid(W0, 1), (W0,))]

    actions = feed(validator, BlobFetched(update_cid(W0, 1)), Tick(TRAINING_END))
    assert validator.view.phase == Phase.COMMIT
    assert not only(actions, StartEvaluation)  # W2's real update may still be announced

    actions = validator.handle(announced(W2, 1))
    assert only(actions, Fetch) == [Fetch(update_cid(W2, 1), (W2,))]
    actions = validator.handle(BlobFetched(update_cid(W2, 1)))
    assert only(actions, StartEvaluation) == [
        StartEvaluation(1, (W0, W2), (update(W0), update(W2)), VALIDATION_CID, INITIAL)
    ]

    done = EvaluationDone(1, (W0, W2), (40_000, -3_000), (True, False), 912_000, SALT)
    verdicts = (WorkerVerdict.ACCEPT, WorkerVerdict.REJECT)
    manifest = Manifest(done.workers, done.scores, verdicts, done.global_accuracy, SALT)
    actions = validator.handle(done)
    commitment = manifest_commitment(
        TASK, 1, ME, done.workers, done.scores, verdicts, done.global_accuracy, SALT
    )
    assert txs(actions) == [SendTx(TxKind.COMMIT_MANIFEST, 1, (1, commitment, PROOF))]

    actions = feed(validator, ManifestCommitted(1, ME), Tick(COMMIT_END - 1))
    assert not txs(actions)  # no reveal while the commit phase lasts
    actions = validator.handle(Tick(COMMIT_END))
    reveal = (1, done.workers, done.scores, verdicts, done.global_accuracy, SALT)
    assert txs(actions) == [SendTx(TxKind.REVEAL_MANIFEST, 1, reveal)]
    assert only(actions, PublishScores) == [PublishScores(1, manifest)]


def test_a_validator_not_selected_stays_idle_for_the_round() -> None:
    validator = ValidatorMachine(ME, TASK)
    feed(validator, started(), opened(1), BlobFetched(VALIDATION_CID), BlobFetched(INITIAL_CID))
    actions = validator.handle(SortitionDrawn(1, None))
    assert logs(actions, "info") == ["round 1: not selected for the committee; idle"]
    actions += feed(validator, submitted(W0, 1), announced(W0, 1), Tick(TRAINING_END))
    actions += feed(validator, Tick(COMMIT_END), Tick(REVEAL_END))
    assert not only(actions, Fetch)
    assert not only(actions, StartEvaluation)
    assert not only(actions, PublishCommitteeProof)
    assert not txs(actions)


def test_evaluation_starts_at_the_cutoff_without_updates_never_announced() -> None:
    validator = selected_validator()
    feed(validator, submitted(W0, 1), announced(W0, 1), BlobFetched(update_cid(W0, 1)))
    feed(validator, submitted(W1, 1), Tick(TRAINING_END))  # W1 never announces
    cutoff = TRAINING_END + (COMMIT_END - TRAINING_END) // 2
    assert not only(validator.handle(Tick(cutoff - 1)), StartEvaluation)
    actions = validator.handle(Tick(cutoff))
    assert only(actions, StartEvaluation) == [
        StartEvaluation(1, (W0, W1), (update(W0),), VALIDATION_CID, INITIAL)
    ]
    assert logs(actions, "warning") == [
        "round 1: 1 of 2 committed updates could not be fetched; they are marked unavailable"
    ]
    # the job rejects what it never saw; the manifest says the validator could not judge it
    actions = validator.handle(
        EvaluationDone(1, (W0, W1), (50_000, 0), (True, False), 900_000, SALT)
    )
    manifest = validator.local.manifest
    assert manifest is not None
    assert manifest.verdicts == (WorkerVerdict.ACCEPT, WorkerVerdict.UNAVAILABLE)
    assert manifest.accepts == (True, False)
    (commit,) = txs(actions)
    assert commit.args[1] == manifest_commitment(
        TASK, 1, ME, (W0, W1), (50_000, 0), (1, 2), 900_000, SALT
    )


def test_evaluation_that_ends_after_the_commit_deadline_is_not_committed() -> None:
    validator = evaluating_validator()
    validator.handle(Tick(COMMIT_END))
    actions = validator.handle(scores_for((W0, W1)))
    assert not txs(actions)
    assert logs(actions, "warning") == ["round 1: EvaluationDone came after the commit phase"]


def test_a_manifest_that_does_not_list_the_submitters_in_order_is_not_committed() -> None:
    validator = evaluating_validator()
    for bad in (
        scores_for((W1, W0)),
        scores_for((W0,)),
        EvaluationDone(1, (W0, W1), (1, 2), (True, True), 900_000, b"short salt"),
        EvaluationDone(1, (W0, W1), (1, 2), (True, True), 2_000_000, SALT),
    ):
        actions = validator.handle(bad)
        assert not txs(actions)
        assert logs(actions, "error"), bad
    # a good result afterwards still commits
    assert len(txs(validator.handle(scores_for((W0, W1))))) == 1


def test_a_failed_commit_is_not_resent_and_nothing_is_revealed() -> None:
    validator = evaluating_validator()
    validator.handle(scores_for((W0, W1)))
    actions = validator.handle(TxFailed(TxKind.COMMIT_MANIFEST, 1, "NotCommitteeMember"))
    assert logs(actions, "warning") == [
        "commitManifest for round 1 failed (NotCommitteeMember); not resent"
    ]
    actions = feed(validator, scores_for((W0, W1)), Restarted(), Tick(COMMIT_END), Tick(REVEAL_END))
    assert not txs(actions)


def test_a_restart_between_commit_and_reveal_reveals_exactly_once() -> None:
    validator = committed_validator()
    restored = from_dict(to_dict(validator))
    actions = feed(restored, Restarted(), Tick(COMMIT_END))
    assert [tx.kind for tx in txs(actions)] == [TxKind.REVEAL_MANIFEST]
    assert len(only(actions, PublishScores)) == 1
    again = from_dict(to_dict(restored))
    assert not txs(feed(again, Restarted(), Tick(COMMIT_END + 1), ManifestCommitted(1, ME)))


def test_a_restart_during_evaluation_asks_for_it_again() -> None:
    validator = evaluating_validator()
    restored = from_dict(to_dict(validator))
    actions = restored.handle(Restarted())
    assert only(actions, StartEvaluation) == [
        StartEvaluation(1, (W0, W1), (update(W0), update(W1)), VALIDATION_CID, INITIAL)
    ]


def test_a_failed_evaluation_job_is_asked_again() -> None:
    validator = evaluating_validator()
    actions = validator.handle(JobFailed(1, Job.EVALUATION, "CUDA error"))
    assert len(only(actions, StartEvaluation)) == 1


def test_an_early_end_of_training_shifts_the_later_deadlines() -> None:
    validator = selected_validator()
    feed(validator, submitted(W0, 1), announced(W0, 1), BlobFetched(update_cid(W0, 1)))
    ended = TRAINING_END - 60
    actions = validator.handle(PhaseChanged(1, Phase.COMMIT, ended))
    assert validator.view.phase == Phase.COMMIT
    assert (validator.view.commit_deadline, validator.view.reveal_deadline) == (
        COMMIT_END - 60,
        REVEAL_END - 60,
    )
    assert len(only(actions, StartEvaluation)) == 1  # everything committed is here
    feed(validator, scores_for((W0,)), ManifestCommitted(1, ME))
    actions = validator.handle(Tick(COMMIT_END - 60))
    assert validator.view.phase == Phase.REVEAL
    assert [tx.kind for tx in txs(actions)] == [TxKind.REVEAL_MANIFEST]


def test_every_validator_committed_so_the_reveal_starts_early() -> None:
    validator = committed_validator()
    actions = validator.handle(PhaseChanged(1, Phase.REVEAL, COMMIT_END - 30))
    assert validator.view.reveal_deadline == REVEAL_END - 30
    assert [tx.kind for tx in txs(actions)] == [TxKind.REVEAL_MANIFEST]


def test_a_committee_with_no_reveals_pays_nothing_and_the_model_carries_over() -> None:
    validator = committed_validator()
    feed(validator, Tick(COMMIT_END))  # our reveal is sent ...
    validator.handle(TxFailed(TxKind.REVEAL_MANIFEST, 1, "RevealMismatch"))  # ... and reverts
    actions = feed(validator, Tick(REVEAL_END), RoundFinalized(1, ()))
    assert validator.view.phase == Phase.FINALIZED
    assert "round 1: no update to average; model carries over" in logs(actions, "info")
    actions = feed(validator, opened(2), SortitionDrawn(2, PROOF), Tick(deadlines(2)[0]))
    assert only(actions, StartEvaluation) == [StartEvaluation(2, (), (), VALIDATION_CID, INITIAL)]


def test_a_sortition_result_after_the_commit_phase_is_ignored() -> None:
    validator = ValidatorMachine(ME, TASK)
    feed(validator, started(), opened(1), Tick(COMMIT_END))
    actions = validator.handle(SortitionDrawn(1, PROOF))
    assert not only(actions, PublishCommitteeProof)
    assert not txs(actions)


def test_after_finalization_the_validator_averages_what_it_already_fetched() -> None:
    validator = committed_validator()
    feed(validator, Tick(COMMIT_END), ManifestRevealed(1, ME))
    actions = validator.handle(RoundFinalized(1, (W1,)))
    assert not only(actions, Fetch)
    assert only(actions, Aggregate) == [aggregated(1, (update(W1),), VALIDATION_CID)]
    actions = feed(validator, opened(2), SortitionDrawn(2, PROOF), Tick(deadlines(2)[0]))
    base = GlobalModel(INITIAL_CID, 1, (update(W1),))
    assert only(actions, StartEvaluation) == [StartEvaluation(2, (), (), VALIDATION_CID, base)]


def test_an_announcement_for_the_next_round_is_kept_until_it_opens() -> None:
    validator = committed_validator()
    feed(validator, Tick(COMMIT_END), ManifestRevealed(1, ME), RoundFinalized(1, ()))
    # gossip outran our chain view: round 2's update arrives before round 2 opens
    assert validator.handle(announced(W2, 2)) == [Persist()]
    actions = feed(validator, opened(2), submitted(W2, 2), SortitionDrawn(2, PROOF))
    assert only(actions, Fetch) == [Fetch(update_cid(W2, 2), (W2,))]
    assert validator.handle(announced(W0, 7)) == []  # far future: dropped
