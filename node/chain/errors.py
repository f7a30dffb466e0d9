"""Chain errors: one base class, and one class for a contract revert decoded from any backend."""

from __future__ import annotations

from typing import Any


class ChainError(RuntimeError):
    """Talking to the chain failed (connection, configuration, a timed-out receipt, ...)."""


class ChainRevert(ChainError):
    """The contract reverted. ``name`` is its custom error (``"WrongPhase"``), or ``"Error"`` for a
    revert string, ``"Panic"`` for an assert/overflow, ``"Unknown"`` when the data matches no ABI.
    ``args`` maps the error's parameter names to decoded values."""

    def __init__(self, function: str, name: str, args: dict[str, Any], data: bytes) -> None:
        self.function = function
        self.name = name
        self.args_by_name = args
        self.data = data
        rendered = ", ".join(f"{key}={value!r}" for key, value in args.items())
        super().__init__(f"{function} reverted with {name}({rendered})")

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(self.args_by_name.values())


class TransactionCannotSucceed(ChainError):
    """A transaction that no retry and no waiting can make succeed: the sender cannot pay for
    it, or the contract refuses it for a reason fixed by the sender's own inputs. A node that
    meets one should stop at once with ``reason`` rather than retry until a deadline."""

    @property
    def reason(self) -> str:
        return str(self)


class InsufficientFunds(TransactionCannotSucceed):
    """The sender's balance does not cover value + gas for the transaction."""

    def __init__(self, function: str, address: str, needed: int, balance: int) -> None:
        self.function = function
        self.address = address
        self.needed = needed
        self.balance = balance
        super().__init__(
            f"{function}: {address} holds {balance} wei but the transaction needs {needed} wei "
            f"(value + gas limit x max fee); fund the account with at least {needed - balance} "
            "more wei"
        )


class DeterministicRevert(ChainRevert, TransactionCannotSucceed):
    """A revert whose custom error depends only on the transaction's own inputs (see
    DETERMINISTIC_REVERTS): sending it again, now or later, reverts again."""


# Custom errors that no retry fixes. Left out on purpose: errors of timing (WrongPhase,
# WrongRound, WrongStatus, RecruitmentClosed, ...), the "already done" errors a retried
# transaction meets when its first attempt landed (AlreadySubmitted, AlreadyRegistered, ...),
# and the normal outcomes of taking part (NotSelected, NotCommitteeMember, TaskFull,
# NotEnoughMembers, NothingToWithdraw).
DETERMINISTIC_REVERTS: frozenset[str] = frozenset(
    {
        # Task
        "WrongEscrow",
        "WrongDeposit",
        "StakeOutOfRange",
        "NotRegistered",
        "NotRequester",
        "RequesterCannotJoin",
        "NotWorker",
        "EmptyValidationSet",
        "EmptyCommitment",
        "SamplesOutOfRange",
        "LengthMismatch",
        "ManifestWorkersMismatch",
        "ScoreOutOfRange",
        "AccuracyOutOfRange",
        "VerdictOutOfRange",
        "RevealMismatch",
        "ExceedsUnspentEscrow",
        # Registry
        "EmptyPeerId",
        "PeerIdTooLong",
        "PeerIdTaken",
        "EmptyEncryptionKey",
        "InvalidParameter",
        # VRF (keys and proofs)
        "KeySizeInvalid",
        "ModulusEven",
        "ModulusHasSmallFactor",
        "CertificateLengthInvalid",
        "CertificateRootInvalid",
        "ProofLengthMismatch",
        "ProofOutOfRange",
        "ProofInvalid",
        # Solidity's assert/overflow: a bug, the same on every attempt
        "Panic",
    }
)


def revert_error(function: str, name: str, args: dict[str, Any], data: bytes) -> ChainRevert:
    """The exception for a decoded revert: DeterministicRevert for the errors no retry fixes."""
    kind = DeterministicRevert if name in DETERMINISTIC_REVERTS else ChainRevert
    return kind(function, name, args, data)
