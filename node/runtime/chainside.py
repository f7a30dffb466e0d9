"""The chain side of the runtime: locked access, chain logs to machine events, SendTx.

Everything here is synchronous web3 work; the driver calls it through
`ChainAccess.run`, which runs it in a worker thread under a lock. On the embedded chain
the lock is shared by every node of the process (eth-tester is not thread-safe).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from eth_utils import to_checksum_address

from node.chain import ChainClient, ChainEvent, EventFollower, Termination
from node.chain.types import Phase as ChainPhase
from node.chain.types import Role as ChainRole
from protocol.state import events as ev
from protocol.state.actions import SendTx
from protocol.state.records import Phase, Role, TxKind

T = TypeVar("T")

CHAIN_PHASES = {
    ChainPhase.COMMIT: Phase.COMMIT,
    ChainPhase.REVEAL: Phase.REVEAL,
    ChainPhase.FINALIZE: Phase.FINALIZING,
}
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


@dataclass
class EventTranslator:
    """Chain logs (in chain order) to machine events, with a Tick after each block.

    `task` is the followed task (None until the requester's task exists); `me` our
    address, so the requester follows its own new task from the block that created it.
    """

    client: ChainClient
    follower: EventFollower
    me: bytes
    task: str | None = None
    on_task_started: Callable[[str], None] | None = None
    total_stake: dict[int, int] = field(default_factory=dict)

    def poll(self) -> list[ev.Event]:
        """New events since the cursor (the caller commits the cursor once handled)."""
        out: list[ev.Event] = []
        block: int | None = None
        for log in self.follower.poll():
            if block is not None and log.block_number != block:
                out.append(ev.Tick(self._timestamp(block)))
            block = log.block_number
            out.extend(self.translate(log))
        out.append(ev.Tick(self.client.latest_timestamp()))
        return out

    def _timestamp(self, block: int) -> int:
        return int(self.client.w3.eth.get_block(block)["timestamp"])

    def translate(self, log: ChainEvent) -> list[ev.Event]:
        a = log.args
        name = log.name
        if name == "TaskCreated":
            requester = address_bytes(a["requester"])
            if requester == self.me and self.task is None:
                self.task = to_checksum_address(a["task"])
                self.follower.follow(self.task, log.block_number)
            return [ev.TaskCreated(address_bytes(a["task"]), requester)]
        if self.task is None or log.address.lower() != self.task.lower():
            return []
        if name == "MemberJoined":
            role = CHAIN_ROLES.get(ChainRole(a["role"]))
            return [ev.MemberJoined(address_bytes(a["member"]), role)] if role else []
        if name == "MemberLeft":
            return [ev.MemberLeft(address_bytes(a["member"]))]
        if name == "TaskStarted":
            workers, validators = self.client.members(self.task)
            params = self.client.task_params(self.task)
            if self.on_task_started is not None:
                self.on_task_started(self.task)
            return [
                ev.TaskStarted(
                    requester=address_bytes(self.client.requester(self.task)),
                    validation_cid=a["validationSetCid"],
                    initial_model_cid=params.initial_model_cid,
                    workers=tuple(address_bytes(w) for w in workers),
                    validators=tuple(address_bytes(v) for v in validators),
                )
            ]
        if name == "RoundStarted":
            self.total_stake[a["round"]] = a["totalStake"]
            return [
                ev.RoundOpened(
                    a["round"], a["trainingEnd"], a["commitEnd"], a["revealEnd"], bytes(a["seed"])
                )
            ]
        if name == "PhaseEndedEarly":
            phase = CHAIN_PHASES.get(ChainPhase(a["nextPhase"]))
            return [ev.PhaseChanged(a["round"], phase, a["timestamp"])] if phase else []
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
        if name == "RoundFinalized":
            result = self.client.round_result(self.task, a["round"])
            accepted = tuple(
                address_bytes(w) for w, ok in zip(result.workers, result.accepted, strict=True) if ok
            )
            return [ev.RoundFinalized(a["round"], accepted, a["consensusAccuracy"])]
        if name == "TaskTerminated":
            return [ev.TaskTerminated(Termination(a["reason"]).name.lower())]
        return []


def contract_args(args: tuple[Any, ...]) -> list[Any]:
    """Machine action arguments to web3 arguments: 20-byte addresses to checksum strings."""
    converted: list[Any] = []
    for value in args:
        if isinstance(value, tuple):
            converted.append(
                [checksum(v) if isinstance(v, bytes) and len(v) == 20 else v for v in value]
            )
        else:
            converted.append(value)
    return converted


def send_task_tx(client: ChainClient, task: str, action: SendTx) -> None:
    """Send one of the machine's task transactions (all but CREATE_TASK)."""
    client.transact("Task", task, action.kind.value, *contract_args(action.args))
