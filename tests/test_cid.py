"""CIDv1 helpers: IPFS-compatible text, strict parsing, block verification."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.bitswap.cid import compute_cid_v1
from libp2p.bitswap.dag_pb import create_file_node
from multiformats import CID, multihash

from protocol.cid import cid_of, parse_cid, verify_block
from protocol.errors import CIDError


def test_hello_world_matches_ipfs() -> None:
    # `ipfs add --cid-version 1 --raw-leaves` of "hello world" (no newline).
    assert cid_of(b"hello world") == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_cid_of_empty_block() -> None:
    assert cid_of(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_cid_of_other_codec_keeps_digest() -> None:
    text = cid_of(b"x", codec="dag-pb")
    assert text.startswith("bafy")
    parsed = parse_cid(text)
    assert parsed.codec.name == "dag-pb"
    assert bytes(parsed.raw_digest) == hashlib.sha256(b"x").digest()


def test_cid_of_unknown_codec() -> None:
    with pytest.raises(CIDError, match="unknown multicodec"):
        cid_of(b"x", codec="no-such-codec")


def test_cid_of_rejects_str() -> None:
    with pytest.raises(CIDError, match="needs bytes"):
        cid_of("hello")  # type: ignore[arg-type]


def test_parse_cid_round_trip() -> None:
    text = cid_of(b"abc")
    cid = parse_cid(text)
    assert str(cid) == text
    assert cid.version == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("xyz", "malformed"),
        ("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5f", "malformed"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "version 0"),
        ("b" + "a" * 300, "longer than"),
    ],
)
def test_parse_cid_rejects(text: str, reason: str) -> None:
    with pytest.raises(CIDError, match=reason):
        parse_cid(text)


def test_parse_cid_rejects_other_hash() -> None:
    blake = str(CID("base32", 1, "raw", multihash.digest(b"x", "blake2b-256")))
    with pytest.raises(CIDError, match="only sha2-256"):
        parse_cid(blake)


def test_parse_cid_rejects_identity_hash() -> None:
    # An identity "hash" would let a peer put any bytes in the CID itself.
    ident = str(CID("base32", 1, "raw", multihash.digest(b"x", "identity")))
    with pytest.raises(CIDError, match="only sha2-256"):
        parse_cid(ident)


def test_parse_cid_rejects_non_str() -> None:
    with pytest.raises(CIDError, match="must be str"):
        parse_cid(b"bafk")  # type: ignore[arg-type]


def test_verify_block_accepts_and_rejects() -> None:
    data = b"model bytes"
    verify_block(cid_of(data), data)
    verify_block(parse_cid(cid_of(data)), data)
    with pytest.raises(CIDError, match="digest differs"):
        verify_block(cid_of(data), data + b"!")
    with pytest.raises(CIDError, match="digest differs"):
        verify_block(cid_of(data), b"")


def test_verify_block_accepts_libp2p_binary_cids() -> None:
    data = b"leaf block"
    binary = compute_cid_v1(data)
    assert isinstance(binary, bytes)
    verify_block(binary, data)
    assert CID.decode(binary).encode("base32") == cid_of(data)
    with pytest.raises(CIDError, match="digest differs"):
        verify_block(binary, b"other")


def test_verify_block_dag_pb_root_from_libp2p() -> None:
    # A root as py-libp2p's MerkleDag builds it for a chunked blob.
    leaves = [b"a" * 1000, b"b" * 500]
    root = create_file_node([(compute_cid_v1(leaf), len(leaf)) for leaf in leaves])
    root_cid = compute_cid_v1(root, codec="dag-pb")
    verify_block(root_cid, root)
    text = CID.decode(root_cid).encode("base32")
    assert text == cid_of(root, codec="dag-pb")
    verify_block(text, root)
    with pytest.raises(CIDError):
        verify_block(text, root[:-1])


def test_verify_block_rejects_malformed_binary_cid() -> None:
    with pytest.raises(CIDError, match="malformed binary CID"):
        verify_block(b"\x01\x55\x12", b"x")
    with pytest.raises(CIDError, match="longer than"):
        verify_block(b"\x01" * 200, b"x")


def test_verify_block_rejects_wrong_types() -> None:
    with pytest.raises(CIDError, match="must be str, bytes"):
        verify_block(123, b"x")  # type: ignore[arg-type]
    with pytest.raises(CIDError, match="block data must be bytes"):
        verify_block(cid_of(b"x"), "x")  # type: ignore[arg-type]


@given(st.binary(max_size=4096))
def test_any_bytes_verify_against_own_cid(data: bytes) -> None:
    text = cid_of(data)
    assert text.startswith("bafk")
    verify_block(text, data)


@given(st.text(max_size=80))
def test_parse_cid_random_text_only_raises_cid_error(text: str) -> None:
    try:
        parse_cid(text)
    except CIDError:
        pass


@given(st.binary(max_size=120))
def test_verify_block_random_binary_cid_only_raises_cid_error(raw: bytes) -> None:
    try:
        verify_block(raw, b"x")
    except CIDError:
        pass


def test_parsed_cids_are_remembered_and_refusals_are_not() -> None:
    text = cid_of(b"named by every gossip message of a round")
    assert parse_cid(text) is parse_cid(text)  # the second parse is the cache's
    identity = str(CID("base32", 1, "raw", multihash.wrap(b"x", "identity")))
    for _ in range(2):  # refused every time: a failure is never cached as a CID
        with pytest.raises(CIDError, match="sha2-256"):
            parse_cid(identity)
