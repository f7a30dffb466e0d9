"""WorkerMachine, phase by phase."""

from __future__ import annotations

from dataclasses import replace

from protocol.manifest import update_commitment
from protocol.sortition import worker_selected
from protocol.state import GlobalModel, Phase, TxKind, Update, WorkerMachine
from protocol.state.actions import (
    Action,
    Aggregate,
    Fetch,
    Persist,
    PublishAnnouncement,
    PublishKeyRelease,
    SealKeyRelease,
    SendTx,
    StartTraining,
    Stop,
)
from protocol.state.events import (
    BlobFetched,
    FetchFailed,
    JobFailed,
    KeyReleaseReceived,
    KeyReleaseSealed,
    ManifestCommitted,
    ManifestRevealed,
    Restarted,
    RoundFinalized,
    RoundOpened,
    TaskTerminated,
    Tick,
    TrainingDone,
    TxConfirmed,
    TxFailed,
)
from protocol.state.persist import from_dict, to_dict
from protocol.state.phases import (
    KEY_RELEASE_GRACE,
    KEY_RELEASE_GRACE_MOVED_ON,
    MAX_FETCH_ATTEMPTS,
    REQUIRED_FETCH_MAX_PAUSE,
    REQUIRED_FETCH_PAUSE,
)
from protocol.state.records import Job
from protocol.state.worker import MAX_KEY_RELEASE_ATTEMPTS

from .helpers import (
    INITIAL_CID,
    REQUESTER,
    TASK,
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

ME, OTHER, THIRD = WORKERS
MY_CID = update_cid(ME, 1)


def training_worker() -> WorkerMachine:
    """A worker in round 1 that has been asked to train from the initial model."""
    worker = WorkerMachine(ME, TASK)
    feed(worker, started(), opened(1), BlobFetched(INITIAL_CID))
    assert worker.local.training_requested
    return worker


def test_a_round_from_the_initial_model_to_the_next_global_model() -> None:
    # without training ahead, which fetches the updates once training closes
    # (tests/state/test_pipelining.py)
    worker = WorkerMachine(ME, TASK, train_ahead=False)
    actions = feed(worker, started(), opened(1))
    assert only(actions, Fetch) == [Fetch(INITIAL_CID, (REQUESTER,))]
    assert not only(actions, StartTraining)  # the initial model is not here yet

    actions = worker.handle(BlobFetched(INITIAL_CID))
    assert only(actions, StartTraining) == [StartTraining(1, GlobalModel(INITIAL_CID))]

    actions = worker.handle(TrainingDone(1, MY_CID, 120))
    submit = SendTx(TxKind.SUBMIT_UPDATE, 1, (1, update_commitment(MY_CID, ME), 120))
    assert txs(actions) == [submit]
    assert actions.index(Persist()) < actions.index(submit)  # "sent" is on disk first
    assert not only(actions, PublishAnnouncement)  # not before the commitment is on chain

    actions = worker.handle(TxConfirmed(TxKind.SUBMIT_UPDATE, 1))
    assert only(actions, PublishAnnouncement) == [PublishAnnouncement(1, MY_CID, 120)]

    feed(worker, submitted(ME, 1, 120), submitted(OTHER, 1, 80), announced(OTHER, 1, 80))
    training_end, commit_end, _ = deadlines(1)
    actions = worker.handle(Tick(training_end))
    assert worker.view.phase == Phase.COMMIT
    assert "round 1: training -> commit (deadline passed)" in logs(actions, "info")
    # announced once more for validators that joined or restarted since
    assert only(actions, PublishAnnouncement) == [PublishAnnouncement(1, MY_CID, 120)]
    # training closed on chain: our update's key is sealed for every member, then released
    assert only(actions, SealKeyRelease) == [SealKeyRelease(1, MY_CID)]
    actions = worker.handle(KeyReleaseSealed(1, MY_CID, b"my sealed key"))
    assert only(actions, PublishKeyRelease) == [PublishKeyRelease(1, MY_CID, b"my sealed key")]
    other_cid = update_cid(OTHER, 1)
    feed(worker, KeyReleaseReceived(1, OTHER, other_cid, b"other's sealed key"))

    feed(worker, ManifestCommitted(1, VALIDATORS[0]), Tick(commit_end))
    assert worker.view.phase == Phase.REVEAL
    actions = worker.handle(ManifestRevealed(1, VALIDATORS[0]))
    assert worker.view.phase == Phase.FINALIZING  # everyone who committed revealed

    actions = worker.handle(RoundFinalized(1, (ME, OTHER)))
    assert only(actions, Fetch) == [Fetch(other_cid, (OTHER, VALIDATORS[0]))]
    assert not only(actions, Aggregate)
    actions = worker.handle(BlobFetched(other_cid))
    # our own update we open as its recipient; the other's with the key it released
    expected = (Update(ME, MY_CID, 120), Update(OTHER, other_cid, 80, b"other's sealed key"))
    assert only(actions, Aggregate) == [aggregated(1, expected)]

    actions = worker.handle(opened(2))
    assert only(actions, StartTraining) == [StartTraining(2, GlobalModel(INITIAL_CID, 1, expected))]
    assert not txs(actions)


def test_the_next_round_trains_only_after_the_last_one_is_averaged() -> None:
    worker = training_worker()
    feed(worker, TrainingDone(1, MY_CID, 100), TxConfirmed(TxKind.SUBMIT_UPDATE, 1))
    feed(worker, submitted(ME, 1), submitted(OTHER, 1), announced(OTHER, 1))
    feed(worker, Tick(deadlines(1)[0]))
    feed(worker, KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"key"))
    # finalizeRound settles round 1 and opens round 2 in one transaction
    actions = feed(worker, RoundFinalized(1, (ME, OTHER)), opened(2))
    assert not only(actions, StartTraining)
    actions = worker.handle(BlobFetched(update_cid(OTHER, 1)))
    aggregate, start = only(actions, Aggregate)[0], only(actions, StartTraining)[0]
    assert actions.index(aggregate) < actions.index(start)
    assert start.base == GlobalModel(INITIAL_CID, 1, aggregate.updates)


