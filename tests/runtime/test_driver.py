"""The round driver pumps a real state machine into fake effects: every action reaches the
effect group it touches, every answer goes back into the machine, and a driver built from
the persisted state carries on where the last one stopped. No sockets, no chain."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.config import BehaviourConfig, load_config
from node.runtime.driver import (
    TRAIN_AHEAD_ENV,
    Driver,
    NodeStatus,
    NodeStopped,
    machine_options,
    new_machine,
)
from node.runtime.effects import Deliver
from protocol.state import events as ev
from protocol.state import persist
from protocol.state.actions import (
    Action,
    Aggregate,
    Fetch,
    FindTask,
    PublishAnnouncement,
    PublishKeyRelease,
    SealKeyRelease,
    SendTx,
    StartTraining,
    Withdraw,
)
from protocol.state.records import BlobKind, Role, TaskOffer, TaskTerms, TxKind
from protocol.state.worker import WorkerMachine
from tests.state.helpers import (
    INITIAL_CID,
    TASK,
    WORKERS,
    announced,
    deadlines,
    opened,
    started,
    submitted,
    update_cid,
)

ME, OTHER, _ = WORKERS
TERMS = TaskTerms("mnist_2nn", "median:1")
LOG = logging.LoggerAdapter(logging.getLogger("tests.runtime"), {})


class FakeChain:
    """ChainEffects: scripted chain batches, every transaction confirmed."""

    def __init__(self, offer: TaskOffer | None = None, refuse: str | None = None) -> None:
        self.offer = offer or TaskOffer(TASK, TERMS)
        self.refuse = refuse  # every transaction fails for good, for this reason
        self.batches_send, self.batches = trio.open_memory_channel[list[ev.Event]](100)
        self.commits = 0
        self.followed: list[bytes] = []
        self.searches: list[FindTask] = []
        self.sent: list[SendTx] = []
        self.withdrawals: list[Withdraw] = []

    async def poll(self) -> list[ev.Event] | None:
        return await self.batches.receive()

    async def commit(self) -> None:
        self.commits += 1

    async def follow(self, task: bytes) -> None:
        self.followed.append(task)

    async def find_task(self, action: FindTask) -> ev.Event:
        self.searches.append(action)
        return ev.TasksOffered((self.offer,), configured=True)

    async def send(self, tx: SendTx) -> ev.Event | None:
        self.sent.append(tx)
        if self.refuse is not None:
            return ev.TxFailed(tx.kind, tx.round, "InsufficientFunds", True, self.refuse)
        return ev.TxConfirmed(tx.kind, tx.round)

    async def withdraw(self, action: Withdraw) -> None:
        self.withdrawals.append(action)


class FakeNetwork:
    """NetworkEffects: records what it was asked; every fetch succeeds."""

    def __init__(self) -> None:
        self.followed: list[tuple[bytes, TaskTerms]] = []
        self.deliver: Deliver | None = None
        self.training_over: Callable[[int], bool] | None = None
        self.member_loads = 0
        self.published: list[Action] = []
        self.fetched: list[Fetch] = []

    def follow(self, task: bytes, terms: TaskTerms) -> None:
        self.followed.append((task, terms))

    async def gossip(
        self,
        current_round: Callable[[], int],
        deliver: Deliver,
        training_over: Callable[[int], bool] | None = None,
    ) -> None:
        self.deliver = deliver
        self.training_over = training_over
        await trio.sleep_forever()

    async def load_members(self) -> None:
        self.member_loads += 1

    async def publish(self, action: Any) -> None:
        self.published.append(action)

    async def fetch(self, action: Fetch) -> ev.Event:
        self.fetched.append(action)
        return ev.BlobFetched(action.cid)


class FakeJobs:
    """JobEffects: training answers at once with the update of `update_cid(ME, round)`,
    unless `hold_training` (a job that never finishes: the process dies first)."""

    def __init__(
        self,
        hold_training: bool = False,
        problem: str | None = None,
        aggregating: trio.Event | None = None,
        aggregate_aside: bool = False,
    ) -> None:
        self.hold_training = hold_training
        self.problem = problem  # why the node cannot do this task's work
        self.aggregating = aggregating  # an Aggregate ends once this is set
        self.aggregate_aside = aggregate_aside  # as a validator's or the requester's does
        self.followed: list[tuple[bytes, TaskTerms]] = []
        self.ran: list[Action] = []
        self.aggregated: list[int] = []  # rounds whose Aggregate ended
        self.stopped = False

    async def follow(self, task: bytes, terms: TaskTerms) -> str | None:
        self.followed.append((task, terms))
        return self.problem

    def aside(self, action: Action) -> bool:
        return self.aggregate_aside and isinstance(action, Aggregate)

    def stop(self) -> None:
        self.stopped = True

    async def run(self, action: Action) -> ev.Event | None:
        self.ran.append(action)
        if isinstance(action, StartTraining):
            if self.hold_training:
                await trio.sleep_forever()
            return ev.TrainingDone(action.round, update_cid(ME, action.round), 100)
        if isinstance(action, SealKeyRelease):
            return ev.KeyReleaseSealed(action.round, action.cid, b"our sealed key")
        if isinstance(action, Aggregate):
            if self.aggregating is not None:
                await self.aggregating.wait()
            self.aggregated.append(action.round)
        return None


class MemoryState:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    async def save(self, state: dict[str, Any]) -> None:
        self.saved.append(state)


class Harness:
    def __init__(self, machine: WorkerMachine, jobs: FakeJobs | None = None, **chain: Any) -> None:
        self.chain = FakeChain(**chain)
        self.network = FakeNetwork()
        self.jobs = jobs or FakeJobs()
        self.state = MemoryState()
        self.status = NodeStatus("worker0", "worker", "0x" + ME.hex())
        self.driver = Driver(
            machine, self.chain, self.network, self.jobs, self.state, self.status, LOG, 0.0
        )

    async def push(self, *events: ev.Event) -> None:
        """Chain events as one poll; returns once everything they caused has settled."""
        await self.chain.batches_send.send(list(events))
        await trio.testing.wait_all_tasks_blocked()

    async def gossip(self, event: ev.Event) -> None:
        assert self.network.deliver is not None, "gossip was never started"
        await self.network.deliver(event)
        await trio.testing.wait_all_tasks_blocked()


def round_one() -> list[ev.Event]:
    training_end = deadlines(1)[0]
    return [started((ME, OTHER)), opened(1), ev.Tick(training_end - 50)]


async def test_chain_effects_join_the_task_follow_it_and_commit_each_poll() -> None:
    harness = Harness(WorkerMachine(ME))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.driver.run, ev.Tick(1))
        await trio.testing.wait_all_tasks_blocked()
        chain = harness.chain
        assert chain.searches == [FindTask(again=False)]
        assert [(t.kind, t.args) for t in chain.sent] == [(TxKind.JOIN_TASK, (TASK, Role.WORKER))]
        # the join confirmed: everything that touches the task follows it
        assert chain.followed == [TASK]
        assert harness.jobs.followed == harness.network.followed == [(TASK, TERMS)]
        assert harness.network.deliver is not None
        await harness.push(ev.Tick(2))
        await harness.push(ev.Tick(3))
        assert chain.commits == 2
        assert persist.from_dict(harness.state.saved[-1]).view.task == TASK
        nursery.cancel_scope.cancel()


async def test_job_effects_answer_into_the_machine_and_its_transaction_goes_out() -> None:
    harness = Harness(WorkerMachine(ME, TASK, terms=TERMS))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.driver.run, ev.Tick(1))
        await harness.push(*round_one())
        (training,) = [a for a in harness.jobs.ran if isinstance(a, StartTraining)]
        assert training.round == 1 and training.base.initial_cid == INITIAL_CID
        (submit,) = [t for t in harness.chain.sent if t.kind == TxKind.SUBMIT_UPDATE]
        assert submit.args == (1, submitted(ME, 1).commitment, 100)
        assert harness.status.round == 1 and harness.status.phase == "training"
        nursery.cancel_scope.cancel()


async def test_network_effects_members_fetch_bounds_publish_and_gossip() -> None:
    harness = Harness(WorkerMachine(ME, TASK, terms=TERMS))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.driver.run, ev.Tick(1))
        await harness.push(*round_one())
        network = harness.network
        assert network.member_loads == 1  # the task started: its members are known now
        assert network.fetched == [Fetch(INITIAL_CID, (started().requester,), BlobKind.MODEL)]
        assert network.published == [PublishAnnouncement(1, update_cid(ME, 1), 100)]
        # an announcement from gossip reaches the machine: once training closed, keys are
        # released both ways; once the round finalizes with both updates accepted, the
        # other's blob is fetched and the round aggregated with the key it released
        await harness.push(submitted(ME, 1), submitted(OTHER, 1))
        await harness.gossip(announced(OTHER, 1))
        assert network.training_over is not None and not network.training_over(1)
        await harness.push(ev.Tick(deadlines(1)[0]))
        assert network.training_over(1) and not network.training_over(2)
        assert network.published[-1] == PublishKeyRelease(1, update_cid(ME, 1), b"our sealed key")
        await harness.gossip(ev.KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"theirs"))
        await harness.push(ev.RoundFinalized(1, (ME, OTHER)))
        assert network.fetched[-1].cid == update_cid(OTHER, 1)
        assert network.fetched[-1].kind == BlobKind.MODEL
        (aggregate,) = [a for a in harness.jobs.ran if isinstance(a, Aggregate)]
        assert aggregate.rule == "median:1" and aggregate.measure_on is None
        assert [u.worker for u in aggregate.updates] == [ME, OTHER]
        assert aggregate.updates[1].key_release == b"theirs"
        nursery.cancel_scope.cancel()


async def test_a_terminated_task_is_withdrawn_from_and_the_driver_returns() -> None:
    harness = Harness(WorkerMachine(ME, TASK, terms=TERMS))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.driver.run, ev.Tick(1))
        await harness.push(*round_one())
        await harness.push(ev.TaskTerminated("round limit"))
    assert harness.chain.withdrawals == [Withdraw(reclaim_escrow=False)]
    assert harness.status.done and harness.status.phase == "terminated"


@pytest.mark.parametrize("aside", [True, False], ids=["aside", "job-lane"])
async def test_a_task_ending_during_its_last_aggregation_stops_once_that_is_recorded(
    aside: bool,
) -> None:
    go_on = trio.Event()
    harness = Harness(
        WorkerMachine(ME, TASK, terms=TERMS), FakeJobs(aggregating=go_on, aggregate_aside=aside)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.driver.run, ev.Tick(1))
        await harness.push(*round_one())
        await harness.push(submitted(ME, 1), submitted(OTHER, 1))
        await harness.gossip(announced(OTHER, 1))
        await harness.push(ev.Tick(deadlines(1)[0]))
        await harness.gossip(ev.KeyReleaseReceived(1, OTHER, update_cid(OTHER, 1), b"theirs"))
        await harness.push(ev.RoundFinalized(1, (ME, OTHER)))
        assert [a.round for a in harness.jobs.ran if isinstance(a, Aggregate)] == [1]
        # the task ends while the round's aggregation runs: the machine withdraws and
        # stops, and the driver waits for the aggregation rather than dropping it
        await harness.push(ev.TaskTerminated("round limit"))
        assert harness.chain.withdrawals == [Withdraw(reclaim_escrow=False)]
        assert not harness.status.done
        go_on.set()
    assert harness.jobs.aggregated == [1]
    assert harness.status.done and harness.jobs.stopped


async def test_a_task_the_node_cannot_work_on_stops_it_with_the_reason() -> None:
    unusable = TaskOffer(TASK, TaskTerms("resnet50", "fedavg"), problem="model 'resnet50' ...")
    harness = Harness(WorkerMachine(ME), offer=unusable)
    with pytest.raises(NodeStopped, match="resnet50"):
        await harness.driver.run(ev.Tick(1))
    assert not harness.chain.sent  # nothing deposited


async def test_a_transaction_that_cannot_succeed_stops_the_driver_with_its_reason() -> None:
    harness = Harness(WorkerMachine(ME), refuse="fund the account with at least 4 more wei")
    with pytest.raises(NodeStopped, match="join for round 0 cannot succeed: fund the account"):
        await harness.driver.run(ev.Tick(1))
    assert not harness.chain.followed


async def test_a_driver_restarted_from_the_persisted_state_asks_again_for_lost_work() -> None:
    first = Harness(WorkerMachine(ME), jobs=FakeJobs(hold_training=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.driver.run, ev.Tick(1))
        await trio.testing.wait_all_tasks_blocked()
        await first.push(*round_one())
        assert [type(a) for a in first.jobs.ran] == [StartTraining]
        nursery.cancel_scope.cancel()  # the process dies with its training job
    saved = first.state.saved[-1]

    second = Harness(persist.from_dict(saved))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second.driver.run, ev.Restarted())
        await trio.testing.wait_all_tasks_blocked()
        # no new search or deposit: it follows the task it had joined and trains again
        assert not second.chain.searches
        assert second.chain.followed == [TASK]
        assert [type(a) for a in second.jobs.ran] == [StartTraining]
        assert [t.kind for t in second.chain.sent] == [TxKind.SUBMIT_UPDATE]
        nursery.cancel_scope.cancel()


async def test_a_resumed_task_the_node_can_no_longer_work_on_stops_it() -> None:
    harness = Harness(WorkerMachine(ME), jobs=FakeJobs())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.driver.run, ev.Tick(1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    saved = harness.state.saved[-1]  # joined TASK
    untrusted = "model 'pkg.mod:factory' is not trusted by this node's config"
    second = Harness(persist.from_dict(saved), jobs=FakeJobs(problem=untrusted))  # type: ignore[arg-type]
    with pytest.raises(NodeStopped, match=f"task 0x{TASK.hex()}: {untrusted}"):
        await second.driver.run(ev.Restarted())
    assert second.network.deliver is None  # no gossip for a task it cannot work on


def test_a_worker_trains_ahead_when_told_to_unless_it_is_a_copycat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "node.toml")
    assert config.role == "worker"
    monkeypatch.delenv(TRAIN_AHEAD_ENV, raising=False)
    assert machine_options(config, 0) == {"train_ahead": False}
    monkeypatch.setenv(TRAIN_AHEAD_ENV, "1")
    worker = new_machine(config, ME, 0, None)
    assert isinstance(worker, WorkerMachine) and worker.train_ahead
    copycat = replace(config, behaviour=BehaviourConfig(worker="copycat"))
    assert machine_options(copycat, 0) == {"train_ahead": False}
    monkeypatch.setenv(TRAIN_AHEAD_ENV, "0")
    assert machine_options(config, 0) == {"train_ahead": False}
