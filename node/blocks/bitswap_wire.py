"""Bitswap 1.2.0 messages: the protobuf of https://specs.ipfs.tech/bitswap-protocol/,
encoded and decoded by hand (pure: no I/O).

Why by hand and not generated code: every count and length here comes from a peer, and a
hand-written decoder checks each bound as it reads (entries per wantlist, blocks per
message, CID and block lengths) instead of materialising an unbounded message first.

The schema (proto3; field numbers are what is on the wire)::

    message Message {
      message Wantlist {
        enum WantType { Block = 0; Have = 1; }
        message Entry {
          bytes block = 1;         // binary CID
          int32 priority = 2;
          bool cancel = 3;
          WantType wantType = 4;
          bool sendDontHave = 5;
        }
        repeated Entry entries = 1;
        bool full = 2;
      }
      message Block { bytes prefix = 1; bytes data = 2; }   // prefix: CID without digest
      enum BlockPresenceType { Have = 0; DontHave = 1; }
      message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; }
      Wantlist wantlist = 1;
      repeated bytes blocks = 2;            // bitswap 1.0.0 (CIDv0 blocks): skipped
      repeated Block payload = 3;
      repeated BlockPresence blockPresences = 4;
      int32 pendingBytes = 5;
    }

On a stream, each message is prefixed by its length as an unsigned varint; the spec caps
a message at 4 MiB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from protocol.errors import CIDError

from .cids import cid_from_binary, cid_info
from .unixfs import MAX_BLOCK_SIZE, _key, _len_field, encode_varint

__all__ = [
    "MAX_CID_BYTES",
    "SPEC_MAX_MESSAGE_BYTES",
    "BitswapMessage",
    "BitswapProtocolError",
    "PayloadBlock",
    "Presence",
    "PresenceType",
    "WantEntry",
    "WantType",
    "block_cid",
    "cid_prefix",
    "decode_message",
    "encode_message",
    "frame",
    "uvarint",
]

SPEC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_CID_BYTES = 96

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_CODECS = {"raw": 0x55, "dag-pb": 0x70}
_SHA2_256 = 0x12
_SHA2_256_LENGTH = 32


class BitswapProtocolError(ValueError):
    """A peer's bitswap bytes break the wire format or one of our bounds."""


class WantType(IntEnum):
    BLOCK = 0
    HAVE = 1


class PresenceType(IntEnum):
    HAVE = 0
    DONT_HAVE = 1


@dataclass(frozen=True)
class WantEntry:
    """One wantlist entry; ``cid`` is the binary CID exactly as the peer sent it."""

    cid: bytes
    priority: int = 1
    cancel: bool = False
    want_type: WantType = WantType.BLOCK
    send_dont_have: bool = False


@dataclass(frozen=True)
class PayloadBlock:
    """A block as bitswap 1.1+ sends it: the CID's prefix (no digest) and the bytes."""

    prefix: bytes
    data: bytes


@dataclass(frozen=True)
class Presence:
    cid: bytes
    type: PresenceType


@dataclass(frozen=True)
class BitswapMessage:
    wantlist: tuple[WantEntry, ...] = ()
    full: bool = False
    payload: tuple[PayloadBlock, ...] = ()
    presences: tuple[Presence, ...] = ()
    pending_bytes: int = 0
    skipped_v100_blocks: int = field(default=0, compare=False)


# --- encode -------------------------------------------------------------------------------


def uvarint(value: int) -> bytes:
    """Unsigned LEB128 (the multiformats unsigned-varint)."""
    if value < 0:
        raise ValueError(f"uvarint of a negative number: {value}")
    return encode_varint(value)


def _int_field(number: int, value: int) -> bytes:
    # proto3 omits defaults; negative int32s are sign-extended to 64 bits on the wire
    if value == 0:
        return b""
    return _key(number, _VARINT) + uvarint(value & 0xFFFFFFFFFFFFFFFF)


def _encode_entry(entry: WantEntry) -> bytes:
    return (
        _len_field(1, entry.cid)
        + _int_field(2, entry.priority)
        + _int_field(3, int(entry.cancel))
        + _int_field(4, int(entry.want_type))
        + _int_field(5, int(entry.send_dont_have))
    )


def encode_message(message: BitswapMessage) -> bytes:
    """The protobuf bytes of ``message`` (without the length prefix)."""
    out = bytearray()
    if message.wantlist or message.full:
        wantlist = b"".join(_len_field(1, _encode_entry(e)) for e in message.wantlist)
        wantlist += _int_field(2, int(message.full))
        out += _len_field(1, wantlist)
    for block in message.payload:
        out += _len_field(3, _len_field(1, block.prefix) + _len_field(2, block.data))
    for presence in message.presences:
        out += _len_field(4, _len_field(1, presence.cid) + _int_field(2, int(presence.type)))
    out += _int_field(5, message.pending_bytes)
    return bytes(out)