def test_training_that_finishes_after_the_deadline_is_not_submitted() -> None:
    worker = training_worker()
    worker.handle(Tick(deadlines(1)[0]))
    actions = worker.handle(TrainingDone(1, MY_CID, 100))
    assert not txs(actions)
    assert any("after its deadline" in text for text in logs(actions, "warning"))


def test_a_failed_submission_is_reported_and_never_sent_again() -> None:
    worker = training_worker()
    assert len(txs(worker.handle(TrainingDone(1, MY_CID, 100)))) == 1
    actions = worker.handle(TxFailed(TxKind.SUBMIT_UPDATE, 1, "WrongPhase"))
    assert logs(actions, "warning") == ["submitUpdate for round 1 failed (WrongPhase); not resent"]
    almost = deadlines(1)[0] - 1
    again = feed(worker, TrainingDone(1, MY_CID, 100), Tick(almost), Restarted(), Tick(almost))
    assert not txs(again)
    assert not only(again, PublishAnnouncement)


def test_a_restarted_worker_that_already_submitted_does_not_submit_again() -> None:
    worker = training_worker()
    worker.handle(TrainingDone(1, MY_CID, 100))  # sent; the process dies before the receipt
    restored = from_dict(to_dict(worker))
    actions = feed(restored, Restarted())
    actions += feed(restored, TrainingDone(1, MY_CID, 100), submitted(ME, 1))
    assert not txs(actions)
    assert not only(actions, StartTraining)
    # the chain shows it landed: the announcement goes out once
    assert only(actions, PublishAnnouncement) == [PublishAnnouncement(1, MY_CID, 100)]


def test_a_restart_during_training_asks_for_the_training_again() -> None:
    worker = training_worker()
    restored = from_dict(to_dict(worker))
    actions = restored.handle(Restarted())
    assert only(actions, StartTraining) == [StartTraining(1, GlobalModel(INITIAL_CID))]


def test_a_failed_training_job_is_retried_while_the_phase_lasts() -> None:
    worker = training_worker()
    actions = worker.handle(JobFailed(1, Job.TRAINING, "out of memory"))
    assert logs(actions, "error") == ["round 1: training failed: out of memory"]
    assert len(only(actions, StartTraining)) == 1


