"""RequesterMachine: recruiting, starting, finalizing, the final model."""

from __future__ import annotations

from protocol.state import GlobalModel, Phase, Recruiting, RequesterMachine, TxKind, Update
from protocol.state.actions import (
    Aggregate,
    Fetch,
    PrepareTaskData,
    SaveFinalModel,
    SendTx,
    Stop,
    Withdraw,
)
from protocol.state.events import (
    BlobFetched,
    FinalModelSaved,
    ManifestCommitted,
    ManifestRevealed,
    MemberJoined,
    MemberLeft,
    PhaseChanged,
    RoundFinalized,
    TaskCreated,
    TaskDataReady,
    TaskTerminated,
    Tick,
    TxConfirmed,
    TxFailed,
)
from protocol.state.records import Role

from .helpers import (
    INITIAL_CID,
    REQUESTER,
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

TRAINING_END, COMMIT_END, REVEAL_END = deadlines(1)
RECRUITING = Recruiting(min_workers=2, min_validators=1, max_workers=3, max_validators=3)


def requester(**options: object) -> RequesterMachine:
    return RequesterMachine(REQUESTER, local_blobs=(INITIAL_CID,), **options)  # type: ignore[arg-type]


def running_requester(**options: object) -> RequesterMachine:
    """Task started, round 1 open."""
    machine = requester(**options)
    feed(machine, TaskCreated(TASK, REQUESTER), started(), opened(1))
    return machine


def test_the_requester_creates_recruits_and_starts_the_task() -> None:
    machine = requester(recruiting=RECRUITING)
    actions = machine.handle(Tick(10))
    assert txs(actions) == [SendTx(TxKind.CREATE_TASK, 0, ())]
    feed(machine, TxConfirmed(TxKind.CREATE_TASK, 0), TaskCreated(TASK, REQUESTER))
    assert machine.view.task == TASK

    actions = feed(machine, MemberJoined(WORKERS[0], Role.WORKER))
    actions += feed(machine, MemberJoined(VALIDATORS[0], Role.VALIDATOR))
    assert not only(actions, PrepareTaskData)  # one worker short of the minimum
    actions = machine.handle(MemberJoined(WORKERS[1], Role.WORKER))
    first = PrepareTaskData((WORKERS[0], WORKERS[1]), (VALIDATORS[0],))
    assert only(actions, PrepareTaskData) == [first]

    # W1 leaves while the validation set is being sealed for it: seal again
    actions = feed(
        machine,
        MemberLeft(WORKERS[1]),
        TaskDataReady(VALIDATION_CID, first.workers, first.validators),
    )
    assert not txs(actions) and not only(actions, PrepareTaskData)
    actions = machine.handle(MemberJoined(WORKERS[2], Role.WORKER))
    second = PrepareTaskData((WORKERS[0], WORKERS[2]), (VALIDATORS[0],))
    assert only(actions, PrepareTaskData) == [second]
    actions = machine.handle(TaskDataReady(VALIDATION_CID, second.workers, second.validators))
    assert txs(actions) == [SendTx(TxKind.START_TASK, 0, (VALIDATION_CID,))]

    actions = feed(machine, started(), opened(1))
    assert machine.view.phase == Phase.TRAINING
    assert not txs(actions) and not only(actions, Fetch)  # the requester trains nothing


def test_the_requester_waits_for_more_members_until_start_after() -> None:
    machine = requester(recruiting=Recruiting(2, 1, 3, 3, start_after=500))
    feed(machine, TaskCreated(TASK, REQUESTER), MemberJoined(VALIDATORS[0], Role.VALIDATOR))
    actions = feed(machine, *(MemberJoined(w, Role.WORKER) for w in WORKERS[:2]), Tick(499))
    assert not only(actions, PrepareTaskData)
    assert len(only(machine.handle(Tick(500)), PrepareTaskData)) == 1


def test_the_requester_cancels_when_recruiting_fails() -> None:
    machine = requester(recruiting=Recruiting(2, 1, 3, 3, recruit_deadline=900))
    feed(machine, Tick(1), TaskCreated(TASK, REQUESTER), MemberJoined(WORKERS[0], Role.WORKER))
    assert not txs(machine.handle(Tick(899)))
    assert txs(machine.handle(Tick(900))) == [SendTx(TxKind.CANCEL_TASK, 0, ())]
    actions = feed(machine, MemberJoined(WORKERS[1], Role.WORKER), Tick(901))
    assert not only(actions, PrepareTaskData) and not txs(actions)
    actions = machine.handle(TaskTerminated("cancelled"))
    assert machine.view.phase == Phase.TERMINATED
    assert not only(actions, SaveFinalModel)  # there never was a model


def test_the_requester_finalizes_once_the_reveal_is_over() -> None:
    machine = running_requester()
    feed(machine, Tick(TRAINING_END), ManifestCommitted(1, VALIDATORS[0]))
    assert not txs(machine.handle(Tick(REVEAL_END - 1)))
    actions = machine.handle(Tick(REVEAL_END))
    assert machine.view.phase == Phase.FINALIZING
    assert txs(actions) == [SendTx(TxKind.FINALIZE_ROUND, 1, (1,))]


def test_with_a_grace_period_the_requester_leaves_finalizing_to_others() -> None:
    machine = running_requester(finalize_after=30)
    feed(machine, ManifestCommitted(1, VALIDATORS[0]), Tick(COMMIT_END))
    actions = machine.handle(ManifestRevealed(1, VALIDATORS[0]))  # everyone revealed
    assert machine.view.phase == Phase.FINALIZING and not txs(actions)
    assert not txs(machine.handle(Tick(COMMIT_END + 29)))
    actions = feed(machine, RoundFinalized(1, ()), Tick(COMMIT_END + 30))
    assert not txs(actions)  # somebody else finalized it


def test_nobody_committed_so_the_round_is_finalized_right_after_the_commit_phase() -> None:
    machine = running_requester()
    actions = machine.handle(Tick(COMMIT_END))
    assert "round 1: reveal -> finalizing (nothing left to reveal)" in logs(actions, "info")
    assert txs(actions) == [SendTx(TxKind.FINALIZE_ROUND, 1, (1,))]


def test_a_failed_finalize_is_not_sent_again() -> None:
    machine = running_requester()
    machine.handle(PhaseChanged(1, Phase.FINALIZING, TRAINING_END))
    actions = machine.handle(TxFailed(TxKind.FINALIZE_ROUND, 1, "WrongPhase"))
    assert logs(actions, "warning") == ["finalizeRound for round 1 failed (WrongPhase); not resent"]
    assert not txs(feed(machine, Tick(REVEAL_END), Tick(REVEAL_END + 100)))


def test_the_final_model_is_saved_after_the_last_round_is_averaged() -> None:
    machine = running_requester()
    w0, w1 = WORKERS[:2]
    feed(machine, submitted(w0, 1), announced(w0, 1), submitted(w1, 1), announced(w1, 1))
    feed(machine, ManifestCommitted(1, VALIDATORS[0]), ManifestRevealed(1, VALIDATORS[0]))
    actions = feed(machine, RoundFinalized(1, (w0, w1)), TaskTerminated("round limit"))
    assert machine.view.phase == Phase.TERMINATED
    assert {f.cid for f in only(actions, Fetch)} == {update_cid(w0, 1), update_cid(w1, 1)}
    assert not only(actions, SaveFinalModel)
    actions = machine.handle(BlobFetched(update_cid(w0, 1)))
    assert not only(actions, Aggregate)
    actions = machine.handle(BlobFetched(update_cid(w1, 1)))
    updates = (Update(w0, update_cid(w0, 1), 100), Update(w1, update_cid(w1, 1), 100))
    assert only(actions, Aggregate) == [aggregated(1, updates)]
    assert only(actions, SaveFinalModel) == [SaveFinalModel(GlobalModel(INITIAL_CID, 1, updates))]
    assert not feed(machine, BlobFetched(update_cid(w1, 1)), TaskTerminated("round limit"))
    # the task is over for the requester once the model is on disk: settle up, then stop
    actions = machine.handle(FinalModelSaved())
    assert only(actions, Withdraw) == [Withdraw(reclaim_escrow=True)]
    assert only(actions, Stop) == [Stop("the task is over")]
    assert not feed(machine, FinalModelSaved(), Tick(REVEAL_END + 1000))


def test_a_validator_that_never_reveals_holds_the_round_until_the_reveal_deadline() -> None:
    machine = running_requester()
    v0, v1 = VALIDATORS[:2]
    feed(machine, ManifestCommitted(1, v0), ManifestCommitted(1, v1), Tick(COMMIT_END))
    actions = feed(machine, ManifestRevealed(1, v0), Tick(REVEAL_END - 1))
    assert machine.view.phase == Phase.REVEAL and not txs(actions)
    actions = machine.handle(Tick(REVEAL_END))
    assert "round 1: reveal -> finalizing (deadline passed)" in logs(actions, "info")
    assert txs(actions) == [SendTx(TxKind.FINALIZE_ROUND, 1, (1,))]
