"""How a worker or validator comes to a task, follows it, loads its members and leaves
it: every step an action the machine asks for, never a runtime decision."""

from __future__ import annotations

from protocol.state.actions import Action, FindTask, FollowTask, LoadMembers, Stop, Withdraw
from protocol.state.events import (
    Restarted,
    TaskFollowed,
    TasksOffered,
    TaskTerminated,
    Tick,
    TxConfirmed,
    TxFailed,
)
from protocol.state.persist import from_dict, to_dict
from protocol.state.records import Phase, Role, TaskOffer, TaskTerms, TxKind
from protocol.state.validator import ValidatorMachine
from protocol.state.worker import WorkerMachine

from .helpers import TASK, WORKERS, feed, logs, only, opened, started, txs

ME = WORKERS[0]
OTHER_TASK = bytes.fromhex("bb" * 20)
TERMS = TaskTerms("mnist_2nn", "median:1")
RESNET = TaskTerms("resnet50", "fedavg")
UNKNOWN_MODEL = "model 'resnet50' is not one this node knows; upgrade fl-node or pick another task"


def searching_worker() -> tuple[WorkerMachine, list[Action]]:
    worker = WorkerMachine(ME)
    return worker, list(worker.handle(Tick(10)))


def test_a_worker_without_a_task_asks_for_offers_and_joins_the_first_it_can_work_on() -> None:
    worker, actions = searching_worker()
    assert only(actions, FindTask) == [FindTask(again=False)]
    assert not feed(worker, Tick(11))  # one search at a time
    offers = (TaskOffer(OTHER_TASK, RESNET, problem=UNKNOWN_MODEL), TaskOffer(TASK, TERMS))
    actions = worker.handle(TasksOffered(offers))
    assert "skipping task 0x" + OTHER_TASK.hex() in logs(actions, "warning")[0]
    assert "model 'resnet50' is not one this node knows" in logs(actions, "warning")[0]
    assert [(t.kind, t.args) for t in txs(actions)] == [(TxKind.JOIN_TASK, (TASK, Role.WORKER))]
    actions = worker.handle(TxConfirmed(TxKind.JOIN_TASK, 0))
    assert worker.view.task == TASK and worker.view.terms == TERMS
    assert only(actions, FollowTask) == [FollowTask(TASK, TERMS)]
    assert not only(feed(worker, Tick(12)), FollowTask)  # asked once per process


def test_a_refused_join_tries_the_next_offer_then_searches_again_after_a_poll() -> None:
    worker, _ = searching_worker()
    offers = (TaskOffer(OTHER_TASK, TERMS), TaskOffer(TASK, TERMS))
    worker.handle(TasksOffered(offers))
    actions = worker.handle(TxFailed(TxKind.JOIN_TASK, 0, "TaskFull"))
    assert logs(actions, "info") == [f"task 0x{OTHER_TASK.hex()} did not take us: TaskFull"]
    assert [t.args[0] for t in txs(actions)] == [TASK]
    actions = worker.handle(TxFailed(TxKind.JOIN_TASK, 0, "WrongStatus"))
    assert "no open task on the registry takes us yet" in logs(actions, "info")[-1]
    assert only(actions, FindTask) == [FindTask(again=True)]
    assert worker.view.task is None


def test_a_task_we_are_a_member_of_is_resumed_without_a_deposit() -> None:
    worker, _ = searching_worker()
    actions = worker.handle(TasksOffered((TaskOffer(TASK, TERMS, member=True),), configured=True))
    assert not txs(actions)
    assert only(actions, FollowTask) == [FollowTask(TASK, TERMS)]


def test_a_configured_task_we_cannot_have_stops_the_node_with_the_reason() -> None:
    validator = ValidatorMachine(ME)
    validator.handle(Tick(1))
    offer = TaskOffer(TASK, RESNET, problem=UNKNOWN_MODEL)
    actions = validator.handle(TasksOffered((offer,), configured=True))
    (stop,) = only(actions, Stop)
    assert stop.failed and "upgrade fl-node or pick another task" in stop.reason
    assert not txs(actions)

    validator = ValidatorMachine(ME)
    validator.handle(Tick(1))
    validator.handle(TasksOffered((TaskOffer(TASK, TERMS),), configured=True))
    actions = validator.handle(TxFailed(TxKind.JOIN_TASK, 0, "TaskFull"))
    assert only(actions, Stop) == [Stop(f"task 0x{TASK.hex()} did not take us: TaskFull", True)]
    assert not feed(validator, Tick(2))  # stopped: asks for nothing more


def test_members_are_loaded_when_the_task_starts_and_a_restart_follows_again() -> None:
    worker = WorkerMachine(ME, TASK, terms=TERMS)
    assert only(worker.handle(Tick(1)), FollowTask) == [FollowTask(TASK, TERMS)]
    assert only(worker.handle(started()), LoadMembers) == [LoadMembers()]
    feed(worker, opened(1))
    resumed = from_dict(to_dict(worker))
    assert resumed.view.terms == TERMS
    assert only(resumed.handle(Restarted()), FollowTask) == [FollowTask(TASK, TERMS)]
    assert not resumed.handle(TaskFollowed(TASK))  # the node can work on it: go on
    assert not resumed.handle(TaskFollowed(OTHER_TASK, "unknown model"))  # not ours
    (stop,) = only(resumed.handle(TaskFollowed(TASK, "model 'x' is not trusted")), Stop)
    assert stop == Stop(f"task 0x{TASK.hex()}: model 'x' is not trusted", failed=True)


def test_a_terminated_task_is_settled_up_once_then_the_node_stops() -> None:
    worker = WorkerMachine(ME, TASK, terms=TERMS)
    feed(worker, started(), opened(1))
    actions = worker.handle(TaskTerminated("round limit"))
    assert worker.view.phase == Phase.TERMINATED
    assert only(actions, Withdraw) == [Withdraw(reclaim_escrow=False)]
    assert only(actions, Stop) == [Stop("the task is over")]
    assert not feed(worker, Tick(5000), TaskTerminated("again"))


def test_a_transaction_that_cannot_succeed_stops_the_node_at_once() -> None:
    worker = WorkerMachine(ME)
    worker.handle(Tick(1))
    worker.handle(TasksOffered((TaskOffer(TASK, TERMS),)))
    reason = "join: 0xabc holds 5 wei but the transaction needs 9 wei; fund the account"
    failed = TxFailed(TxKind.JOIN_TASK, 0, "InsufficientFunds", permanent=True, reason=reason)
    actions = worker.handle(failed)
    assert only(actions, Stop) == [Stop(f"join for round 0 cannot succeed: {reason}", True)]
    assert not txs(actions)  # no next offer: the account cannot pay for any
    assert not feed(worker, Tick(2))
