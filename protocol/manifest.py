"""The exact byte-level commitments the Task contract checks, computed in Python, and the
encoding of a manifest's verdicts.

- update_commitment(cid, worker) == keccak256(abi.encodePacked(string cid, address worker)),
  what a worker passes to ``submitUpdate``;
- manifest_commitment(...) == keccak256(abi.encode(address task, uint256 round,
  address validator, address[] workers, int256[] scores, uint8[] verdicts,
  uint256 globalAccuracy, bytes32 salt)), what a committee member passes to
  ``commitManifest`` and later opens with ``revealManifest``.

A manifest gives each worker a ``WorkerVerdict``: REJECT, ACCEPT or UNAVAILABLE (the validator
could not fetch or open the update by its deadline). A bool is read as ACCEPT (True) or
REJECT (False), and encodes to the same bytes, so accept/reject manifests keep their
commitments. The settlement rule for each verdict is in protocol/rewards.py.

Pure: no I/O. The salt is an input (the caller draws 32 random bytes and keeps them until the
reveal). The bounds below are the contract's; a manifest outside them would revert on reveal,
so it is refused here before it is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from eth_abi import encode as abi_encode
from eth_utils import keccak

from protocol.errors import ProtocolError
from protocol.limits import MAX_ABS_SCORE, MAX_ACCURACY

__all__ = [
    "MAX_ABS_SCORE",
    "MAX_ACCURACY",
    "ManifestError",
    "WorkerVerdict",
    "check_manifest",
    "manifest_commitment",
    "to_verdicts",
    "update_commitment",
]

SALT_LENGTH: int = 32
ADDRESS_LENGTH: int = 20


class WorkerVerdict(IntEnum):
    """A manifest's verdict on one worker: RewardMath.REJECT / ACCEPT / UNAVAILABLE."""

    REJECT = 0
    ACCEPT = 1
    UNAVAILABLE = 2  # could not fetch or open the update in time; its score is ignored


class ManifestError(ProtocolError):
    """A manifest or commitment input does not fit what the Task contract accepts."""


def _address(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != ADDRESS_LENGTH:
        raise ManifestError(
            f"{what} must be a 20-byte address (bytes), got {type(value).__name__} "
            f"of length {len(value) if hasattr(value, '__len__') else '?'}; "
            "convert hex with bytes.fromhex(addr.removeprefix('0x'))"
        )
    return bytes(value)


def update_commitment(cid: str, worker: bytes) -> bytes:
    """keccak256(abi.encodePacked(cid, worker)): the worker binds its CID to its own address,
    so a copycat cannot submit someone else's commitment as its own."""
    if not isinstance(cid, str) or not cid:
        raise ManifestError("cid must be a non-empty string (the model blob's CIDv1 text form)")
    return keccak(cid.encode("utf-8") + _address(worker, "worker"))


def to_verdicts(verdicts: Sequence[WorkerVerdict | bool | int]) -> tuple[WorkerVerdict, ...]:
    """The verdicts as WorkerVerdict: a bool is ACCEPT (True) or REJECT (False), an int must
    be one of the enum's values. Raises ManifestError naming the bad entry."""
    found = []
    for index, verdict in enumerate(verdicts):
        if isinstance(verdict, bool):
            found.append(WorkerVerdict.ACCEPT if verdict else WorkerVerdict.REJECT)
            continue
        if not isinstance(verdict, int) or verdict not in WorkerVerdict._value2member_map_:
            raise ManifestError(
                f"verdicts[{index}] = {verdict!r} is not a verdict: use "
                "protocol.manifest.WorkerVerdict (REJECT, ACCEPT, UNAVAILABLE) or a bool"
            )
        found.append(WorkerVerdict(verdict))
    return tuple(found)


def check_manifest(
    workers: Sequence[bytes],
    scores: Sequence[int],
    verdicts: Sequence[WorkerVerdict | bool | int],
    global_accuracy: int,
) -> None:
    """Raise ManifestError if the contract would refuse this manifest on reveal."""
    if not (len(workers) == len(scores) == len(verdicts)):
        raise ManifestError(
            f"workers, scores and verdicts must have equal lengths, got "
            f"{len(workers)}, {len(scores)}, {len(verdicts)}"
        )
    for index, worker in enumerate(workers):
        _address(worker, f"workers[{index}]")
    for index, score in enumerate(scores):
        if isinstance(score, bool) or not isinstance(score, int):
            raise ManifestError(
                f"scores[{index}] must be a fixed-point int (protocol.fixedpoint.to_fixed)"
            )
        if abs(score) > MAX_ABS_SCORE:
            raise ManifestError(f"scores[{index}] = {score} is outside ±{MAX_ABS_SCORE}")
    to_verdicts(verdicts)
    if isinstance(global_accuracy, bool) or not isinstance(global_accuracy, int):
        raise ManifestError("global_accuracy must be a fixed-point int")
    if not 0 <= global_accuracy <= MAX_ACCURACY:
        raise ManifestError(f"global_accuracy = {global_accuracy} is outside [0, 2**128]")


def manifest_commitment(
    task: bytes,
    round: int,
    validator: bytes,
    workers: Sequence[bytes],
    scores: Sequence[int],
    verdicts: Sequence[WorkerVerdict | bool | int],
    global_accuracy: int,
    salt: bytes,
) -> bytes:
    """keccak256(abi.encode(task, round, validator, workers, scores, verdicts, globalAccuracy, salt)).

    Binding the task, round and validator stops a reveal from being replayed elsewhere;
    the salt hides the manifest until the reveal phase.
    """
    if isinstance(round, bool) or not isinstance(round, int) or round < 1:
        raise ManifestError(f"round must be an int >= 1, got {round!r}")
    if not isinstance(salt, bytes | bytearray) or len(salt) != SALT_LENGTH:
        raise ManifestError(
            "salt must be exactly 32 bytes (e.g. os.urandom(32)), kept until the reveal"
        )
    check_manifest(workers, scores, verdicts, global_accuracy)
    encoded = abi_encode(
        ["address", "uint256", "address", "address[]", "int256[]", "uint8[]", "uint256", "bytes32"],
        [
            _address(task, "task"),
            round,
            _address(validator, "validator"),
            [bytes(w) for w in workers],
            list(scores),
            [int(v) for v in to_verdicts(verdicts)],
            global_accuracy,
            bytes(salt),
        ],
    )
    return keccak(encoded)
