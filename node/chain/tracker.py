"""One task's history from its chain events: per-round records, members, money and status.

Pure bookkeeping: `TaskTracker.feed(event, block_timestamp)` takes the Task contract's decoded
logs in chain order; nothing here reads the chain, so it tests from recorded events. The node's
status page and the localnet's table and results.json read the same records.

Phases are protocol.state's `Phase`, the one vocabulary of the node; the contract's enum maps
into it through `CONTRACT_PHASES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from node.chain.types import ChainEvent, Role, TaskStatus, Termination
from node.chain.types import Phase as ContractPhase
from protocol.state.records import PHASE_ORDER, Phase

__all__ = [
    "CONTRACT_PHASES",
    "TX_KINDS",
    "RoundRecord",
    "TaskTracker",
    "ValidatorOutcome",
    "WorkerOutcome",
    "round_phase",
]

# The contract's Task.Phase of the current round, in the node's vocabulary. NONE is the
# contract's answer outside a running round (recruiting, terminated, between rounds).
CONTRACT_PHASES: dict[ContractPhase, Phase] = {
    ContractPhase.NONE: Phase.IDLE,
    ContractPhase.TRAINING: Phase.TRAINING,
    ContractPhase.COMMIT: Phase.COMMIT,
    ContractPhase.REVEAL: Phase.REVEAL,
    ContractPhase.FINALIZE: Phase.FINALIZING,
}

# Which transaction emitted an event (one event per call of these): the gas per round by kind.
TX_KINDS = {
    "UpdateSubmitted": "submitUpdate",
    "ManifestCommitted": "commitManifest",
    "ManifestRevealed": "revealManifest",
    "RoundFinalized": "finalizeRound",
}


def round_phase(value: int) -> Phase:
    """The node's phase for a value of the contract's Phase enum (a log argument or a view);
    a value the contract does not define raises ValueError naming it."""
    return CONTRACT_PHASES[ContractPhase(value)]


@dataclass
class WorkerOutcome:
    consensus_score: int
    accepted: bool
    payout: int
    slash: int


@dataclass
class ValidatorOutcome:
    revealed: bool
    agreed: bool
    payout: int
    slash: int


@dataclass
class RoundRecord:
    round: int
    started_at: int
    phase: Phase = Phase.TRAINING
    submissions: dict[str, int] = field(default_factory=dict)  # worker -> nSamples
    committed: list[str] = field(default_factory=list)
    reveals: dict[str, dict[str, Any]] = field(default_factory=dict)  # validator -> manifest
    workers: dict[str, WorkerOutcome] = field(default_factory=dict)
    validators: dict[str, ValidatorOutcome] = field(default_factory=dict)
    finalized_at: int | None = None
    consensus_accuracy: int | None = None  # fixed point (protocol.fixedpoint.SCALE)
    returned_to_escrow: int = 0
    phase_changed_at: dict[Phase, int] = field(default_factory=dict)
    tx_hashes: dict[str, list[str]] = field(default_factory=dict)  # tx kind -> hashes

    @property
    def finalized(self) -> bool:
        return self.finalized_at is not None

    @property
    def accepted(self) -> list[str]:
        return [w for w, o in self.workers.items() if o.accepted]

    @property
    def rejected(self) -> list[str]:
        return [w for w, o in self.workers.items() if not o.accepted]

    def advance(self, phase: Phase) -> None:
        """Within a round the phase only moves forward, whatever order the evidence comes in."""
        if PHASE_ORDER[phase] > PHASE_ORDER[self.phase]:
            self.phase = phase


class TaskTracker:
    """The task's rounds as seen on chain, built from its events."""

    def __init__(self) -> None:
        self.rounds: dict[int, RoundRecord] = {}
        self.members: dict[str, str] = {}  # address -> "worker" | "validator"
        # address -> what it locked to join: a worker's deposit, a validator's own stake
        self.joined_with: dict[str, int] = {}
        self.left: set[str] = set()
        self.status: TaskStatus | None = None  # None until the task's first event
        self.escrow: int | None = None  # unspent reward, as the last event that moved it says
        self.started_at: int | None = None
        self.termination: Termination | None = None
        self.withdrawn: dict[str, int] = {}
        self._seen: set[tuple[str, int]] = set()  # (tx hash, log index): feeding is idempotent

    @property
    def current_round(self) -> RoundRecord | None:
        return self.rounds[max(self.rounds)] if self.rounds else None

    @property
    def terminated(self) -> bool:
        return self.termination is not None

    def finalized_rounds(self) -> list[RoundRecord]:
        return [self.rounds[r] for r in sorted(self.rounds) if self.rounds[r].finalized]

    def feed(self, event: ChainEvent, block_timestamp: int) -> RoundRecord | None:
        """Apply one event; returns the round it finalized, if it was RoundFinalized."""
        key = (event.tx_hash, event.log_index)
        if key in self._seen:
            return None
        self._seen.add(key)
        args = event.args
        name = event.name
        if name == "TaskInitialized":
            self.status = TaskStatus.RECRUITING
            self.escrow = int(args["escrow"])
        elif name == "MemberJoined":
            role = Role(int(args["role"]))
            self.members[_address(args["member"])] = role.name.lower()
            self.joined_with[_address(args["member"])] = int(args["amount"])
        elif name == "MemberLeft":
            self.left.add(_address(args["member"]))
        elif name == "TaskStarted":
            self.status = TaskStatus.RUNNING
            self.started_at = block_timestamp
        elif name == "RoundStarted":
            number = int(args["round"])
            self.rounds[number] = RoundRecord(round=number, started_at=block_timestamp)
            self.rounds[number].phase_changed_at[Phase.TRAINING] = block_timestamp
        elif name == "TaskTerminated":
            self.status = TaskStatus.TERMINATED
            self.termination = Termination(int(args["reason"]))
        elif name == "Withdrawn":
            account = _address(args["account"])
            self.withdrawn[account] = self.withdrawn.get(account, 0) + int(args["amount"])
        elif name == "EscrowReclaimed":
            self.escrow = int(args["escrowLeft"])
        elif "round" in args:
            return self._feed_round_event(event, block_timestamp)
        return None

    def _feed_round_event(self, event: ChainEvent, block_timestamp: int) -> RoundRecord | None:
        args = event.args
        record = self.rounds.get(int(args["round"]))
        if record is None:
            return None  # a round this tracker never saw start: it started before we followed
        kind = TX_KINDS.get(event.name)
        if kind is not None:
            record.tx_hashes.setdefault(kind, []).append(event.tx_hash)
        if event.name == "PhaseEndedEarly":
            phase = round_phase(int(args["nextPhase"]))
            record.advance(phase)
            record.phase_changed_at[phase] = int(args["timestamp"])
        elif event.name == "UpdateSubmitted":
            record.submissions[_address(args["worker"])] = int(args["nSamples"])
        elif event.name == "ManifestCommitted":
            record.committed.append(_address(args["validator"]))
            record.advance(Phase.COMMIT)
        elif event.name == "ManifestRevealed":
            record.reveals[_address(args["validator"])] = {
                "workers": [_address(w) for w in args["workers"]],
                "scores": [int(s) for s in args["scores"]],
                "accepts": [int(v) == 1 for v in args["verdicts"]],  # WorkerVerdict.ACCEPT
                "verdicts": [int(v) for v in args["verdicts"]],
                "global_accuracy": int(args["globalAccuracy"]),
            }
            record.advance(Phase.REVEAL)
        elif event.name == "WorkerSettled":
            record.workers[_address(args["worker"])] = WorkerOutcome(
                consensus_score=int(args["consensusScore"]),
                accepted=bool(args["accepted"]),
                payout=int(args["payout"]),
                slash=int(args["slash"]),
            )
        elif event.name == "ValidatorSettled":
            record.validators[_address(args["validator"])] = ValidatorOutcome(
                revealed=bool(args["revealed"]),
                agreed=bool(args["agreed"]),
                payout=int(args["payout"]),
                slash=int(args["slash"]),
            )
        elif event.name == "RoundFinalized":
            record.finalized_at = block_timestamp
            record.advance(Phase.FINALIZED)
            record.consensus_accuracy = int(args["consensusAccuracy"])
            record.returned_to_escrow = int(args["returnedToEscrow"])
            self.escrow = int(args["escrowLeft"])
            return record
        return None


def _address(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return to_checksum_address(bytes(value))
    return to_checksum_address(str(value))
