"""Bitswap messages against known answers encoded by Helia's own protobuf code
(``@helia/bitswap`` 4.0.19, ``BitswapMessage.encode``), and the decoder's bounds."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.blocks.bitswap_wire import (
    BitswapMessage,
    BitswapProtocolError,
    PayloadBlock,
    Presence,
    PresenceType,
    WantEntry,
    WantType,
    block_cid,
    cid_prefix,
    decode_message,
    encode_message,
    frame,
    uvarint,
)
from node.blocks.cids import cid_info
from protocol.cid import cid_of
from protocol.errors import CIDError

HELLO_RAW = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"  # raw "hello"
PB_NODE = bytes.fromhex("0a020802")
PB_CID = "bafybeia4bvfwyw6qmtltmymql7prbrtu6s6as2z7b3efscggmsqcvij5za"
RAW_BIN = cid_info(HELLO_RAW).binary
PB_BIN = cid_info(PB_CID).binary

# Helia writes wantType even at its default (the "2000" after the first entry's priority).
HELIA_FULL_WANTLIST = bytes.fromhex(
    "0a5c0a2c0a24015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    "1001200028010a2a0a24017012201c0d4b6c5bd064d73661905fdf10c674f4bc096b3f0ec85908c664a0"
    "2aa13dc8100720011001"
)
HELIA_CANCEL = bytes.fromhex(
    "0a2c0a2a0a24015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b98"
    "2410011801"
)
HELIA_NEGATIVE_PRIORITY = bytes.fromhex(
    "0a330a310a24015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b98"
    "2410feffffffffffffffff01"
)
HELIA_BLOCK_AND_PRESENCES = bytes.fromhex(
    "1a0d0a0401551220120568656c6c6f22280a24017012201c0d4b6c5bd064d73661905fdf10c674f4bc09"
    "6b3f0ec85908c664a02aa13dc8100122260a24015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e"
    "5c1fa7425e73043362938b982428ac02"
)


def test_known_cids() -> None:
    assert cid_of(b"hello", "raw") == HELLO_RAW
    assert cid_of(PB_NODE, "dag-pb") == PB_CID


def test_decodes_helias_full_wantlist() -> None:
    message = decode_message(HELIA_FULL_WANTLIST)
    assert message.full
    assert message.wantlist == (
        WantEntry(RAW_BIN, 1, False, WantType.BLOCK, True),
        WantEntry(PB_BIN, 7, False, WantType.HAVE, False),
    )


@pytest.mark.parametrize(
    ("message", "helia_bytes"),
    [
        (BitswapMessage(wantlist=(WantEntry(RAW_BIN, cancel=True),)), HELIA_CANCEL),
        (BitswapMessage(wantlist=(WantEntry(RAW_BIN, priority=-2),)), HELIA_NEGATIVE_PRIORITY),
        (
            BitswapMessage(
                payload=(PayloadBlock(bytes.fromhex("01551220"), b"hello"),),
                presences=(Presence(PB_BIN, PresenceType.DONT_HAVE), Presence(RAW_BIN, PresenceType.HAVE)),
                pending_bytes=300,
            ),
            HELIA_BLOCK_AND_PRESENCES,
        ),
    ],
    ids=["cancel", "negative-priority", "block-and-presences"],
)
def test_encodes_byte_for_byte_as_helia(message: BitswapMessage, helia_bytes: bytes) -> None:
    assert encode_message(message) == helia_bytes
    assert decode_message(helia_bytes) == message


def test_frame_is_varint_length_then_body() -> None:
    body = encode_message(BitswapMessage(wantlist=(WantEntry(RAW_BIN),)))
    assert frame(BitswapMessage(wantlist=(WantEntry(RAW_BIN),))) == uvarint(len(body)) + body
    assert uvarint(300) == bytes.fromhex("ac02")


def test_prefix_and_block_cid() -> None:
    assert cid_prefix(HELLO_RAW) == bytes.fromhex("01551220")
    assert cid_prefix(PB_CID) == bytes.fromhex("01701220")
    assert block_cid(bytes.fromhex("01551220"), b"hello") == HELLO_RAW
    assert block_cid(bytes.fromhex("01701220"), PB_NODE) == PB_CID
    # The CID comes from the bytes: other bytes under the same prefix are another block.
    assert block_cid(bytes.fromhex("01551220"), b"hellp") != HELLO_RAW


@pytest.mark.parametrize(
    "prefix",
    ["00701220", "01711220", "01551320", "01551210", "0155122000", "0155"],
    ids=["cidv0", "dag-cbor", "sha2-512", "short-digest", "trailing", "truncated"],
)
def test_block_cid_rejects_prefixes_we_never_hold(prefix: str) -> None:
    with pytest.raises(CIDError):
        block_cid(bytes.fromhex(prefix), b"hello")


def test_unknown_fields_are_skipped() -> None:
    unknown = bytes.fromhex("3001") + bytes.fromhex("3d01020304") + bytes.fromhex("410102030405060708")
    assert decode_message(unknown + HELIA_CANCEL).wantlist == (WantEntry(RAW_BIN, cancel=True),)


def test_wantlist_entry_bound() -> None:
    entries = tuple(WantEntry(cid_info(cid_of(bytes([i]), "raw")).binary) for i in range(20))
    body = encode_message(BitswapMessage(wantlist=entries))
    assert len(decode_message(body, max_entries=20).wantlist) == 20
    with pytest.raises(BitswapProtocolError, match="more than 19 entries"):
        decode_message(body, max_entries=19)


def test_block_bound() -> None:
    block = PayloadBlock(bytes.fromhex("01551220"), b"x")
    body = encode_message(BitswapMessage(payload=(block,) * 5))
    with pytest.raises(BitswapProtocolError, match="more than 4 blocks"):
        decode_message(body, max_blocks=4)
    big = encode_message(BitswapMessage(payload=(PayloadBlock(block.prefix, bytes(1024 * 1024 + 1)),)))
    with pytest.raises(BitswapProtocolError, match="block limit"):
        decode_message(big)


@pytest.mark.parametrize(
    "body",
    [
        "0aff",  # wantlist claims 127 bytes, none follow
        "0a0412020a00",  # an entry with an empty CID
        "0a050a030a0100",  # an entry whose CID is one byte (accepted length) - see below
        "0b",  # wire type 3 (group)
        "08",  # truncated varint value
        "0a02" + "2001",  # wantlist with field 4 (unknown inside a wantlist): fine, see below
        "0affffffffffffffffffff01",  # varint over 64 bits
        "22021003",  # presence type 3
    ],
)
def test_malformed_bodies(body: str) -> None:
    raw = bytes.fromhex(body)
    if body in ("0a050a030a0100", "0a022001"):
        decode_message(raw)  # well-formed: a 1-byte CID we will never hold; an unknown field
        return
    with pytest.raises(BitswapProtocolError):
        decode_message(raw)


def test_block_digest_is_sha256_of_data() -> None:
    assert cid_info(HELLO_RAW).digest == hashlib.sha256(b"hello").digest()


@given(st.binary(max_size=512))
@settings(max_examples=400, deadline=None)
def test_decoder_raises_only_protocol_errors(body: bytes) -> None:
    try:
        decode_message(body, max_entries=8, max_blocks=4)
    except BitswapProtocolError:
        pass


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_prefixes_raise_only_cid_errors(prefix: bytes) -> None:
    try:
        block_cid(prefix, b"data")
    except CIDError:
        pass
