"""The round driver: pumps one node's protocol.state machine, deciding nothing itself.

    for action in machine.handle(event):
        await run(action)      # each answer is the next event

What protocol/state's package docstring asks of a runtime, and where it happens:

- chain logs from a persisted cursor become machine events in chain order, with a
  `Tick(block timestamp)` after each block (ChainEffects.poll); the cursor is committed
  only after the machine handled them, so a crash replays rather than loses them;
- actions run in order: `Persist` writes the machine atomically first; `SendTx` goes to
  one sequential sender; jobs to one sequential job runner, except those the jobs put
  aside (nothing waits on them), which run beside it at a lower priority; `Publish`, `Fetch` and
  `FindTask` run side by side; `FollowTask` starts the task's gossip, whose
  announcements come back as `AnnouncementReceived`; `Stop` ends the pump;
- a restart loads the machine (`persist.from_dict`) and feeds `Restarted()`.

`start_driver` builds the real effects (node/runtime/effects*.py) around a machine that
is new or loaded from its state file.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import trio

from node.blocks import BlockExchange, BlockStore
from node.config import NodeConfig
from node.discovery import Discovery
from node.gossip import GossipNode
from node.runtime import learning, timing
from node.runtime.chainside import ChainAccess, ChainFollower
from node.runtime.effects import (
    ChainEffects,
    JobEffects,
    NetworkEffects,
    NodeStatus,
    StateFile,
    StateStore,
)
from node.runtime.effects_chain import ChainSide, task_problem
from node.runtime.effects_jobs import LearningJobs
from node.runtime.effects_network import TaskNetwork
from node.runtime.keys import NodeKeys
from protocol import keycert
from protocol.aggregation.rule import AggregationRule
from protocol.state import events as ev
from protocol.state import persist
from protocol.state.actions import (
    Action,
    Aggregate,
    Fetch,
    FindTask,
    FollowTask,
    LoadMembers,
    Log,
    Persist,
    Publish,
    SaveFinalModel,
    SendTx,
    Stop,
    Withdraw,
)
from protocol.state.phases import RoundMachine
from protocol.state.records import Phase, TaskTerms
from protocol.state.requester import Recruiting, RequesterMachine
from protocol.state.validator import ValidatorMachine
from protocol.state.worker import WorkerMachine
from protocol.vrf import i2osp

__all__ = ["BLOCKS_DIR", "Driver", "NodeStatus", "NodeStopped", "start_driver", "task_problem"]

STATE_FILE = "machine.json"
CURSOR_FILE = "cursor.json"
BLOCKS_DIR = "blocks"
# "1" turns training ahead on. Off by default: a worker killed and restarted after round 1
# had its round-2 update rejected (tests/localnet/test_localnet_anvil.py, crash scenario) and
# the cause is not found; in a quiet profile it saved 3.5% of the round time.
TRAIN_AHEAD_ENV = "FL_NODE_TRAIN_AHEAD"
VALIDATOR_FINALIZE_AFTER_S = 30  # validators finalize a round the requester left hanging
# Polls that find no new block double the wait before the next, up to 2**3 poll intervals,
# except in the phases that end on other nodes' transactions within seconds, where each
# poll of delay is a delay of the round (a validator's reveal waits to see the last commit,
# the requester's finalization the last reveal): there every poll interval.
MAX_POLL_BACKOFF_STEPS = 3
PROMPT_PHASES = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING)
# While the machine awaits other parties' transactions (`RoundMachine.awaits_others`), the
# next FAST_POLLS polls come at 1/FAST_POLL_DIVISOR of the interval: the transaction that
# ends the wait is usually a block away, and the cores are idle meanwhile. Bounded, so a
# wait that lasts (a validator that never reveals) costs no more than a few polls.
FAST_POLLS = 12
FAST_POLL_DIVISOR = 4
# Jobs whose result is the node's record of the task (the global model it built and the
# accuracy it measured): a Stop waits for them rather than dropping them, at most this long.
RECORDING_JOBS = (Aggregate, SaveFinalModel)
RECORDING_WAIT_S = 600.0


class NodeStopped(RuntimeError):
    """The machine stopped the node: it cannot go on (the message says what to change)."""


class NodeLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['name'] if self.extra else '?'}] {msg}", kwargs


@dataclass
class _Batch:
    """The events of one chain poll; `done` is set once handled (the cursor committed)."""

    events: list[ev.Event]
    done: trio.Event = field(default_factory=trio.Event)


class Driver:
    """Pumps a machine's actions into the effects and their answers back into it."""

    def __init__(
        self,
        machine: RoundMachine[Any],
        chain: ChainEffects,
        network: NetworkEffects,
        jobs: JobEffects,
        state: StateStore,
        status: NodeStatus,
        log: logging.LoggerAdapter[logging.Logger],
        poll_interval: float,
    ) -> None:
        self.machine = machine
        self.chain = chain
        self.network = network
        self.jobs = jobs
        self.state = state
        self.status = status
        self.log = log
        self.poll_interval = poll_interval

    async def run(self, first: ev.Event) -> NodeStatus:
        """Feed `first` (Restarted, or a Tick for a new machine), then every event, until
        the machine says Stop. Raises NodeStopped when it stopped on a failure."""
        events_send, events_recv = trio.open_memory_channel[ev.Event | _Batch](math.inf)
        try:
            stop = await self._pump(first, events_send, events_recv)
        finally:
            self.jobs.stop()  # a job in a thread of its own would outlive the node
        if stop.failed:
            raise NodeStopped(stop.reason)
        self.status.done = True
        self.log.info("done with task %s: %s", self.status.task, stop.reason)
        return self.status

    async def _pump(
        self,
        first: ev.Event,
        events_send: trio.MemorySendChannel[ev.Event | _Batch],
        events_recv: trio.MemoryReceiveChannel[ev.Event | _Batch],
    ) -> Stop:
        async with trio.open_nursery() as nursery:
            pump = _Pump(self, nursery, events_send)
            nursery.start_soon(pump.send_txs)
            nursery.start_soon(pump.run_jobs)
            nursery.start_soon(pump.poll_chain)
            stop = await pump.feed(first)
            while stop is None:
                item = await events_recv.receive()
                if isinstance(item, _Batch):
                    for event in item.events:
                        stop = await pump.feed(event)
                        if stop is not None:
                            break
                    await self.chain.commit()
                    item.done.set()
                else:
                    stop = await pump.feed(item)
            await pump.finish_recording()
            nursery.cancel_scope.cancel()
        return stop


