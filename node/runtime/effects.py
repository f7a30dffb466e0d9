"""What the round driver does for a machine's actions, grouped by what it touches.

The driver (`node.runtime.driver`) only pumps: it hands each action to one of these and
feeds back the event the action answers with. Each group is a small Protocol, so the
driver is tested with fakes (tests/runtime). The real ones:

- `effects_chain.ChainSide` (ChainEffects): the chain's events, looking for a task, transactions through
  the typed client methods, withdrawing;
- `effects_network.TaskNetwork` (NetworkEffects): the task's gossip, its members' peer ids and keys,
  publishing and fetching blobs;
- `effects_jobs.LearningJobs` (JobEffects): sortition, training, evaluation, aggregation, the requester's
  validation set and final model, one at a time in a worker thread;
- `StateFile` (StateStore, here): the machine's persisted state, written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from protocol.state import events as ev
from protocol.state.actions import Action, Fetch, FindTask, Publish, SendTx, Withdraw
from protocol.state.records import TaskTerms

Deliver = Callable[[ev.Event], Awaitable[None]]


@dataclass
class NodeStatus:
    """What the node has done, for callers (the in-process harness, a status page)."""

    name: str
    role: str
    address: str
    task: str | None = None
    round: int = 0
    phase: str = "idle"
    accuracy_by_round: dict[int, float] = field(default_factory=dict)
    withdrawn_wei: int = 0
    reclaimed_wei: int = 0  # requester: unspent escrow taken back
    final_model: Path | None = None
    done: bool = False
    failed_txs: list[str] = field(default_factory=list)  # "kind@round: error name"


# --- the interfaces the driver pumps actions into -------------------------------------


class ChainEffects(Protocol):
    async def poll(self) -> list[ev.Event] | None:
        """The chain's new events (None: the read failed, try again after a poll)."""

    async def commit(self) -> None:
        """The events of the last poll are handled: move the cursor past them."""

    async def follow(self, task: bytes) -> None: ...

    async def find_task(self, action: FindTask) -> ev.Event: ...

    async def send(self, tx: SendTx) -> ev.Event | None:
        """TxConfirmed or TxFailed (None: not sent on purpose, a scenario's behaviour)."""

    async def withdraw(self, action: Withdraw) -> None: ...


class NetworkEffects(Protocol):
    def follow(self, task: bytes, terms: TaskTerms) -> None: ...

    async def gossip(
        self,
        current_round: Callable[[], int],
        deliver: Deliver,
        training_over: Callable[[int], bool] | None = None,
    ) -> None:
        """The followed task's gossip, delivering announcements and key releases (those
        only for rounds whose training `training_over` says has closed), until cancelled."""

    async def load_members(self) -> None: ...

    async def publish(self, action: Publish) -> None: ...

    async def fetch(self, action: Fetch) -> ev.Event: ...


class JobEffects(Protocol):
    async def follow(self, task: bytes, terms: TaskTerms) -> str | None:
        """Get ready for the task's jobs; why this node cannot do them, or None."""

    def aside(self, action: Action) -> bool:
        """The job runs beside the sequential ones (nothing waits on its answer)."""

    async def run(self, action: Action) -> ev.Event | None:
        """The job's answer (JobFailed when it failed; None for a job nobody waits on)."""

    def stop(self) -> None:
        """Stop jobs running in threads of their own: the node is shutting down."""


class StateStore(Protocol):
    async def save(self, state: dict[str, Any]) -> None: ...


# --- the persisted machine -------------------------------------------------------------


class StateFile:
    """The machine's state as JSON in one file, replaced atomically (fsync, then rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    async def save(self, state: dict[str, Any]) -> None:
        # off the trio thread; awaited, so nothing after it runs before it is on disk
        await trio.to_thread.run_sync(self._write, state)

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