def frame(message: BitswapMessage) -> bytes:
    """``message`` as it goes on a stream: varint length, then the protobuf."""
    body = encode_message(message)
    return uvarint(len(body)) + body


# --- decode -------------------------------------------------------------------------------


class _Reader:
    """Reads protobuf fields from ``buf``; every length is checked against what is left."""

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.what = what

    def varint(self) -> int:
        value = 0
        for shift in range(0, 64, 7):
            if self.pos >= len(self.buf):
                raise BitswapProtocolError(f"truncated varint in a bitswap {self.what}")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise BitswapProtocolError(f"varint over 64 bits in a bitswap {self.what}")

    def fields(self) -> Iterator[tuple[int, int, int | memoryview]]:
        """(field number, wire type, value); fixed-width values of unknown fields are skipped."""
        while self.pos < len(self.buf):
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise BitswapProtocolError(f"field number 0 in a bitswap {self.what}")
            if wire == _VARINT:
                yield number, wire, self.varint()
            elif wire == _LEN:
                length = self.varint()
                if length > len(self.buf) - self.pos:
                    raise BitswapProtocolError(
                        f"field {number} of a bitswap {self.what} claims {length} bytes, "
                        f"{len(self.buf) - self.pos} are left"
                    )
                yield number, wire, self.buf[self.pos : self.pos + length]
                self.pos += length
            elif wire in (_I64, _I32):
                width = 8 if wire == _I64 else 4
                if width > len(self.buf) - self.pos:
                    raise BitswapProtocolError(f"truncated fixed-width field in a bitswap {self.what}")
                self.pos += width
            else:
                raise BitswapProtocolError(f"wire type {wire} (groups) in a bitswap {self.what}")


def _expect(wire: int, want: int, number: int, what: str) -> None:
    if wire != want:
        raise BitswapProtocolError(f"field {number} of a bitswap {what} has wire type {wire}, expected {want}")


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _cid_bytes(value: memoryview, what: str) -> bytes:
    if not 0 < len(value) <= MAX_CID_BYTES:
        raise BitswapProtocolError(f"a CID of {len(value)} bytes in a bitswap {what}")
    return bytes(value)


def _decode_entry(buf: memoryview) -> WantEntry:
    cid = b""
    priority, cancel, want_type, send_dont_have = 1, False, WantType.BLOCK, False
    for number, wire, value in _Reader(buf, "wantlist entry").fields():
        if number == 1:
            _expect(wire, _LEN, number, "wantlist entry")
            cid = _cid_bytes(value, "wantlist entry")  # type: ignore[arg-type]
        elif number in (2, 3, 4, 5):
            _expect(wire, _VARINT, number, "wantlist entry")
            assert isinstance(value, int)
            if number == 2:
                priority = _int32(value)
            elif number == 3:
                cancel = bool(value)
            elif number == 4:
                if value not in (0, 1):
                    raise BitswapProtocolError(f"unknown want type {value} in a wantlist entry")
                want_type = WantType(value)
            else:
                send_dont_have = bool(value)
    if not cid:
        raise BitswapProtocolError("a wantlist entry without a CID")
    return WantEntry(cid, priority, cancel, want_type, send_dont_have)


def _decode_block(buf: memoryview) -> PayloadBlock:
    prefix, data = b"", b""
    for number, wire, value in _Reader(buf, "payload block").fields():
        if number in (1, 2):
            _expect(wire, _LEN, number, "payload block")
            assert isinstance(value, memoryview)
            if number == 1:
                if len(value) > 16:
                    raise BitswapProtocolError(f"a CID prefix of {len(value)} bytes")
                prefix = bytes(value)
            else:
                if len(value) > MAX_BLOCK_SIZE:
                    raise BitswapProtocolError(
                        f"a {len(value)}-byte block, over the {MAX_BLOCK_SIZE}-byte block limit"
                    )
                data = bytes(value)
    if not prefix:
        raise BitswapProtocolError("a payload block without a CID prefix")
    return PayloadBlock(prefix, data)