class _Pump:
    """One run of a Driver: its lanes (sequential transactions and jobs, the rest side by
    side in the nursery) and the event channel every answer comes back on."""

    def __init__(
        self,
        driver: Driver,
        nursery: trio.Nursery,
        events: trio.MemorySendChannel[ev.Event | _Batch],
    ) -> None:
        self.d = driver
        self.nursery = nursery
        self.events = events
        self.txs_send, self.txs_recv = trio.open_memory_channel[SendTx](math.inf)
        self.poked = trio.Event()
        self.jobs_send, self.jobs_recv = trio.open_memory_channel[Action](math.inf)
        self.recording = 0  # RECORDING_JOBS sent to a lane and not done yet
        self.recorded = trio.Event()  # set whenever `recording` falls to 0

    async def feed(self, event: ev.Event) -> Stop | None:
        """Hand `event` to the machine and run what it asks; the Stop it asked for, if any."""
        machine = self.d.machine
        actions = machine.handle(event)
        self.d.status.round, phase = machine.progress()
        self.d.status.phase = str(phase)
        for action in actions:
            if isinstance(action, Stop):
                return action
            await self.run(action)
        return None

    async def run(self, action: Action) -> None:
        d = self.d
        if isinstance(action, Persist):
            await d.state.save(persist.to_dict(d.machine))
        elif isinstance(action, Log):
            d.log.log(logging.getLevelName(action.level.upper()), action.text)
        elif isinstance(action, SendTx):
            self.txs_send.send_nowait(action)
        elif isinstance(action, FollowTask):
            await d.chain.follow(action.task)
            problem = await d.jobs.follow(action.task, action.terms)
            await self.events.send(ev.TaskFollowed(action.task, problem))
            if problem is None:  # else the machine stops on the TaskFollowed
                d.network.follow(action.task, action.terms)
                self.nursery.start_soon(
                    d.network.gossip, self._round, self.events.send, d.machine.training_over
                )
        elif isinstance(action, LoadMembers):
            await d.network.load_members()
        elif isinstance(action, Withdraw):
            await d.chain.withdraw(action)
        elif isinstance(action, Publish):
            self.nursery.start_soon(d.network.publish, action)
        elif isinstance(action, Fetch):
            self.nursery.start_soon(self._answer, d.network.fetch, action)
        elif isinstance(action, FindTask):
            self.nursery.start_soon(self._answer, d.chain.find_task, action)
        else:
            if isinstance(action, RECORDING_JOBS):
                self.recording += 1
            if d.jobs.aside(action):
                self.nursery.start_soon(self._job, action)
            else:
                self.jobs_send.send_nowait(action)

    def _round(self) -> int:
        return self.d.machine.progress()[0]

    async def _answer(self, effect: Any, action: Action) -> None:
        event = await effect(action)
        if event is not None:
            await self.events.send(event)

    async def send_txs(self) -> None:
        async for tx in self.txs_recv:
            await self._answer(self.d.chain.send, tx)
            self.poke()  # its block holds its log: no need to wait for the next poll

    async def run_jobs(self) -> None:
        async for job in self.jobs_recv:
            await self._job(job)

    async def _job(self, action: Action) -> None:
        try:
            await self._answer(self.d.jobs.run, action)
        finally:
            if isinstance(action, RECORDING_JOBS):
                self.recording -= 1
                if self.recording == 0:
                    self.recorded.set()
                    self.recorded = trio.Event()

    async def finish_recording(self) -> None:
        """Let the aggregations and the final model's save still under way end (the
        machine stopped once it had asked for them, not once they were done), after
        stopping any training ahead that could hold the job lane."""
        if self.recording == 0:
            return
        self.d.jobs.stop()
        self.d.log.info("waiting for %d aggregation or save jobs before stopping", self.recording)
        with trio.move_on_after(RECORDING_WAIT_S) as waited:
            while self.recording:
                await self.recorded.wait()
        if waited.cancelled_caught:
            self.d.log.warning(
                "stopping with %d aggregation or save jobs unfinished after %.0f s",
                self.recording, RECORDING_WAIT_S,
            )

    async def poll_chain(self) -> None:
        """Read the chain when it may have something new: at once after one of our
        transactions landed (`poke`), else every poll interval while blocks keep coming,
        backing off to MAX_POLL_BACKOFF intervals while none does (not in PROMPT_PHASES).
        A poll that finds no new block asks for the block number only."""
        quiet = 0
        fast = FastPolls()
        while True:
            events = await self.d.chain.poll()
            if events is not None:
                batch = _Batch(events)
                await self.events.send(batch)
                await batch.done.wait()
            machine = self.d.machine
            round, phase = machine.progress()
            quiet = poll_backoff(quiet, events is not None, phase)
            wait = self.d.poll_interval * 2**quiet
            if fast.take((round, phase) if machine.awaits_others() else None):
                wait = self.d.poll_interval / FAST_POLL_DIVISOR
            with trio.move_on_after(wait):
                await self.poked.wait()
            self.poked = trio.Event()

    def poke(self) -> None:
        """Something we did changed the chain (a transaction of ours landed): read it now."""
        self.poked.set()


