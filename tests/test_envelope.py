"""Hybrid envelope: X25519 + HKDF-SHA256 + AES-256-GCM for many recipients."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import envelope as envelope_module
from protocol.envelope import (
    MAGIC,
    MAX_RECIPIENTS,
    content_key_of,
    envelope_recipients,
    envelope_size,
    generate_keypair,
    key_commitment,
    missing_recipients,
    open_envelope,
    open_with_content_key,
    public_key_of,
    seal,
)
from protocol.errors import EnvelopeError
from tests.gcm_two_keys import sealed_by_hand, two_key_ciphertext

ALICE = generate_keypair()
BOB = generate_keypair()
CAROL = generate_keypair()
MALLORY = generate_keypair()


def test_keypair_shapes_and_public_key_of() -> None:
    private, public = generate_keypair()
    assert len(private) == 32 and len(public) == 32
    assert public_key_of(private) == public
    assert generate_keypair() != (private, public)


def test_public_key_of_rejects_bad_length() -> None:
    with pytest.raises(EnvelopeError, match="32 raw bytes, got 31 bytes"):
        public_key_of(b"\x00" * 31)


def test_round_trip_several_recipients() -> None:
    plaintext = b"model weights " * 1000
    envelope = seal(plaintext, [ALICE[1], BOB[1], CAROL[1]], associated_data=b"task-1")
    for private, _ in (ALICE, BOB, CAROL):
        assert open_envelope(envelope, private, associated_data=b"task-1") == plaintext
    assert envelope_recipients(envelope) == [ALICE[1], BOB[1], CAROL[1]]


def test_each_seal_is_fresh() -> None:
    first = seal(b"same", [ALICE[1]])
    second = seal(b"same", [ALICE[1]])
    assert first != second
    assert open_envelope(first, ALICE[0]) == open_envelope(second, ALICE[0]) == b"same"


def test_empty_plaintext() -> None:
    assert open_envelope(seal(b"", [ALICE[1]]), ALICE[0]) == b""


def test_duplicates_removed() -> None:
    envelope = seal(b"x", [ALICE[1], BOB[1], ALICE[1]])
    assert envelope_recipients(envelope) == [ALICE[1], BOB[1]]
    assert open_envelope(envelope, ALICE[0]) == b"x"


def test_wrong_recipient() -> None:
    envelope = seal(b"secret", [ALICE[1], BOB[1]])
    with pytest.raises(EnvelopeError, match="not addressed to public key"):
        open_envelope(envelope, MALLORY[0])


def test_wrong_associated_data() -> None:
    envelope = seal(b"secret", [ALICE[1]], associated_data=b"round 1")
    with pytest.raises(EnvelopeError, match="associated data differs"):
        open_envelope(envelope, ALICE[0], associated_data=b"round 2")
    with pytest.raises(EnvelopeError, match="associated data differs"):
        open_envelope(envelope, ALICE[0])


def test_every_single_byte_flip_is_detected() -> None:
    envelope = seal(b"hello", [ALICE[1], BOB[1]], associated_data=b"ad")
    assert open_envelope(envelope, ALICE[0], b"ad") == b"hello"
    # 0x80 matters: X25519 ignores a public key's top bit, the envelope must not.
    for position in range(len(envelope)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(envelope)
            tampered[position] ^= mask
            with pytest.raises(EnvelopeError):
                open_envelope(bytes(tampered), ALICE[0], b"ad")


def test_swapping_wrapped_keys_between_envelopes_is_detected() -> None:
    first = seal(b"one", [ALICE[1], BOB[1]])
    second = seal(b"two", [ALICE[1], BOB[1]])
    header_size = envelope_size(0, 2) - envelope_module.TAG_SIZE
    spliced = first[:header_size] + second[header_size:]
    with pytest.raises(EnvelopeError, match="content fails authentication"):
        open_envelope(spliced, ALICE[0])


def test_truncation_at_every_length() -> None:
    envelope = seal(b"payload", [ALICE[1], BOB[1]])
    for length in range(len(envelope)):
        with pytest.raises(EnvelopeError):
            open_envelope(envelope[:length], ALICE[0])


def test_trailing_bytes_rejected() -> None:
    envelope = seal(b"payload", [ALICE[1]])
    with pytest.raises(EnvelopeError, match="trailing bytes"):
        open_envelope(envelope + b"\x00", ALICE[0])


def test_bad_magic_and_version() -> None:
    envelope = seal(b"payload", [ALICE[1]])
    with pytest.raises(EnvelopeError, match="not an fl-node envelope"):
        open_envelope(b"XXXX" + envelope[4:], ALICE[0])
    with pytest.raises(EnvelopeError, match="unsupported envelope version 3"):
        open_envelope(MAGIC + b"\x03" + envelope[5:], ALICE[0])
    with pytest.raises(EnvelopeError, match="version 1 does not commit to its key"):
        open_envelope(MAGIC + b"\x01" + envelope[5:], ALICE[0])


def two_key_envelope(plaintext: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    """(envelope, second key): sealed for ALICE with the content key its header commits
    to, and for BOB with a second key under which its AES-GCM content also authenticates
    (`tests.gcm_two_keys`): what a sender that wants BOB to read other bytes builds."""
    first, second = AESGCM.generate_key(bit_length=256), AESGCM.generate_key(bit_length=256)
    envelope = sealed_by_hand(
        len(plaintext), [(ALICE[1], first), (BOB[1], second)], first, associated_data,
        lambda nonce, aad: two_key_ciphertext(first, second, nonce, plaintext, aad),
    )
    return envelope, second


def test_a_second_key_the_content_authenticates_under_is_refused() -> None:
    plaintext = b"the model every validator should score".ljust(64, b".")
    envelope, second = two_key_envelope(plaintext, b"round 3")
    parsed = envelope_module._parse(envelope, 1024)
    # AES-GCM alone accepts the second key: BOB would read other bytes than ALICE
    at_bob = AESGCM(second).decrypt(parsed.content_nonce, parsed.ciphertext, parsed.header + b"round 3")
    at_alice = open_envelope(envelope, ALICE[0], b"round 3")
    assert at_alice[16:] == plaintext[16:] and at_bob != at_alice
    with pytest.raises(EnvelopeError, match="not the key its header commits to"):
        open_envelope(envelope, BOB[0], b"round 3")
    with pytest.raises(EnvelopeError, match="does not match the key commitment"):
        open_with_content_key(envelope, second, b"round 3")  # released as "the" key
    assert open_with_content_key(envelope, content_key_of(envelope, ALICE[0]), b"round 3") == at_alice


def test_the_commitment_is_authenticated_and_binds_the_content_key() -> None:
    envelope = seal(b"payload", [ALICE[1]])
    key = content_key_of(envelope, ALICE[0])
    start = envelope_module._COMMITMENT_OFFSET
    assert envelope[start : start + 32] == key_commitment(key) != key_commitment(bytes(32))
    forged = envelope[:start] + key_commitment(bytes(32)) + envelope[start + 32 :]
    with pytest.raises(EnvelopeError, match="not the key its header commits to"):
        open_envelope(forged, ALICE[0])


def test_envelope_size_is_what_seal_writes() -> None:
    for recipients in (1, 3):
        keys = [generate_keypair()[1] for _ in range(recipients)]
        assert len(seal(bytes(100), keys)) == envelope_size(100, recipients)


def test_zero_recipient_count_rejected() -> None:
    envelope = seal(b"payload", [ALICE[1]])
    with pytest.raises(EnvelopeError, match="recipient count 0"):
        open_envelope(envelope[:5] + struct.pack(">H", 0) + envelope[7:], ALICE[0])


def test_too_many_recipients() -> None:
    many = [generate_keypair()[1] for _ in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(EnvelopeError, match="exceed MAX_RECIPIENTS=1024"):
        seal(b"x", many)
    envelope = seal(b"x", many[:MAX_RECIPIENTS])
    assert len(envelope_recipients(envelope)) == MAX_RECIPIENTS


def test_no_recipients() -> None:
    with pytest.raises(EnvelopeError, match="at least one recipient"):
        seal(b"x", [])


def test_bad_recipient_keys() -> None:
    with pytest.raises(EnvelopeError, match="recipient 1 must be a 32-byte"):
        seal(b"x", [ALICE[1], b"short"])
    with pytest.raises(EnvelopeError, match="not a single value"):
        seal(b"x", ALICE[1])
    # The all-zero point has low order: the shared secret would be zero.
    with pytest.raises(EnvelopeError, match="not a usable X25519 public key"):
        seal(b"x", [bytes(32)])


def test_size_limits() -> None:
    with pytest.raises(EnvelopeError, match="over the 10-byte limit"):
        seal(b"x" * 11, [ALICE[1]], max_size=10)
    envelope = seal(b"x" * 11, [ALICE[1]])
    with pytest.raises(EnvelopeError, match="raise max_size"):
        open_envelope(envelope, ALICE[0], max_size=10)
    assert open_envelope(envelope, ALICE[0], max_size=11) == b"x" * 11


def test_declared_length_over_limit_rejected_before_decrypting() -> None:
    envelope = seal(b"abc", [ALICE[1]])
    header_size = envelope_size(0, 1) - envelope_module.TAG_SIZE
    lying = envelope[: header_size - 8] + struct.pack(">Q", 2**63) + envelope[header_size:]
    with pytest.raises(EnvelopeError, match="over the"):
        open_envelope(lying, ALICE[0])


def test_wrong_types() -> None:
    with pytest.raises(EnvelopeError, match="plaintext must be bytes"):
        seal("text", [ALICE[1]])  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="envelope must be bytes"):
        open_envelope("text", ALICE[0])  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="associated_data must be bytes"):
        open_envelope(seal(b"x", [ALICE[1]]), ALICE[0], "ad")  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    associated_data=st.binary(max_size=64),
    recipient_count=st.integers(min_value=1, max_value=5),
    opener=st.integers(min_value=0, max_value=4),
)
def test_round_trip_property(
    plaintext: bytes, associated_data: bytes, recipient_count: int, opener: int
) -> None:
    keys = [generate_keypair() for _ in range(recipient_count)]
    envelope = seal(plaintext, [public for _, public in keys], associated_data)
    private = keys[opener % recipient_count][0]
    assert open_envelope(envelope, private, associated_data) == plaintext


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(data, ALICE[0])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_behind_a_valid_prefix_only_raise_envelope_error(tail: bytes) -> None:
    data = MAGIC + b"\x01\x00\x01" + tail
    with pytest.raises(EnvelopeError):
        open_envelope(data, ALICE[0])


def test_an_envelope_addressed_to_every_required_reader_misses_none() -> None:
    readers = [ALICE[1], BOB[1], CAROL[1]]
    envelope = seal(b"update", [CAROL[1], ALICE[1], BOB[1], MALLORY[1]])
    assert missing_recipients(envelope, readers) == []
    assert missing_recipients(envelope, []) == []


def test_the_readers_an_envelope_leaves_out_are_named_in_order() -> None:
    envelope = seal(b"update", [ALICE[1]])
    assert missing_recipients(envelope, [CAROL[1], ALICE[1], BOB[1], CAROL[1]]) == [
        CAROL[1],
        BOB[1],
    ]


def test_missing_recipients_reads_the_header_without_any_private_key() -> None:
    """The same answer for every holder of the bytes; a header that does not parse is an
    error, not an envelope addressed to nobody."""
    envelope = seal(b"update", [ALICE[1], BOB[1]])
    assert missing_recipients(bytes(envelope), [BOB[1], CAROL[1]]) == [CAROL[1]]
    with pytest.raises(EnvelopeError, match="truncated"):
        missing_recipients(envelope[:40], [ALICE[1]])
