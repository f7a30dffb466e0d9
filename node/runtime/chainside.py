"""The chain side of the runtime: locked access, the node's one chain follower, SendTx.

`ChainFollower` is the only reader of chain logs in a node: each read's decoded logs, grouped
by block, go to its consumers (the status page) and through the pure `EventTranslator` to the
round machine. Everything the machine's events need beyond the logs is read by the follower
before translating, so translation makes no chain call and tests from recorded logs.

Everything here is synchronous web3 work; the driver calls it through
`ChainAccess.run`, which runs it in a worker thread under a lock. On the embedded chain
the lock is shared by every node of the process (eth-tester is not thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from eth_utils import to_checksum_address

from node.chain import ChainClient, ChainEvent, EventFollower, Termination
from node.chain.events import ChainBlock, blocks_of
from node.chain.tracker import round_phase
from node.chain.types import Role as ChainRole
from protocol.state import events as ev
from protocol.state.records import Phase, Role, TxKind

T = TypeVar("T")

logger = logging.getLogger("fl_node.runtime")

# The phases a PhaseEndedEarly log can enter (the contract ends training, commit or reveal).
EARLY_PHASES = frozenset({Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING})
CHAIN_ROLES = {ChainRole.WORKER: Role.WORKER, ChainRole.VALIDATOR: Role.VALIDATOR}
# Reverts that mean "this already happened": a retried send after a lost receipt.
ALREADY_DONE = {
    TxKind.SUBMIT_UPDATE: "AlreadySubmitted",
    TxKind.COMMIT_MANIFEST: "AlreadyCommitted",
    TxKind.REVEAL_MANIFEST: "AlreadyRevealed",
}


def address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def checksum(address: bytes) -> str:
    return str(to_checksum_address("0x" + address.hex()))


class ChainAccess:
    """Runs chain calls in a worker thread, one at a time per lock."""

    def __init__(self, client: ChainClient, lock: threading.Lock | None = None) -> None:
        self.client = client
        self.lock = lock or threading.Lock()

    def locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self.lock:
            return fn(*args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(self.locked, fn, *args)


@dataclass(frozen=True)
class TaskFacts:
    """What the machine's TaskStarted carries beyond its log, read from the task's state.
    Membership cannot change once a task started, so reading it after the log is exact."""

    requester: bytes
    initial_model_cid: str
    workers: tuple[bytes, ...]
    validators: tuple[bytes, ...]
    workers_per_round: int = 0  # Params.workersPerRound: 0 draws every worker every round
    rounds: int = 0  # Params.rounds
    committee_size: int = 0  # Params.committeeSize


@dataclass(frozen=True)
class ChainBatch:
    """One read of the chain: the followed contracts' events by block, oldest first."""

    blocks: tuple[ChainBlock, ...]
    head_timestamp: int  # the chain's latest block when the read ended
    facts: Mapping[str, TaskFacts] = field(default_factory=dict)  # per task with a TaskStarted


@dataclass
class EventTranslator:
    """Chain logs (in chain order) to machine events, with a Tick after each block. Pure: it
    reads nothing, so the same logs always give the same events.

    `task` is the followed task (None until the requester's task exists); `me` our address,
    so the requester knows its own new task (`task_block`: the block that created it).
    """

    me: bytes
    task: str | None = None
    task_block: int | None = None
    # accepted workers of a round being finalized: its WorkerSettled logs come just before
    # RoundFinalized, in the same transaction, so in the same batch
    _accepted: dict[int, list[bytes]] = field(default_factory=dict)

    def events(self, batch: ChainBatch) -> list[ev.Event]:
        out: list[ev.Event] = []
        for index, block in enumerate(batch.blocks):
            if index:
                out.append(ev.Tick(batch.blocks[index - 1].timestamp))
            for log in block.events:
                out.extend(self.translate(log, batch.facts))
        out.append(ev.Tick(batch.head_timestamp))
        return out

    def translate(self, log: ChainEvent, facts: Mapping[str, TaskFacts]) -> list[ev.Event]:
        a = log.args
        name = log.name
        if name == "TaskCreated":
            requester = address_bytes(a["requester"])
            if requester == self.me and self.task is None:
                self.task = to_checksum_address(a["task"])
                self.task_block = log.block_number
            return [ev.TaskCreated(address_bytes(a["task"]), requester)]
        if self.task is None or log.address.lower() != self.task.lower():
            return []
        if name == "MemberJoined":
            role = CHAIN_ROLES.get(ChainRole(a["role"]))
            return [ev.MemberJoined(address_bytes(a["member"]), role)] if role else []
        if name == "MemberLeft":
            return [ev.MemberLeft(address_bytes(a["member"]))]
        if name == "TaskStarted":
            fact = facts.get(log.address)
            if fact is None:
                raise ValueError(
                    f"TaskStarted of {log.address} came without its TaskFacts; the follower "
                    "reads them for every TaskStarted it delivers"
                )
            return [
                ev.TaskStarted(
                    requester=fact.requester,
                    validation_cid=a["validationSetCid"],
                    initial_model_cid=fact.initial_model_cid,
                    workers=fact.workers,
                    validators=fact.validators,
                    workers_per_round=fact.workers_per_round,
                    rounds=fact.rounds,
                    committee_size=fact.committee_size,
                )
            ]
        if name == "RoundStarted":
            return [
                ev.RoundOpened(
                    a["round"], a["trainingEnd"], a["commitEnd"], a["revealEnd"], bytes(a["seed"])
                )
            ]
        if name == "PhaseEndedEarly":
            phase = round_phase(a["nextPhase"])
            if phase not in EARLY_PHASES:
                return []
            return [ev.PhaseChanged(a["round"], phase, a["timestamp"])]
        if name == "UpdateSubmitted":
            return [
                ev.UpdateSubmitted(
                    a["round"], address_bytes(a["worker"]), bytes(a["commitment"]), a["nSamples"]
                )
            ]
        if name == "ManifestCommitted":
            return [ev.ManifestCommitted(a["round"], address_bytes(a["validator"]))]
        if name == "ManifestRevealed":
            return [ev.ManifestRevealed(a["round"], address_bytes(a["validator"]))]
        if name == "WorkerSettled":
            if a["accepted"]:
                self._accepted.setdefault(a["round"], []).append(address_bytes(a["worker"]))
            return []
        if name == "RoundFinalized":
            accepted = tuple(self._accepted.pop(a["round"], ()))
            return [ev.RoundFinalized(a["round"], accepted, a["consensusAccuracy"])]
        if name == "TaskTerminated":
            return [ev.TaskTerminated(Termination(a["reason"]).name.lower())]
        return []


