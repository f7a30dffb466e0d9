"""Gossip message schemas: versioned, canonical msgpack, strict decoding.

A message is a msgpack map whose keys are, in this order: ``"v"`` (schema version),
``"t"`` (type tag) and then the dataclass fields in declaration order. Decoding accepts
exactly the bytes :func:`encode_message` produces (any other encoding of the same values,
such as another key order or a wider integer, is refused), so one message has one byte
form and cannot be re-encoded into a different gossip message id.

Wire forms: addresses and salts are msgpack bin; CIDs are canonical base32 CIDv1 text;
uint64 values are msgpack ints; scores (int256, wider than msgpack ints) are 32-byte
big-endian two's complement bin, the same bytes as their ABI encoding.

The dataclasses validate in their constructors, so an invalid message cannot be built
locally either. Every error is a MessageError naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import msgpack

from protocol.cid import parse_cid
from protocol.envelope import KEY_SIZE, envelope_size
from protocol.errors import CIDError, MessageError
from protocol.fixedpoint import SCALE
from protocol.keycert import KEY_BYTES
from protocol.limits import MAX_MEMBERS, MAX_MESSAGE_SIZE, MAX_VRF_PROOF_SIZE, MAX_WORKERS

__all__ = [
    "ADDRESS_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_VRF_PROOF_SIZE",
    "MAX_WORKERS",
    "SALT_SIZE",
    "TOPIC_KINDS",
    "VERSION",
    "CommitteeProof",
    "EvaluationScores",
    "KeyRelease",
    "MAX_KEY_RELEASE_SIZE",
    "Message",
    "ModelAnnouncement",
    "UnseatedProof",
    "decode_message",
    "decode_message_as",
    "encode_message",
    "key_release_context",
    "topic_for",
    "topic_name",
]

VERSION = 1
ADDRESS_SIZE = 20
SALT_SIZE = 32
UINT64_MAX = 2**64 - 1
INT256_MIN = -(2**255)
INT256_MAX = 2**255 - 1
INT256_SIZE = 32
TOPIC_KINDS = ("models", "committee", "scores")
# A content key sealed for every member of a task: workers, validators and the requester.
MAX_KEY_RELEASE_SIZE = envelope_size(KEY_SIZE, 2 * MAX_MEMBERS + 1)
# A model blob is a raw block (small) or a dag-pb root of a chunked DAG.
ALLOWED_CID_CODECS = ("raw", "dag-pb")


# --- field kinds: validate a local value, convert to and from the wire form ----------------


class _Field:
    """A field's schema. ``check`` validates a local value and returns its normal form."""

    def check(self, value: object, where: str) -> object:
        raise NotImplementedError

    def to_wire(self, value: Any) -> object:
        return value

    def from_wire(self, value: object, where: str) -> object:
        return self.check(value, where)


def _type_name(value: object) -> str:
    return type(value).__name__


class _UInt(_Field):
    def __init__(self, minimum: int = 0, maximum: int = UINT64_MAX) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: object, where: str) -> int:
        # bool is an int subclass in Python and msgpack; True is not a round number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{where}: expected an integer, got {_type_name(value)}")
        if not self.minimum <= value <= self.maximum:
            raise MessageError(
                f"{where}: {value} is outside the range {self.minimum}..{self.maximum}"
            )
        return int(value)


class _Bytes(_Field):
    def __init__(self, min_size: int, max_size: int, what: str) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self.what = what

    def check(self, value: object, where: str) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise MessageError(f"{where}: expected {self.what} as bytes, got {_type_name(value)}")
        if not self.min_size <= len(value) <= self.max_size:
            expected = (
                f"{self.min_size}"
                if self.min_size == self.max_size
                else f"{self.min_size}..{self.max_size}"
            )
            raise MessageError(f"{where}: {self.what} must be {expected} bytes, got {len(value)}")
        return bytes(value)