class FastPolls:
    """The fast polls left for the current wait on others' transactions: FAST_POLLS for
    each new wait (a round and phase in which the machine awaits others), none outside."""

    def __init__(self) -> None:
        self.wait: tuple[int, Phase] | None = None
        self.left = 0

    def take(self, wait: tuple[int, Phase] | None) -> bool:
        """Whether the next poll comes fast; `wait` is the (round, phase) the machine awaits
        others in, or None when it does not."""
        if wait is None:
            self.wait = None
            return False
        if wait != self.wait:
            self.wait, self.left = wait, FAST_POLLS
        if self.left == 0:
            return False
        self.left -= 1
        return True


def poll_backoff(quiet: int, found: bool, phase: Phase) -> int:
    """The backoff steps (the next wait: poll interval x 2**steps) after a poll that found
    new blocks or not (`found`), `quiet` steps before, with the machine in `phase`."""
    if found or phase in PROMPT_PHASES:
        return 0
    return min(quiet + 1, MAX_POLL_BACKOFF_STEPS)


# --- building a node's driver ------------------------------------------------------------


async def register(chain: ChainAccess, keys: NodeKeys, log: logging.LoggerAdapter[logging.Logger]) -> None:
    """Register on the registry once (peer id, X25519 key, certified VRF key)."""
    client = chain.client
    if await chain.run(client.is_registered):
        return
    key = keys.vrf_key
    modulus = i2osp(key.modulus, keycert.KEY_BYTES)
    with timing.span(log, "certify", 0):
        certificate = await trio.to_thread.run_sync(keycert.certify, key, keys.address_bytes)
    with timing.span(log, "tx", 0, kind="register"):
        await chain.run(
            client.register, keys.peer_id.to_bytes(), keys.encryption_public, modulus, certificate
        )
    log.info("registered as %s (peer %s)", keys.address, keys.peer_id)


