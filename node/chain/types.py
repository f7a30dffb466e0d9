"""Typed mirrors of the contracts' enums, parameter struct and views."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak

from protocol.rewards import RewardPolicy

# Task.Params as one ABI tuple, field types in declaration order.
PARAMS_ABI_TYPE = (
    "(string,string,string,uint32,uint128,uint128,uint128,uint128,uint32,uint64,uint64,uint64,"
    "uint32,uint32,uint32,uint8,uint16,uint16,uint16,uint16,uint16,uint16,uint64,uint64,bytes32,uint16)"
)

__all__ = [
    "ChainEvent",
    "Participant",
    "Phase",
    "Receipt",
    "RewardPolicy",
    "Role",
    "RoundInfo",
    "RoundResult",
    "TaskParams",
    "TaskStatus",
    "Termination",
]


class TaskStatus(IntEnum):
    RECRUITING = 0
    RUNNING = 1
    TERMINATED = 2


class Phase(IntEnum):
    NONE = 0  # not running (recruiting, terminated) or not the current round
    TRAINING = 1
    COMMIT = 2
    REVEAL = 3
    FINALIZE = 4  # reveal over: finalizeRound may be called


class Role(IntEnum):
    NONE = 0
    WORKER = 1
    VALIDATOR = 2


class Termination(IntEnum):
    NONE = 0
    ROUND_LIMIT = 1
    TARGET_REACHED = 2
    STOPPED = 3
    CANCELLED = 4


@dataclass(frozen=True)
class TaskParams:
    """Task.Params, field for field and in the same order (the ABI tuple order).

    Fixed-point fields (qualification_threshold, tolerance, target_accuracy) use
    protocol.fixedpoint.SCALE; durations are seconds; amounts are wei.
    """

    model_arch: str
    aggregator: str  # protocol.aggregation.rule spec: "fedavg", "median:1", ...
    initial_model_cid: str
    rounds: int
    worker_reward_per_round: int
    validator_reward_per_round: int
    worker_deposit: int
    validator_stake: int
    committee_size: int
    qualification_threshold: int
    tolerance: int
    target_accuracy: int
    training_duration: int
    commit_duration: int
    reveal_duration: int
    reward_policy: RewardPolicy
    top_k: int
    slash_fraction_bps: int
    max_workers: int
    max_validators: int
    min_workers: int
    min_validators: int
    recruit_deadline: int
    max_samples_per_worker: int  # submitUpdate refuses a claimed sample count above it
    model_spec_hash: bytes = bytes(32)  # 32 bytes; all zero = the model spec is not pinned
    # Partial participation: workers drawn per round from its seed (protocol.sortition
    # .worker_selected); 0 = every worker, every round.
    workers_per_round: int = 0

    @property
    def escrow(self) -> int:
        """The exact value createTask requires: rounds * (worker + validator reward per round)."""
        return self.rounds * (self.worker_reward_per_round + self.validator_reward_per_round)

    def abi_hash(self) -> bytes:
        """keccak256(abi.encode(params)), the Task's paramsHash (it seeds the sortition)."""
        return keccak(abi_encode([PARAMS_ABI_TYPE], [self.to_abi()]))

    def to_abi(self) -> tuple[Any, ...]:
        return tuple(
            int(v) if isinstance(v, IntEnum) else v
            for v in (getattr(self, f.name) for f in fields(self))
        )

    @classmethod
    def from_abi(cls, values: tuple[Any, ...]) -> TaskParams:
        kwargs = dict(zip((f.name for f in fields(cls)), values, strict=True))
        kwargs["reward_policy"] = RewardPolicy(kwargs["reward_policy"])
        kwargs["model_spec_hash"] = bytes(kwargs["model_spec_hash"])
        return cls(**kwargs)


@dataclass(frozen=True)
class Participant:
    address: str
    peer_id: bytes
    encryption_key: bytes
    vrf_modulus: bytes
    registered_at: int


@dataclass(frozen=True)
class RoundInfo:
    """Task.roundInfo: the effective phase boundaries (a recorded early end wins over the
    deadline) and counters. Phase boundaries are exclusive ends in unix seconds."""

    phase: Phase
    seed: bytes
    total_stake: int
    training_start: int
    training_end: int
    commit_end: int
    reveal_end: int
    submissions: int
    commits: int
    reveals: int
    finalized: bool

    @classmethod
    def from_abi(cls, values: tuple[Any, ...]) -> RoundInfo:
        (phase, seed, *rest) = values
        return cls(Phase(phase), bytes(seed), *rest)


@dataclass(frozen=True)
class RoundResult:
    """Consensus and money of one finalized round, from its settlement events
    (ChainClient.round_result).

    Workers are the round's submitters in submission order, validators its committers in
    commit order; payouts include the share of slashed deposits or stakes."""

    finalized: bool
    workers: tuple[str, ...]
    consensus_scores: tuple[int, ...]
    accepted: tuple[bool, ...]
    worker_payouts: tuple[int, ...]
    worker_slashes: tuple[int, ...]
    validators: tuple[str, ...]
    revealed: tuple[bool, ...]
    agreed: tuple[bool, ...]
    validator_payouts: tuple[int, ...]
    validator_slashes: tuple[int, ...]
    reveals: int
    consensus_accuracy: int
    returned_to_escrow: int


@dataclass(frozen=True)
class ChainEvent:
    """A decoded log of one of our contracts."""

    name: str
    address: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str


@dataclass(frozen=True)
class Receipt:
    """A mined transaction of ours: what was called, what it cost, what it emitted."""

    function: str
    tx_hash: str
    block_number: int
    gas_used: int
    fee_wei: int  # gas_used * effective gas price: what the sender paid beyond any value
    contract_address: str | None = None
    events: tuple[ChainEvent, ...] = ()

    def event(self, name: str) -> ChainEvent:
        """The first event called `name` (raises KeyError naming what was emitted instead)."""
        for event in self.events:
            if event.name == name:
                return event
        raise KeyError(
            f"{self.function} emitted no {name}; emitted {[e.name for e in self.events]}"
        )
