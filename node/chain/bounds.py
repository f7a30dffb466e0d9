"""Range checks at the chain boundary: every integer a contract event or view hands to the node
is checked against protocol.limits before numpy, torch or fixed-width code sees it.

Our contracts never emit a value outside these ranges (they bound what they accept, and
tests/contracts check the constants), so a value outside them means the address is not one of
our contracts, or a bug: the node stops with ChainValueOutOfRange naming the event or view,
the field and the range, instead of failing later in arithmetic far from the cause.
Every integer field must have a declared range: an undeclared one is refused too, so a new
event field cannot slip through unchecked (tests/contracts/test_bounds.py walks the ABIs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from node.chain.errors import ChainError
from protocol import limits
from protocol.limits import IntRange
from protocol.rewards import RewardPolicy

__all__ = [
    "EVENT_BOUNDS",
    "VIEW_BOUNDS",
    "ChainValueOutOfRange",
    "check_event",
    "check_values",
    "check_view",
]


class ChainValueOutOfRange(ChainError):
    """A contract event or view returned an integer outside the protocol's range for it."""

    def __init__(self, source: str, field: str, value: Any, allowed: IntRange | None) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.allowed = allowed
        where = f"{source}.{field}"
        if allowed is None:
            detail = f"{where} = {value!r} has no declared range in node/chain/bounds.py"
        else:
            detail = f"{where} = {value!r} is outside {allowed.describe()}"
        super().__init__(
            f"{detail}; refusing it before it reaches the node's arithmetic (is the address "
            "one of fl-node's contracts, deployed from contracts/artifacts?)"
        )


_ROUND = limits.ROUND
_WEI = limits.WEI
_COUNT = limits.COUNT
_TIME = limits.TIMESTAMP
_PHASE = IntRange(0, 4)  # Task.Phase
_ROLE = IntRange(0, 2)  # Task.Role
_TERMINATION = IntRange(0, 4)  # Task.Termination
_VERDICT = IntRange(0, 2)  # protocol.manifest.WorkerVerdict
_U16 = IntRange(0, limits.MAX_UINT16)
_U32 = IntRange(0, limits.MAX_UINT32)
_U64 = IntRange(0, limits.MAX_UINT64)
_AMOUNT = IntRange(0, limits.MAX_AMOUNT)

EVENT_BOUNDS: dict[str, dict[str, IntRange]] = {
    "TaskInitialized": {"escrow": _WEI},
    "MemberJoined": {"role": _ROLE, "amount": _WEI},
    "MemberLeft": {"role": _ROLE, "refund": _WEI},
    "TaskStarted": {"workers": _COUNT, "validators": _COUNT},
    "RoundStarted": {
        "round": _ROUND,
        "totalStake": _WEI,
        "trainingEnd": _TIME,
        "commitEnd": _TIME,
        "revealEnd": _TIME,
    },
    "PhaseEndedEarly": {"round": _ROUND, "nextPhase": _PHASE, "timestamp": _TIME},
    "UpdateSubmitted": {"round": _ROUND, "nSamples": limits.SAMPLES},
    "ManifestCommitted": {"round": _ROUND},
    "ManifestRevealed": {
        "round": _ROUND,
        "scores": limits.SCORE,
        "verdicts": _VERDICT,
        "globalAccuracy": limits.ACCURACY,
    },
    "WorkerSettled": {
        "round": _ROUND,
        "consensusScore": limits.SCORE,
        "payout": _WEI,
        "slash": _WEI,
    },
    "ValidatorSettled": {"round": _ROUND, "payout": _WEI, "slash": _WEI},
    "RoundFinalized": {
        "round": _ROUND,
        "reveals": _COUNT,
        "consensusAccuracy": limits.ACCURACY,
        "returnedToEscrow": _WEI,
        "escrowLeft": _WEI,
    },
    "TaskTerminated": {"reason": _TERMINATION, "round": _ROUND},
    "Withdrawn": {"amount": _WEI},
    "EscrowReclaimed": {"amount": _WEI, "escrowLeft": _WEI},
    "TaskCreated": {"index": _U64, "escrow": _WEI},
}