def test_events_of_a_past_round_are_ignored() -> None:
    worker = training_worker()
    feed(worker, RoundFinalized(1, ()), opened(2))
    for late in (
        TrainingDone(1, MY_CID, 100),
        TxConfirmed(TxKind.SUBMIT_UPDATE, 1),
        submitted(OTHER, 1),
        announced(OTHER, 1),
        RoundFinalized(1, (OTHER,)),
        opened(1),
    ):
        assert worker.handle(late) == [], late
    assert worker.view.round == 2


def test_a_worker_not_in_the_task_stays_idle() -> None:
    worker = WorkerMachine(ME, TASK)
    actions = feed(worker, started(workers=(OTHER, THIRD)), opened(1), BlobFetched(INITIAL_CID))
    assert not only(actions, Fetch) and not only(actions, StartTraining)
    assert not txs(feed(worker, TrainingDone(1, MY_CID, 100)))


def test_a_round_without_accepted_updates_carries_the_model_over() -> None:
    worker = training_worker()
    feed(worker, TrainingDone(1, MY_CID, 100), submitted(ME, 1))
    actions = worker.handle(RoundFinalized(1, ()))
    assert not only(actions, Aggregate)
    assert "round 1: no update to average; model carries over" in logs(actions, "info")
    actions = worker.handle(opened(2))
    assert only(actions, StartTraining) == [StartTraining(2, GlobalModel(INITIAL_CID))]


def test_an_accepted_update_nobody_announced_is_left_out_of_the_average() -> None:
    worker = training_worker()
    feed(worker, TrainingDone(1, MY_CID, 100), submitted(ME, 1), submitted(OTHER, 1))
    actions = worker.handle(RoundFinalized(1, (ME, OTHER)))
    assert any("never announced" in text for text in logs(actions, "warning"))
    assert only(actions, Aggregate) == [aggregated(1, (Update(ME, MY_CID, 100),))]


def test_an_accepted_blob_that_cannot_be_fetched_is_retried_then_left_out() -> None:
    worker = training_worker()
    feed(worker, TrainingDone(1, MY_CID, 100), submitted(ME, 1))
    feed(worker, submitted(OTHER, 1), announced(OTHER, 1))
    other_cid = update_cid(OTHER, 1)
    fetches = only(worker.handle(RoundFinalized(1, (ME, OTHER))), Fetch)
    actions: list[Action] = []
    for _ in range(MAX_FETCH_ATTEMPTS):
        actions = worker.handle(FetchFailed(other_cid, "no provider"))
        fetches += only(actions, Fetch)
    assert [f.cid for f in fetches] == [other_cid] * MAX_FETCH_ATTEMPTS
    assert only(actions, Aggregate) == [aggregated(1, (Update(ME, MY_CID, 100),))]


def finalized_worker(release_other: bool) -> WorkerMachine:
    """A worker whose round 1 finalized with OTHER's update accepted and fetched, and OTHER's
    key released to it or not."""
    worker = training_worker()
    feed(worker, TrainingDone(1, MY_CID, 100), TxConfirmed(TxKind.SUBMIT_UPDATE, 1))
    feed(worker, submitted(ME, 1), submitted(OTHER, 1), announced(OTHER, 1))
    feed(worker, Tick(deadlines(1)[0]))
    if release_other:
        feed(worker, KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"key"))
    return worker


def test_no_key_is_released_while_training_is_open() -> None:
    worker = training_worker()
    actions = feed(worker, TrainingDone(1, MY_CID, 100), TxConfirmed(TxKind.SUBMIT_UPDATE, 1))
    actions += feed(worker, submitted(ME, 1), submitted(OTHER, 1), announced(OTHER, 1))
    assert not only(actions, SealKeyRelease) and not only(actions, PublishKeyRelease)
    # a release from another worker while training is open is not recorded either
    worker.handle(KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"key"))
    assert not worker.view.releases
    actions = worker.handle(Tick(deadlines(1)[0]))
    assert only(actions, SealKeyRelease) == [SealKeyRelease(1, MY_CID)]


def test_a_worker_whose_update_is_not_on_chain_releases_nothing() -> None:
    worker = training_worker()
    feed(worker, TrainingDone(1, MY_CID, 100))  # submitUpdate sent, never confirmed
    actions = worker.handle(Tick(deadlines(1)[0]))
    assert not only(actions, SealKeyRelease)