def recruiting(config: NodeConfig, started_at: int) -> Recruiting:
    """The requester's rules for starting its task, from its config."""
    task = config.task
    return Recruiting(
        min_workers=task.min_workers,
        min_validators=task.min_validators,
        max_workers=task.max_workers,
        max_validators=task.max_validators,
        start_after=started_at + task.start_after_seconds,
        # the chain's deadline is set a moment later, at creation; the requester may cancel
        # any time, so cancelling at this one is never refused
        recruit_deadline=started_at + task.recruit_seconds,
    )


def machine_options(config: NodeConfig, started_at: int) -> dict[str, Any]:
    """The constructor options of the config's machine (a loaded one gets them again)."""
    if config.role == "requester":
        return {"recruiting": recruiting(config, started_at), "finalize_after": 0}
    if config.role == "validator":
        return {"finalize_after": VALIDATOR_FINALIZE_AFTER_S}
    # a copycat has nothing to copy before the round it would submit in has opened
    copycat = config.behaviour.worker.split(":")[0] == "copycat"
    return {"train_ahead": not copycat and os.environ.get(TRAIN_AHEAD_ENV, "0") == "1"}


def new_machine(
    config: NodeConfig, me: bytes, started_at: int, initial_cid: str | None
) -> RoundMachine[Any]:
    """A fresh machine for the config's role."""
    options = machine_options(config, started_at)
    if config.role == "requester":
        task = config.task
        terms = TaskTerms(task.model, AggregationRule.parse(task.aggregator).spec)
        local_blobs = (initial_cid,) if initial_cid else ()
        return RequesterMachine(me, local_blobs=local_blobs, terms=terms, **options)
    if config.role == "worker":
        return WorkerMachine(me, **options)
    return ValidatorMachine(me, **options)


async def start_driver(
    config: NodeConfig,
    keys: NodeKeys,
    chain: ChainAccess,
    follower: ChainFollower,
    store: BlockStore,
    exchange: BlockExchange,
    discovery: Discovery,
    gossip_node: GossipNode,
    status: NodeStatus,
) -> tuple[Driver, ev.Event]:
    """Register, load or create the machine, and build its driver with the real effects;
    returns the driver and the event to start it with."""
    torch.set_num_threads(config.node.torch_threads)
    if config.role == "worker":  # while it registers and waits for its task, not in round 1
        threading.Thread(
            target=learning.load_optimizer_code, name="fl-node-warm-up", daemon=True
        ).start()
    log = NodeLog(logging.getLogger("fl_node.runtime"), {"name": status.name})
    client = chain.client
    await register(chain, keys, log)
    started_at = await chain.run(client.latest_timestamp)
    state = StateFile(config.node.data_dir / STATE_FILE)
    saved = state.load()
    initial_cid = None
    if config.role == "requester":
        blob = learning.initial_model_blob(config.task.model, config.task.model_seed)
        initial_cid = await exchange.publish(blob)
        registry = client.registry_address
        if saved is None and registry is not None:  # a new task: created from now on
            head = await chain.run(lambda: client.w3.eth.block_number)
            follower.cursor.follow(registry, head)
    if saved is not None:
        machine = persist.from_dict(saved, **machine_options(config, started_at))
        log.info("resuming from %s", state.path)
        first: ev.Event = ev.Restarted()
    else:
        machine = new_machine(config, keys.address_bytes, started_at, initial_cid)
        first = ev.Tick(started_at)
    network = TaskNetwork(
        chain, keys.peer_id, keys.address_bytes, exchange, discovery, gossip_node,
        config.behaviour, log,
    )
    # The task's members keep the block server's reserved slots while strangers crowd it.
    exchange.is_member = network.peers.__contains__
    jobs = LearningJobs(
        config, keys, chain, store, exchange, network.update_recipients, status, log,
        members=network.member_recipients, copied_update=network.copied_update,
    )
    chain_side = ChainSide(config, chain, follower, status, log, initial_cid)
    driver = Driver(
        machine, chain_side, network, jobs, state, status, log, config.chain.poll_interval
    )
    return driver, first