class ChainFollower:
    """The node's one reader of chain logs. `poll()` reads the followed contracts' new logs
    once, hands its blocks to every consumer, and returns the round machine's events for it;
    the caller commits `cursor` once the machine handled them.

    Consumers run on the chain thread, under the chain lock; one that raises is logged and
    does not stop the node.
    """

    def __init__(self, client: ChainClient, cursor: EventFollower, me: bytes) -> None:
        self.client = client
        self.cursor = cursor
        self.translator = EventTranslator(me)
        self._consumers: list[Callable[[Sequence[ChainBlock]], None]] = []
        self._first_read: dict[str, int] = {}  # address -> where this process began reading it
        self.last_blocks: tuple[ChainBlock, ...] = ()  # the last poll's, for its timing

    @property
    def task(self) -> str | None:
        return self.translator.task

    @task.setter
    def task(self, task: str | None) -> None:
        self.translator.task = task

    def subscribe(self, consumer: Callable[[Sequence[ChainBlock]], None]) -> None:
        """`consumer` gets each read's blocks of decoded logs, in chain order."""
        self._consumers.append(consumer)

    def poll(self) -> list[ev.Event]:
        """New events since the cursor (the caller commits the cursor once handled)."""
        batch = self.read()
        self.last_blocks = batch.blocks
        events = self.translator.events(batch)
        if self.translator.task is not None and self.translator.task_block is not None:
            # our own new task: its logs from the block that created it (a no-op once followed)
            self.cursor.follow(self.translator.task, self.translator.task_block)
        for consumer in self._consumers:
            try:
                consumer(batch.blocks)
            except Exception:
                logger.exception("a consumer of the chain's events failed; the node goes on")
        return events

    def read(self) -> ChainBatch:
        """The followed contracts' logs since the last read, by block, with the facts their
        TaskStarted logs need."""
        for address, position in self.cursor.positions().items():
            self._first_read.setdefault(address, position)
        logs = self.cursor.poll()
        head = self.client.latest_timestamp()
        blocks = blocks_of(logs, self.cursor.block_timestamp)
        facts = {
            log.address: self._task_facts(log.address)
            for block in blocks
            for log in block.events
            if log.name == "TaskStarted"
        }
        return ChainBatch(tuple(blocks), head, facts)

    def history(self, address: str) -> list[ChainBlock]:
        """`address`'s blocks before this process began reading it: what a consumer that
        needs the whole history (a restarted node's status page) has not been given."""
        end = self._first_read.get(address, self.cursor.positions().get(address, 0))
        logs = self.cursor.read([to_checksum_address(address)], 0, end - 1)
        return blocks_of(logs, self.cursor.block_timestamp)

    def _task_facts(self, task: str) -> TaskFacts:
        workers, validators = self.client.members(task)
        params = self.client.task_params(task)
        return TaskFacts(
            requester=address_bytes(self.client.requester(task)),
            initial_model_cid=params.initial_model_cid,
            workers=tuple(address_bytes(w) for w in workers),
            validators=tuple(address_bytes(v) for v in validators),
            workers_per_round=params.workers_per_round,
            rounds=params.rounds,
            committee_size=params.committee_size,
        )