# Views, by the contract function's name; fields by the Python names the client gives them.
VIEW_BOUNDS: dict[str, dict[str, IntRange]] = {
    "params": {
        "rounds": IntRange(1, limits.MAX_ROUNDS),
        "worker_reward_per_round": _AMOUNT,
        "validator_reward_per_round": _AMOUNT,
        "worker_deposit": _AMOUNT,
        "validator_stake": _AMOUNT,
        "committee_size": _U32,
        "qualification_threshold": _U64,
        "tolerance": _U64,
        "target_accuracy": _U64,
        "training_duration": _U32,
        "commit_duration": _U32,
        "reveal_duration": _U32,
        "reward_policy": IntRange(0, max(RewardPolicy)),
        "top_k": _U16,
        "slash_fraction_bps": IntRange(0, limits.BPS),
        "max_workers": IntRange(0, limits.MAX_MEMBERS),
        "max_validators": IntRange(0, limits.MAX_MEMBERS),
        "min_workers": IntRange(0, limits.MAX_MEMBERS),
        "min_validators": IntRange(0, limits.MAX_MEMBERS),
        "recruit_deadline": _U64,
        "max_samples_per_worker": IntRange(1, limits.MAX_SAMPLES_PER_WORKER),
        "workers_per_round": IntRange(0, limits.MAX_MEMBERS),
    },
    "roundInfo": {
        "phase": _PHASE,
        "total_stake": _WEI,
        "training_start": _TIME,
        "training_end": _TIME,
        "commit_end": _TIME,
        "reveal_end": _TIME,
        "submissions": _COUNT,
        "commits": _COUNT,
        "reveals": _COUNT,
    },
    # updateCommitment returns (bytes32(0), 0) for a worker that did not submit.
    "updateCommitment": {"n_samples": IntRange(0, limits.MAX_SAMPLES_PER_WORKER)},
    "status": {"status": IntRange(0, 2)},
    "termination": {"termination": _TERMINATION},
    "phase": {"phase": _PHASE},
    "roleOf": {"role": _ROLE},
    "currentRound": {"round": _ROUND},
    "escrow": {"escrow": _WEI},
    "books": {"escrow": _WEI, "locked": _WEI, "credited": _WEI},
    "totalStake": {"total_stake": _WEI},
    "lockedDeposit": {"amount": _WEI},
    "stakeOf": {"amount": IntRange(0, limits.MAX_STAKE)},
    "balanceOf": {"amount": _WEI},
    "withdrawable": {"amount": _WEI},
    "taskCount": {"count": _U64},
    "participant": {"registered_at": _TIME},
}


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_values(
    source: str, values: Iterable[tuple[str, Any]], bounds: Mapping[str, IntRange]
) -> None:
    """Raise ChainValueOutOfRange for the first integer (or integer in a list) of `values`
    outside its range in `bounds`, or without one."""
    for field, value in values:
        items = value if isinstance(value, list | tuple) else (value,)
        for index, item in enumerate(items):
            if not _is_integer(item):
                continue
            allowed = bounds.get(field)
            label = f"{field}[{index}]" if isinstance(value, list | tuple) else field
            if allowed is None or not allowed.contains(item):
                raise ChainValueOutOfRange(source, label, item, allowed)


def check_event(name: str, args: Mapping[str, Any]) -> None:
    """Check a decoded event of ours (see EVENT_BOUNDS)."""
    check_values(name, args.items(), EVENT_BOUNDS.get(name, {}))


def check_view(function: str, **values: Any) -> None:
    """Check what the view `function` returned, by field name (see VIEW_BOUNDS)."""
    check_values(function, values.items(), VIEW_BOUNDS[function])