def _decode_presence(buf: memoryview) -> Presence:
    cid, kind = b"", PresenceType.HAVE
    for number, wire, value in _Reader(buf, "block presence").fields():
        if number == 1:
            _expect(wire, _LEN, number, "block presence")
            cid = _cid_bytes(value, "block presence")  # type: ignore[arg-type]
        elif number == 2:
            _expect(wire, _VARINT, number, "block presence")
            if value not in (0, 1):
                raise BitswapProtocolError(f"unknown block presence type {value}")
            kind = PresenceType(value)
    if not cid:
        raise BitswapProtocolError("a block presence without a CID")
    return Presence(cid, kind)


def decode_message(buf: bytes | memoryview, *, max_entries: int = 1024,
                   max_blocks: int = 64) -> BitswapMessage:
    """Parse one message body; BitswapProtocolError on malformed bytes or over a bound.

    ``max_entries`` bounds wantlist entries and block presences each; ``max_blocks``
    bounds payload blocks (each at most ``MAX_BLOCK_SIZE`` bytes). Unknown fields are
    skipped, as protobuf requires; bitswap 1.0.0 ``blocks`` (CIDv0-only) are counted
    and skipped.
    """
    entries: list[WantEntry] = []
    full = False
    payload: list[PayloadBlock] = []
    presences: list[Presence] = []
    pending = 0
    skipped = 0
    for number, wire, value in _Reader(buf, "message").fields():
        if number == 1:
            _expect(wire, _LEN, number, "message")
            for sub, sub_wire, sub_value in _Reader(value, "wantlist").fields():  # type: ignore[arg-type]
                if sub == 1:
                    _expect(sub_wire, _LEN, sub, "wantlist")
                    if len(entries) >= max_entries:
                        raise BitswapProtocolError(
                            f"a wantlist of more than {max_entries} entries; send at most "
                            f"{max_entries} per message"
                        )
                    entries.append(_decode_entry(sub_value))  # type: ignore[arg-type]
                elif sub == 2:
                    _expect(sub_wire, _VARINT, sub, "wantlist")
                    full = bool(sub_value)
        elif number == 2:
            _expect(wire, _LEN, number, "message")
            skipped += 1
            if skipped > max_blocks:
                raise BitswapProtocolError(f"more than {max_blocks} bitswap 1.0.0 blocks")
        elif number == 3:
            _expect(wire, _LEN, number, "message")
            if len(payload) >= max_blocks:
                raise BitswapProtocolError(f"more than {max_blocks} blocks in one message")
            payload.append(_decode_block(value))  # type: ignore[arg-type]
        elif number == 4:
            _expect(wire, _LEN, number, "message")
            if len(presences) >= max_entries:
                raise BitswapProtocolError(f"more than {max_entries} block presences in one message")
            presences.append(_decode_presence(value))  # type: ignore[arg-type]
        elif number == 5:
            _expect(wire, _VARINT, number, "message")
            pending = _int32(value)  # type: ignore[arg-type]
    return BitswapMessage(tuple(entries), full, tuple(payload), tuple(presences), pending, skipped)


# --- CIDs and prefixes --------------------------------------------------------------------


def cid_prefix(cid: str) -> bytes:
    """The bitswap prefix of a CIDv1 sha2-256: version, codec, hash code, digest length."""
    codec = cid_info(cid).codec
    if codec not in _CODECS:
        raise CIDError(f"CID {cid} has codec {codec!r}; bitswap here serves raw and dag-pb blocks")
    return uvarint(1) + uvarint(_CODECS[codec]) + uvarint(_SHA2_256) + uvarint(_SHA2_256_LENGTH)


def block_cid(prefix: bytes, data: bytes) -> str:
    """The CID text of a payload block: its prefix with the sha2-256 of its bytes.

    The CID is computed from the bytes, so a block is always what its CID says; whether
    anyone asked for that CID is the caller's question. CIDError for a prefix that is not
    CIDv1 + raw/dag-pb + sha2-256.
    """
    reader = _Reader(prefix, "CID prefix")
    try:
        version, codec, hash_code, length = (reader.varint() for _ in range(4))
    except BitswapProtocolError as exc:
        raise CIDError(f"malformed CID prefix {prefix.hex()}: {exc}") from exc
    if reader.pos != len(prefix):
        raise CIDError(f"CID prefix {prefix.hex()} has trailing bytes")
    if version != 1 or codec not in _CODECS.values() or hash_code != _SHA2_256 \
            or length != _SHA2_256_LENGTH:
        raise CIDError(
            f"CID prefix {prefix.hex()} is not CIDv1 raw/dag-pb sha2-256 (version {version}, "
            f"codec {codec:#x}, hash {hash_code:#x}/{length})"
        )
    return cid_from_binary(prefix + hashlib.sha256(data).digest())