def test_the_key_release_is_published_once_per_later_phase_and_survives_a_restart() -> None:
    worker = finalized_worker(release_other=False)
    worker.handle(KeyReleaseSealed(1, MY_CID, b"sealed"))
    restored = from_dict(to_dict(worker))
    assert restored.local.sealed_key == b"sealed"
    actions = feed(restored, Restarted(), ManifestCommitted(1, VALIDATORS[0]))
    actions += restored.handle(Tick(deadlines(1)[1]))
    releases = only(actions, PublishKeyRelease)
    assert releases == [PublishKeyRelease(1, MY_CID, b"sealed")]  # in the reveal phase
    assert not only(restored.handle(Tick(deadlines(1)[1] + 1)), PublishKeyRelease)


def test_a_failed_key_release_job_is_asked_for_again() -> None:
    worker = finalized_worker(release_other=False)
    assert worker.local.key_release_requested
    actions = worker.handle(JobFailed(1, Job.KEY_RELEASE, "blob gone"))
    assert only(actions, SealKeyRelease) == [SealKeyRelease(1, MY_CID)]
    actions = worker.handle(JobFailed(1, Job.KEY_RELEASE, "blob gone"))
    actions += worker.handle(JobFailed(1, Job.KEY_RELEASE, "not addressed to us"))
    assert len(only(actions, SealKeyRelease)) == 1  # three attempts, then it gives up
    assert any("giving up releasing" in text for text in logs(actions, "error"))
    assert not only(worker.handle(Tick(deadlines(1)[1])), SealKeyRelease)


def test_a_task_that_ends_while_our_key_is_sealed_still_gets_the_release() -> None:
    """A last round's phases can all end early, so the task may terminate before the job
    sealing our key answers: the release is still published, and only then do we stop
    (stopping first left our update out of every other member's last average)."""
    worker = finalized_worker(release_other=True)
    assert worker.local.key_release_requested and worker.local.sealed_key is None
    actions = worker.handle(TaskTerminated("round limit"))
    assert worker.view.phase == Phase.TERMINATED and not only(actions, Stop)
    actions = worker.handle(KeyReleaseSealed(1, MY_CID, b"sealed"))
    release, stop = only(actions, PublishKeyRelease), only(actions, Stop)
    assert release == [PublishKeyRelease(1, MY_CID, b"sealed")] and stop
    assert actions.index(release[0]) < actions.index(stop[0])
    # a key that cannot be sealed is given up after the attempts, then we stop
    failing = finalized_worker(release_other=True)
    feed(failing, TaskTerminated("round limit"))
    actions = feed(failing, *[JobFailed(1, Job.KEY_RELEASE, "blob gone")] * MAX_KEY_RELEASE_ATTEMPTS)
    assert len(only(actions, SealKeyRelease)) == MAX_KEY_RELEASE_ATTEMPTS - 1 and only(actions, Stop)


def test_a_key_sealed_after_the_next_round_opened_is_still_released() -> None:
    """A lagging chain view can see round 1 end and round 2 open in one batch, before the
    job sealing our round-1 key answers: the key is released for round 1 as it comes."""
    worker = finalized_worker(release_other=True)
    feed(worker, RoundFinalized(1, (ME, OTHER)), opened(2))
    assert worker.view.round == 2 and worker.view.phase == Phase.TRAINING
    actions = worker.handle(KeyReleaseSealed(1, MY_CID, b"sealed"))
    assert only(actions, PublishKeyRelease) == [PublishKeyRelease(1, MY_CID, b"sealed")]


def test_an_accepted_update_without_a_key_release_waits_then_is_left_out() -> None:
    worker = finalized_worker(release_other=False)
    actions = feed(worker, RoundFinalized(1, (ME, OTHER)), BlobFetched(update_cid(OTHER, 1)))
    assert not only(actions, Aggregate)  # the other's key may still come
    finalized_at = worker.view.aggregation.since if worker.view.aggregation else -1
    actions = worker.handle(Tick(finalized_at + KEY_RELEASE_GRACE))
    assert only(actions, Aggregate) == [aggregated(1, (Update(ME, MY_CID, 100),))]
    assert any("no key release" in text for text in logs(actions, "warning"))


def test_a_key_release_after_finalization_completes_the_average() -> None:
    worker = finalized_worker(release_other=False)
    feed(worker, RoundFinalized(1, (ME, OTHER)), BlobFetched(update_cid(OTHER, 1)))
    actions = worker.handle(KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"late"))
    expected = (Update(ME, MY_CID, 100), Update(OTHER, update_cid(OTHER, 1), 100, b"late"))
    assert only(actions, Aggregate) == [aggregated(1, expected)]


