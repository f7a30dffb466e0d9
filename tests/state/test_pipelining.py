"""A worker trains the next round's update while the committee judges this round's
(WorkerMachine's TrainAhead): used when the round accepts what it was trained from,
dropped otherwise, and safe across a restart."""

from __future__ import annotations

from dataclasses import replace

from protocol.manifest import update_commitment
from protocol.sortition import worker_selected
from protocol.state import GlobalModel, Phase, TxKind, Update, WorkerMachine
from protocol.state.actions import (
    Aggregate,
    CancelTrainingAhead,
    Fetch,
    SendTx,
    StartTraining,
    TrainAhead,
)
from protocol.state.events import (
    BlobFetched,
    KeyReleaseReceived,
    KeyReleaseSealed,
    Restarted,
    RoundFinalized,
    RoundOpened,
    Tick,
    TrainedAhead,
    TrainingDone,
    TxConfirmed,
)
from protocol.state.persist import from_dict, to_dict
from protocol.state.worker import same_updates

from .helpers import (
    INITIAL_CID,
    TASK,
    WORKERS,
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
OTHER_CID = update_cid(OTHER, 1)
AHEAD_CID = update_cid(ME, 2)
MINE = Update(ME, MY_CID, 100)
OTHERS = Update(OTHER, OTHER_CID, 80, b"other's key")
EXPECTED = GlobalModel(INITIAL_CID, 1, (MINE, OTHERS))


def closed_round(
    worker: WorkerMachine | None = None, release: bool = True, seed: bytes | None = None
) -> WorkerMachine:
    """A worker whose round 1 (opened with `seed`) closed with its own update and OTHER's
    on chain, OTHER's blob fetched; with `release`, OTHER's key release came in."""
    worker = worker or WorkerMachine(ME, TASK)
    round_one = opened(1) if seed is None else RoundOpened(1, *deadlines(1), seed)
    feed(worker, started(), round_one, BlobFetched(INITIAL_CID))
    feed(worker, TrainingDone(1, MY_CID, 100), TxConfirmed(TxKind.SUBMIT_UPDATE, 1))
    feed(worker, submitted(ME, 1, 100), submitted(OTHER, 1, 80), announced(OTHER, 1, 80))
    actions = feed(worker, Tick(deadlines(1)[0]), KeyReleaseSealed(1, MY_CID, b"my key"))
    assert worker.view.phase == Phase.COMMIT
    if worker._may_train_ahead():  # every submitted update is fetched to train ahead from
        assert Fetch(OTHER_CID, (OTHER,)) in only(actions, Fetch)
    feed(worker, BlobFetched(OTHER_CID))
    if release:
        feed(worker, KeyReleaseReceived(1, OTHER, OTHER_CID, b"other's key"))
    return worker


def finalized(worker: WorkerMachine, accepted: tuple[bytes, ...], seed: bytes | None = None) -> list:
    """Round 1 finalizes accepting `accepted` and round 2 opens (one transaction)."""
    round_two = opened(2) if seed is None else RoundOpened(2, *deadlines(2), seed)
    return feed(worker, RoundFinalized(1, accepted), round_two)


def submission(cid: str, n_samples: int = 100) -> SendTx:
    return SendTx(TxKind.SUBMIT_UPDATE, 2, (2, update_commitment(cid, ME), n_samples))


def test_training_ahead_starts_once_every_submitted_update_can_be_opened() -> None:
    worker = closed_round(release=False)
    assert worker.local.ahead is None  # OTHER's update cannot be opened yet
    actions = worker.handle(KeyReleaseReceived(1, OTHER, OTHER_CID, b"other's key"))
    assert only(actions, TrainAhead) == [TrainAhead(2, EXPECTED)]
    assert "round 1: training round 2's update ahead" in logs(actions, "info")[0]
    # asked for once, whatever else happens in the round
    assert not only(feed(worker, Tick(deadlines(1)[1]), Tick(deadlines(1)[1] + 5)), TrainAhead)


def test_the_expected_base_is_the_global_model_the_round_then_makes() -> None:
    worker = closed_round()
    assert worker.local.ahead is not None
    actions = feed(worker, RoundFinalized(1, (ME, OTHER)))
    (aggregate,) = only(actions, Aggregate)
    # same updates, same order, same key releases: the same average, bit for bit
    assert aggregate.model == worker.local.ahead.base == EXPECTED
    assert same_updates(aggregate.model, EXPECTED)


def test_a_hit_submits_the_update_trained_ahead_as_the_round_opens() -> None:
    worker = closed_round()
    feed(worker, TrainedAhead(2, EXPECTED, AHEAD_CID, 100))
    actions = finalized(worker, (ME, OTHER))
    assert not only(actions, StartTraining)
    assert txs(actions) == [submission(AHEAD_CID)]
    assert worker.local.ahead is None
    assert any("update trained ahead is from this round's global model" in t for t in logs(actions))


def test_a_hit_while_the_job_still_runs_submits_when_it_ends() -> None:
    worker = closed_round()
    actions = finalized(worker, (ME, OTHER))
    assert not only(actions, StartTraining)  # the job under way trains from this model
    assert not txs(actions) and not only(actions, CancelTrainingAhead)
    actions = worker.handle(TrainedAhead(2, EXPECTED, AHEAD_CID, 100))
    assert txs(actions) == [submission(AHEAD_CID)]


def test_a_miss_cancels_the_job_and_trains_from_the_true_base() -> None:
    worker = closed_round()
    actions = finalized(worker, (ME,))  # OTHER's update was rejected
    assert only(actions, CancelTrainingAhead) == [CancelTrainingAhead(2)]
    true_base = GlobalModel(INITIAL_CID, 1, (MINE,))
    assert only(actions, StartTraining) == [StartTraining(2, true_base)]
    # the cancelled job's answer changes nothing
    assert not txs(worker.handle(TrainedAhead(2, EXPECTED, None, problem="cancelled")))
    assert not txs(worker.handle(TrainedAhead(2, EXPECTED, AHEAD_CID, 100)))
    actions = worker.handle(TrainingDone(2, update_cid(ME, 22), 100))
    assert txs(actions) == [submission(update_cid(ME, 22))]


def test_a_finished_update_on_a_missed_base_is_dropped_without_a_cancel() -> None:
    worker = closed_round()
    feed(worker, TrainedAhead(2, EXPECTED, AHEAD_CID, 100))
    actions = finalized(worker, (OTHER,))
    assert not only(actions, CancelTrainingAhead)
    assert only(actions, StartTraining) == [StartTraining(2, GlobalModel(INITIAL_CID, 1, (OTHERS,)))]


def _seed(me_drawn: bool) -> bytes:
    for i in range(256):
        seed = bytes([i]) * 32
        if worker_selected(seed, ME, 1, len(WORKERS)) is me_drawn:
            return seed
    raise AssertionError("no such seed among 256")


def test_under_sampling_nobody_trains_ahead() -> None:
    # the next round's draw is unknown until it opens: most such work would be wasted
    worker = WorkerMachine(ME, TASK)
    feed(worker, replace(started(), workers_per_round=1))
    worker = closed_round(worker, seed=_seed(True))  # `started` again: ignored
    assert worker.view.workers_per_round == 1
    assert worker.local.ahead is None
    actions = finalized(worker, (ME, OTHER), seed=_seed(False))
    assert not only(actions, TrainAhead) and not txs(actions) and not only(actions, StartTraining)
    assert any("not drawn to train" in t for t in logs(actions))


def test_a_restart_while_training_ahead_asks_for_the_job_again() -> None:
    worker = closed_round()
    restored = from_dict(to_dict(worker))
    assert restored.local.ahead == worker.local.ahead  # persisted
    actions = restored.handle(Restarted())
    assert only(actions, TrainAhead) == [TrainAhead(2, EXPECTED)]
    # the old process's job is gone; an answer from it is no answer to the new one
    feed(restored, TrainedAhead(2, EXPECTED, AHEAD_CID, 100))
    assert txs(finalized(restored, (ME, OTHER))) == [submission(AHEAD_CID)]


def test_a_restart_after_the_job_finished_still_submits_its_update() -> None:
    worker = closed_round()
    feed(worker, TrainedAhead(2, EXPECTED, AHEAD_CID, 100))
    restored = from_dict(to_dict(worker))
    assert not only(restored.handle(Restarted()), TrainAhead)
    assert txs(finalized(restored, (ME, OTHER))) == [submission(AHEAD_CID)]


def test_a_restart_while_waiting_for_the_job_in_the_next_round_trains_afresh() -> None:
    worker = closed_round()
    finalized(worker, (ME, OTHER))
    assert worker.local.training_requested  # waiting for the job trained ahead
    restored = from_dict(to_dict(worker))
    actions = restored.handle(Restarted())
    assert only(actions, StartTraining) == [StartTraining(2, EXPECTED)]


def test_a_failed_job_leaves_the_round_to_ordinary_training() -> None:
    worker = closed_round()
    actions = worker.handle(TrainedAhead(2, EXPECTED, None, problem="out of memory"))
    assert any("out of memory" in t for t in logs(actions, "warning"))
    assert not only(feed(worker, Tick(deadlines(1)[1])), TrainAhead)  # not retried
    actions = finalized(worker, (ME, OTHER))
    assert only(actions, StartTraining) == [StartTraining(2, EXPECTED)]


def test_an_update_ready_only_after_training_closed_is_never_submitted() -> None:
    worker = closed_round()
    finalized(worker, (ME, OTHER))
    actions = worker.handle(Tick(deadlines(2)[0]))  # round 2's training closes
    assert only(actions, CancelTrainingAhead) == [CancelTrainingAhead(2)]
    assert not txs(worker.handle(TrainedAhead(2, EXPECTED, AHEAD_CID, 100)))


def test_no_training_ahead_in_the_last_round_or_when_turned_off() -> None:
    last = WorkerMachine(ME, TASK)
    feed(last, replace(started(), rounds=1))
    assert closed_round(last).local.ahead is None
    off = WorkerMachine(ME, TASK, train_ahead=False)
    feed(off, started(), opened(1), BlobFetched(INITIAL_CID), TrainingDone(1, MY_CID, 100))
    feed(off, TxConfirmed(TxKind.SUBMIT_UPDATE, 1), submitted(ME, 1), submitted(OTHER, 1, 80))
    feed(off, announced(OTHER, 1, 80), Tick(deadlines(1)[0]), BlobFetched(OTHER_CID))
    feed(off, KeyReleaseReceived(1, OTHER, OTHER_CID, b"other's key"))
    assert off.local.ahead is None


def test_a_job_still_running_when_the_task_ends_is_cancelled() -> None:
    from protocol.state.events import TaskTerminated

    worker = closed_round()
    actions = worker.handle(TaskTerminated("done"))
    assert CancelTrainingAhead(2) in actions