class _Bool(_Field):
    def check(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise MessageError(f"{where}: expected a bool, got {_type_name(value)}")
        return value


class _CidText(_Field):
    def check(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise MessageError(f"{where}: expected CID text, got {_type_name(value)}")
        try:
            cid = parse_cid(value)
        except CIDError as exc:
            raise MessageError(f"{where}: {exc}") from exc
        if cid.codec.name not in ALLOWED_CID_CODECS:
            raise MessageError(
                f"{where}: CID codec {cid.codec.name} is not one of {ALLOWED_CID_CODECS}"
            )
        canonical = cid.encode("base32")
        if value != canonical:
            raise MessageError(
                f"{where}: CID must be lowercase base32 text ({canonical}), as cid_of returns"
            )
        return value


class _Int256(_Field):
    """A signed 256-bit integer; on the wire 32 bytes big-endian two's complement."""

    def check(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{where}: expected an integer, got {_type_name(value)}")
        if not INT256_MIN <= value <= INT256_MAX:
            raise MessageError(f"{where}: {value} is outside the int256 range")
        return int(value)

    def to_wire(self, value: Any) -> bytes:
        return int(value).to_bytes(INT256_SIZE, "big", signed=True)

    def from_wire(self, value: object, where: str) -> int:
        if not isinstance(value, bytes) or len(value) != INT256_SIZE:
            raise MessageError(
                f"{where}: expected a {INT256_SIZE}-byte int256, got "
                + (f"{len(value)} bytes" if isinstance(value, bytes) else _type_name(value))
            )
        return int.from_bytes(value, "big", signed=True)


class _Tuple(_Field):
    def __init__(self, item: _Field, max_items: int) -> None:
        self.item = item
        self.max_items = max_items

    def _items(self, value: object, where: str) -> list[object] | tuple[object, ...]:
        if not isinstance(value, list | tuple):
            raise MessageError(f"{where}: expected a sequence, got {_type_name(value)}")
        if len(value) > self.max_items:
            raise MessageError(f"{where}: {len(value)} items, more than {self.max_items}")
        return value

    def check(self, value: object, where: str) -> tuple[object, ...]:
        items = self._items(value, where)
        return tuple(self.item.check(item, f"{where}[{i}]") for i, item in enumerate(items))

    def to_wire(self, value: Any) -> list[object]:
        return [self.item.to_wire(item) for item in value]

    def from_wire(self, value: object, where: str) -> tuple[object, ...]:
        items = self._items(value, where)
        return tuple(self.item.from_wire(item, f"{where}[{i}]") for i, item in enumerate(items))


_UINT64 = _UInt()
_ADDRESS = _Bytes(ADDRESS_SIZE, ADDRESS_SIZE, "a 20-byte address")


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MessageBase:
    TYPE_TAG: ClassVar[str]
    TOPIC_KIND: ClassVar[str]
    SCHEMA: ClassVar[Mapping[str, _Field]]

    def __post_init__(self) -> None:
        cls = type(self)
        for field in fields(self):
            normal = cls.SCHEMA[field.name].check(
                getattr(self, field.name), f"{cls.__name__}.{field.name}"
            )
            object.__setattr__(self, field.name, normal)
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Rules across fields; the field kinds check each field alone."""


@dataclass(frozen=True)
class _RoundMessage(_MessageBase):
    """Every message belongs to one round of one task on one chain; these fields come first."""

    chain_id: int
    task: bytes
    round: int


_ROUND_SCHEMA: Mapping[str, _Field] = {"chain_id": _UINT64, "task": _ADDRESS, "round": _UINT64}


@dataclass(frozen=True)
class ModelAnnouncement(_RoundMessage):
    """A worker's trained update for a round: fetch the blob by ``cid``."""

    worker: bytes
    cid: str
    n_samples: int

    TYPE_TAG: ClassVar[str] = "model"
    TOPIC_KIND: ClassVar[str] = "models"
    SCHEMA: ClassVar[Mapping[str, _Field]] = {
        **_ROUND_SCHEMA,
        "worker": _ADDRESS,
        "cid": _CidText(),
        # FedAvg weighs by sample count; zero samples would be a free ride.
        "n_samples": _UInt(minimum=1),
    }


@dataclass(frozen=True)
class CommitteeProof(_RoundMessage):
    """A validator's VRF proof that it sits on a round's committee."""

    validator: bytes
    vrf_proof: bytes

    TYPE_TAG: ClassVar[str] = "committee"
    TOPIC_KIND: ClassVar[str] = "committee"
    SCHEMA: ClassVar[Mapping[str, _Field]] = {
        **_ROUND_SCHEMA,
        "validator": _ADDRESS,
        "vrf_proof": _Bytes(1, MAX_VRF_PROOF_SIZE, "a VRF proof"),
    }


@dataclass(frozen=True)
class UnseatedProof(_RoundMessage):
    """A validator's VRF proof for a round that shows it NOT seated on the committee: with
    one from every validator that did not commit, anyone can end the commit phase early
    (``Task.endCommitPhase``). Registered VRF keys are 2048-bit, so a proof is exactly
    ``KEY_BYTES`` long."""

    validator: bytes
    vrf_proof: bytes

    TYPE_TAG: ClassVar[str] = "unseated"
    TOPIC_KIND: ClassVar[str] = "committee"
    SCHEMA: ClassVar[Mapping[str, _Field]] = {
        **_ROUND_SCHEMA,
        "validator": _ADDRESS,
        "vrf_proof": _Bytes(KEY_BYTES, KEY_BYTES, "a VRF proof of a registered key"),
    }


@dataclass(frozen=True)
class EvaluationScores(_RoundMessage):
    """A committee member's revealed manifest: per-worker scores and accept bits."""

    validator: bytes
    workers: tuple[bytes, ...]
    scores: tuple[int, ...]
    accepts: tuple[bool, ...]
    global_accuracy: int
    salt: bytes

    TYPE_TAG: ClassVar[str] = "scores"
    TOPIC_KIND: ClassVar[str] = "scores"
    SCHEMA: ClassVar[Mapping[str, _Field]] = {
        **_ROUND_SCHEMA,
        "validator": _ADDRESS,
        "workers": _Tuple(_ADDRESS, MAX_WORKERS),
        "scores": _Tuple(_Int256(), MAX_WORKERS),
        "accepts": _Tuple(_Bool(), MAX_WORKERS),
        "global_accuracy": _UInt(0, SCALE),
        "salt": _Bytes(SALT_SIZE, SALT_SIZE, "a 32-byte salt"),
    }

    def _check_consistency(self) -> None:
        if not len(self.workers) == len(self.scores) == len(self.accepts):
            raise MessageError(
                f"EvaluationScores: workers, scores and accepts must have one entry per "
                f"worker, got {len(self.workers)}, {len(self.scores)}, {len(self.accepts)}"
            )
        seen: set[bytes] = set()
        for index, worker in enumerate(self.workers):
            if worker in seen:
                raise MessageError(
                    f"EvaluationScores.workers[{index}]: duplicate worker 0x{worker.hex()}"
                )
            seen.add(worker)


@dataclass(frozen=True)
class KeyRelease(_RoundMessage):
    """A worker's release, once the round's training phase has closed, of the content key
    of its update ``cid``: ``sealed_key`` is that 32-byte key in an envelope for every
    member of the task (its associated data: ``key_release_context``), so each member can
    open the update for local averaging, and nobody outside the task can."""

    worker: bytes
    cid: str
    sealed_key: bytes

    TYPE_TAG: ClassVar[str] = "key"
    TOPIC_KIND: ClassVar[str] = "models"
    SCHEMA: ClassVar[Mapping[str, _Field]] = {
        **_ROUND_SCHEMA,
        "worker": _ADDRESS,
        "cid": _CidText(),
        "sealed_key": _Bytes(1, MAX_KEY_RELEASE_SIZE, "a sealed content key"),
    }


def key_release_context(task: bytes, round: int, worker: bytes, cid: str) -> bytes:
    """The associated data of a key release's envelope: it opens only as the key of this
    worker's update `cid` in this round of this task, never replayed for another."""
    return b"fl-node key release v1|" + task + round.to_bytes(8, "big") + worker + cid.encode()


Message = ModelAnnouncement | CommitteeProof | UnseatedProof | EvaluationScores | KeyRelease
_MESSAGE_CLASSES = (ModelAnnouncement, CommitteeProof, UnseatedProof, EvaluationScores, KeyRelease)
_MESSAGE_TYPES: dict[str, type[_MessageBase]] = {cls.TYPE_TAG: cls for cls in _MESSAGE_CLASSES}
_HEADER_KEYS = ("v", "t")


# --- encoding ---------------------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    """The canonical msgpack bytes of a message."""
    if not isinstance(message, _MESSAGE_CLASSES):
        raise MessageError(f"cannot encode {_type_name(message)}: not a gossip message")
    wire: dict[str, object] = {"v": VERSION, "t": message.TYPE_TAG}
    for field in fields(message):
        wire[field.name] = message.SCHEMA[field.name].to_wire(getattr(message, field.name))
    data: bytes = msgpack.packb(wire, use_bin_type=True)
    if len(data) > MAX_MESSAGE_SIZE:  # the field bounds keep every message far below this
        raise MessageError(f"encoded message is {len(data)} bytes, over {MAX_MESSAGE_SIZE}")
    return data


def _unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData as exc:
        raise MessageError("trailing bytes after the msgpack message") from exc
    # msgpack raises a spread of ValueError/TypeError subclasses on hostile input; any
    # failure to parse means the same thing here.
    except Exception as exc:
        raise MessageError(f"not valid msgpack: {_type_name(exc)} {exc}".rstrip()) from exc


def decode_message(data: bytes) -> Message:
    """Decode and validate gossip bytes; MessageError names what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError(f"message must be bytes, got {_type_name(data)}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageError(
            f"message is {len(data)} bytes, over MAX_MESSAGE_SIZE={MAX_MESSAGE_SIZE}"
        )
    wire = _unpack(data)
    if not isinstance(wire, dict):
        raise MessageError(f"message must be a msgpack map, got {_type_name(wire)}")
    if "v" not in wire:
        raise MessageError("message has no version field 'v'")
    version = wire["v"]
    if type(version) is not int or version != VERSION:  # not True, not 1.0
        raise MessageError(f"unknown message version {version!r}; this node reads {VERSION}")
    tag = wire.get("t")
    cls = _MESSAGE_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise MessageError(
            f"unknown message type {tag!r}; expected one of {sorted(_MESSAGE_TYPES)}"
        )
    expected = [*_HEADER_KEYS, *cls.SCHEMA]
    missing = [key for key in expected if key not in wire]
    if missing:
        raise MessageError(f"{cls.__name__}: missing field(s) {missing}")
    extra = [key for key in wire if key not in expected]
    if extra:
        raise MessageError(f"{cls.__name__}: unexpected field(s) {extra!r}")
    values = {
        name: kind.from_wire(wire[name], f"{cls.__name__}.{name}")
        for name, kind in cls.SCHEMA.items()
    }
    message: Message = cls(**values)  # type: ignore[assignment]
    if encode_message(message) != data:
        raise MessageError(
            f"{cls.__name__}: not in canonical form (key order or integer width differs from "
            "encode_message's output)"
        )
    return message


_M = TypeVar("_M", ModelAnnouncement, CommitteeProof, UnseatedProof, EvaluationScores, KeyRelease)


def decode_message_as(data: bytes, cls: type[_M]) -> _M:
    """Decode a message that must be of type ``cls``."""
    message = decode_message(data)
    if not isinstance(message, cls):
        raise MessageError(f"expected a {cls.__name__} message, got {type(message).__name__}")
    return message


# --- topics -----------------------------------------------------------------------------------


def topic_name(chain_id: int, task: bytes, kind: str) -> str:
    """``/fl/<chainId>/<0x-lowercase-task>/<models|committee|scores>``."""
    chain_id = _UINT64.check(chain_id, "topic chain_id")
    task = _ADDRESS.check(task, "topic task")
    if kind not in TOPIC_KINDS:
        raise MessageError(f"unknown topic kind {kind!r}; expected one of {TOPIC_KINDS}")
    return f"/fl/{chain_id}/0x{task.hex()}/{kind}"


def topic_for(message: Message) -> str:
    """The topic a message is published on."""
    return topic_name(message.chain_id, message.task, message.TOPIC_KIND)