def next_round_before_the_release() -> WorkerMachine:
    """Round 1 finalized with OTHER's update accepted and fetched but its key not released
    yet, and round 2 opened (every phase of round 1 ended early)."""
    worker = finalized_worker(release_other=False)
    feed(worker, RoundFinalized(1, (ME, OTHER)), BlobFetched(update_cid(OTHER, 1)))
    actions = worker.handle(opened(2))
    assert not only(actions, Aggregate) and worker.view.aggregation is not None
    return worker


def test_a_release_that_comes_after_the_next_round_opened_completes_the_average() -> None:
    worker = next_round_before_the_release()
    actions = worker.handle(KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"late"))
    expected = (Update(ME, MY_CID, 100), Update(OTHER, update_cid(OTHER, 1), 100, b"late"))
    assert only(actions, Aggregate) == [aggregated(1, expected)]
    # it is not kept as a release of round 2, whose training is open: neither that one nor
    # a round-2 release opens anything before round 2's training closes
    assert not worker.view.releases
    feed(worker, KeyReleaseReceived(2, OTHER, update_cid(OTHER, 2), b"early"))
    assert not worker.view.releases


def test_once_the_next_round_opened_a_missing_release_is_waited_for_briefly() -> None:
    worker = next_round_before_the_release()
    assert worker.view.aggregation is not None
    since = worker.view.aggregation.since
    assert not only(worker.handle(Tick(since + KEY_RELEASE_GRACE_MOVED_ON - 1)), Aggregate)
    actions = worker.handle(Tick(since + KEY_RELEASE_GRACE_MOVED_ON))
    assert only(actions, Aggregate) == [aggregated(1, (Update(ME, MY_CID, 100),))]
    assert any("no key release" in text for text in logs(actions, "warning"))
    assert KEY_RELEASE_GRACE_MOVED_ON < KEY_RELEASE_GRACE


def test_a_release_for_another_cid_than_the_accepted_one_opens_nothing() -> None:
    worker = finalized_worker(release_other=False)
    feed(worker, KeyReleaseReceived(1, OTHER, update_cid(THIRD, 1), b"wrong"))
    feed(worker, RoundFinalized(1, (ME, OTHER)), BlobFetched(update_cid(OTHER, 1)))
    assert worker.view.aggregation is not None
    assert worker.view.aggregation.updates[1].key_release is None


def test_key_releases_survive_a_restart_as_bytes() -> None:
    worker = finalized_worker(release_other=True)
    restored = from_dict(to_dict(worker))
    assert restored.view.releases == {OTHER: (update_cid(OTHER, 1), b"key")}
    actions = feed(restored, RoundFinalized(1, (ME, OTHER)), BlobFetched(update_cid(OTHER, 1)))
    (aggregate,) = only(actions, Aggregate)
    assert aggregate.updates[1].key_release == b"key"


def test_training_that_keeps_failing_is_given_up_for_the_round() -> None:
    worker = training_worker()
    actions = worker.handle(JobFailed(1, Job.TRAINING, "bad base"))
    assert only(actions, StartTraining)
    actions = worker.handle(JobFailed(1, Job.TRAINING, "bad base"))
    assert only(actions, StartTraining)
    actions = worker.handle(JobFailed(1, Job.TRAINING, "bad base"))
    assert not only(actions, StartTraining)
    assert any("giving up training" in text for text in logs(actions, "error"))


def _seed_drawing(me_drawn: bool, per_round: int = 1) -> bytes:
    """A round seed under which the draw of `per_round` of the 3 workers takes ME or not."""
    for i in range(256):
        seed = bytes([i]) * 32
        if worker_selected(seed, ME, per_round, len(WORKERS)) is me_drawn:
            return seed
    raise AssertionError("no such seed among 256")


def test_a_worker_left_out_of_the_rounds_draw_sits_it_out_and_trains_in_the_next() -> None:
    worker = WorkerMachine(ME, TASK)
    left_out, drawn = _seed_drawing(False), _seed_drawing(True)
    feed(worker, replace(started(), workers_per_round=1), BlobFetched(INITIAL_CID))
    actions = feed(worker, RoundOpened(1, *deadlines(1), left_out), Tick(deadlines(1)[0] - 50))
    assert not only(actions, StartTraining)
    assert logs(actions, "info").count("round 1: not drawn to train; sitting this round out") == 1
    # a training result for a round we were not drawn in is never submitted (it would revert)
    assert not txs(feed(worker, TrainingDone(1, MY_CID, 100)))
    assert worker.local.update is None
    # the others' round goes on; we average what it accepted like any member
    feed(worker, submitted(OTHER, 1), announced(OTHER, 1), Tick(deadlines(1)[0]))
    assert not only(worker.handle(Tick(deadlines(1)[1])), SealKeyRelease)
    feed(worker, RoundFinalized(1, ()))
    actions = worker.handle(RoundOpened(2, *deadlines(2), drawn))
    # under sampling the global model is fetched once a round draws us
    assert only(actions, Fetch) == [Fetch(INITIAL_CID, (REQUESTER,))]
    actions = worker.handle(BlobFetched(INITIAL_CID))
    assert only(actions, StartTraining) == [StartTraining(2, GlobalModel(INITIAL_CID))]
    actions = worker.handle(TrainingDone(2, update_cid(ME, 2), 100))
    assert [tx.kind for tx in txs(actions)] == [TxKind.SUBMIT_UPDATE]


def test_the_draw_is_the_sortition_rule_on_the_rounds_seed() -> None:
    # every worker of the task computes the same set, and it changes with the seed
    seeds = [bytes([i]) * 32 for i in range(40)]
    for seed in seeds:
        drawn = []
        for me in WORKERS:
            machine = WorkerMachine(me, TASK)
            feed(machine, replace(started(), workers_per_round=2), BlobFetched(INITIAL_CID))
            actions = feed(machine, RoundOpened(1, *deadlines(1), seed), BlobFetched(INITIAL_CID))
            if only(actions, StartTraining):
                drawn.append(me)
        assert drawn == [w for w in WORKERS if worker_selected(seed, w, 2, len(WORKERS))]
    sizes = {sum(worker_selected(s, w, 2, 3) for w in WORKERS) for s in seeds}
    assert len(sizes) > 1  # the number drawn varies around 2


def test_without_workers_per_round_every_worker_trains_every_round() -> None:
    for seed in (_seed_drawing(False), _seed_drawing(True)):
        worker = WorkerMachine(ME, TASK)
        feed(worker, started(), BlobFetched(INITIAL_CID))
        actions = worker.handle(RoundOpened(1, *deadlines(1), seed))
        assert only(actions, StartTraining)


def test_workers_per_round_survives_a_restart() -> None:
    worker = WorkerMachine(ME, TASK)
    feed(worker, replace(started(), workers_per_round=1), BlobFetched(INITIAL_CID))
    feed(worker, RoundOpened(1, *deadlines(1), _seed_drawing(False)))
    restored = from_dict(to_dict(worker))
    assert restored.view.workers_per_round == 1
    assert not only(restored.handle(Restarted()), StartTraining)


def test_an_initial_model_that_fails_is_fetched_again_after_doubling_pauses() -> None:
    worker = WorkerMachine(ME, TASK)
    assert only(feed(worker, started(), opened(1)), Fetch) == [Fetch(INITIAL_CID, (REQUESTER,))]
    start = worker.now
    pauses = []
    for failure in range(1, MAX_FETCH_ATTEMPTS + 3):  # never given up: it is needed to train
        actions = worker.handle(FetchFailed(INITIAL_CID, "requester busy"))
        assert not only(actions, Fetch)
        assert any(f"failed {failure} times" in text for text in logs(actions, "warning"))
        again_at = worker.session.fetch_again_at[INITIAL_CID]
        pauses.append(again_at - worker.now)
        assert not only(worker.handle(Tick(again_at - 1)), Fetch)  # still pausing
        assert only(worker.handle(Tick(again_at)), Fetch) == [Fetch(INITIAL_CID, (REQUESTER,))]
    assert pauses == [
        min(REQUIRED_FETCH_PAUSE * 2**n, REQUIRED_FETCH_MAX_PAUSE) for n in range(len(pauses))
    ]
    assert worker.now > start
    assert only(worker.handle(BlobFetched(INITIAL_CID)), StartTraining)

