"""Hybrid encryption of model blobs for many recipients.

The content is encrypted once with AES-256-GCM under a fresh random key; that key is
wrapped for each recipient with X25519 (one ephemeral key per envelope) + HKDF-SHA256 +
AES-256-GCM. Everything before the ciphertext (the header: recipients, wrapped keys,
ephemeral key, nonce) and the caller's associated data is the content AEAD's associated
data, so no part of an envelope can be changed or swapped without detection.

Wire format, version 2 (all integers big-endian)::

    magic            4   b"FLEV"
    version          1   2
    recipient_count  2   1..MAX_RECIPIENTS
    ephemeral_public 32  X25519 public key
    content_nonce    12
    key_commitment   32  HMAC-SHA256(content key, KEY_COMMITMENT_LABEL)
    recipient_count x (
        recipient_public 32  the recipient's X25519 public key (finds our entry in O(1))
        wrapped_key      48  AES-256-GCM(content key) = 32 bytes + 16-byte tag
    )
    ciphertext_len   8   len(plaintext) + 16
    ciphertext           AES-256-GCM(plaintext) with its tag

Each wrapping key is derived from a fresh ephemeral secret and one recipient key, so it
encrypts exactly one message and a constant nonce is safe for the wrap.

The key commitment is what makes an envelope mean one plaintext for everyone. AES-GCM
alone does not commit to its key: a sender can compute a ciphertext and tag that
authenticate under two keys of its choice, each opening to different bytes (Dodis et al.
2018, "invisible salamanders"; Len et al. 2021), and wrap one key for some recipients and
the other for the rest, or release the second as "the" key later. Every opener checks the
key it unwrapped or was handed against the commitment in the header, which every holder of
the envelope reads alike, before it decrypts; a key that does not match is refused as not
this envelope's. Version 1 had no commitment and is refused.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import EnvelopeError
from protocol.limits import MAX_RECIPIENTS

__all__ = [
    "MAGIC",
    "MAX_PLAINTEXT_SIZE",
    "MAX_RECIPIENTS",
    "VERSION",
    "content_key_of",
    "envelope_size",
    "key_commitment",
    "envelope_recipients",
    "generate_keypair",
    "missing_recipients",
    "open_envelope",
    "open_with_content_key",
    "public_key_of",
    "seal",
]

MAGIC = b"FLEV"
VERSION = 2
MAX_PLAINTEXT_SIZE = 256 * 1024 * 1024

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
WRAPPED_KEY_SIZE = KEY_SIZE + TAG_SIZE
RECIPIENT_ENTRY_SIZE = KEY_SIZE + WRAPPED_KEY_SIZE
COMMITMENT_SIZE = 32
KEY_COMMITMENT_LABEL = b"fl-node envelope v2 content key commitment"

_PREFIX = struct.Struct(">4sBH")  # magic, version, recipient_count
_COMMITMENT_OFFSET = _PREFIX.size + KEY_SIZE + NONCE_SIZE
_FIXED_HEADER_SIZE = _COMMITMENT_OFFSET + COMMITMENT_SIZE
_LENGTH = struct.Struct(">Q")
_WRAP_NONCE = bytes(NONCE_SIZE)
_WRAP_INFO = b"fl-node envelope v1 key wrap"


def envelope_size(plaintext_size: int, recipients: int) -> int:
    """The bytes of an envelope of `plaintext_size` bytes sealed for `recipients` keys."""
    return (
        _FIXED_HEADER_SIZE + recipients * RECIPIENT_ENTRY_SIZE + _LENGTH.size
        + plaintext_size + TAG_SIZE
    )


def key_commitment(content_key: bytes) -> bytes:
    """What an envelope's header says of its content key: HMAC-SHA256 keyed by it, so no
    second key can be found that gives the same (SHA-256's collision resistance)."""
    return hmac.digest(content_key, KEY_COMMITMENT_LABEL, "sha256")


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as (raw 32-byte private key, raw 32-byte public key)."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    """The raw X25519 public key of a raw 32-byte private key."""
    return _load_private(private_key).public_key().public_bytes_raw()


def _load_private(private_key: bytes) -> X25519PrivateKey:
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != KEY_SIZE:
        raise EnvelopeError(
            f"X25519 private key must be {KEY_SIZE} raw bytes, got {_describe(private_key)}"
        )
    return X25519PrivateKey.from_private_bytes(bytes(private_key))


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    return type(value).__name__


def _wrapping_key(shared_secret: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=None,
        info=_WRAP_INFO + ephemeral_public + recipient_public,
    )
    return hkdf.derive(shared_secret)


def _require_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EnvelopeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _unique_recipients(recipients: Sequence[bytes]) -> list[bytes]:
    if isinstance(recipients, bytes | bytearray | str):
        raise EnvelopeError("recipients must be a sequence of public keys, not a single value")
    unique: dict[bytes, None] = {}
    for index, key in enumerate(recipients):
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
            raise EnvelopeError(
                f"recipient {index} must be a {KEY_SIZE}-byte raw X25519 public key, "
                f"got {_describe(key)}"
            )
        unique[bytes(key)] = None
    if not unique:
        raise EnvelopeError("an envelope needs at least one recipient")
    if len(unique) > MAX_RECIPIENTS:
        raise EnvelopeError(
            f"{len(unique)} distinct recipients exceed MAX_RECIPIENTS={MAX_RECIPIENTS}; "
            "split the audience or share one key per group"
        )
    return list(unique)


def seal(
    plaintext: bytes,
    recipients: Sequence[bytes],
    associated_data: bytes = b"",
    max_size: int = MAX_PLAINTEXT_SIZE,
) -> bytes:
    """Encrypt ``plaintext`` so that each holder of a recipient's private key can open it.

    ``associated_data`` is authenticated but not stored; the opener must pass the same.
    Duplicate recipients are removed.
    """
    plaintext = _require_bytes(plaintext, "plaintext")
    associated_data = _require_bytes(associated_data, "associated_data")
    if len(plaintext) > max_size:
        raise EnvelopeError(
            f"plaintext is {len(plaintext)} bytes, over the {max_size}-byte limit; "
            "raise max_size if this is intended"
        )
    keys = _unique_recipients(recipients)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    content_key = AESGCM.generate_key(bit_length=256)
    content_nonce = os.urandom(NONCE_SIZE)

    parts = [
        _PREFIX.pack(MAGIC, VERSION, len(keys)), ephemeral_public, content_nonce,
        key_commitment(content_key),
    ]
    for index, recipient_public in enumerate(keys):
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
        except ValueError as exc:
            # Low-order points give an all-zero secret; cryptography refuses them.
            raise EnvelopeError(
                f"recipient {index} ({recipient_public.hex()}) is not a usable X25519 public key"
            ) from exc
        wrap = AESGCM(_wrapping_key(shared, ephemeral_public, recipient_public))
        parts.append(recipient_public)
        parts.append(wrap.encrypt(_WRAP_NONCE, content_key, ephemeral_public))
    parts.append(_LENGTH.pack(len(plaintext) + TAG_SIZE))
    header = b"".join(parts)
    ciphertext = AESGCM(content_key).encrypt(content_nonce, plaintext, header + associated_data)
    return header + ciphertext


@dataclass(frozen=True)
class _ParsedEnvelope:
    header: bytes
    ephemeral_public: bytes
    content_nonce: bytes
    commitment: bytes
    entries: dict[bytes, bytes]  # recipient public key -> wrapped content key
    ciphertext: memoryview


def _parse(envelope: bytes, max_size: int) -> _ParsedEnvelope:
    if not isinstance(envelope, bytes | bytearray | memoryview):
        raise EnvelopeError(f"envelope must be bytes, got {type(envelope).__name__}")
    view = memoryview(envelope).cast("B")
    max_envelope = envelope_size(max_size, MAX_RECIPIENTS)
    if len(view) > max_envelope:
        raise EnvelopeError(
            f"envelope is {len(view)} bytes, over the {max_envelope}-byte bound for a "
            f"{max_size}-byte plaintext; raise max_size if this is intended"
        )
    if len(view) < _PREFIX.size:
        raise EnvelopeError(f"envelope truncated: {len(view)} bytes, shorter than its prefix")
    magic, version, count = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise EnvelopeError(f"not an fl-node envelope: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        why = " (version 1 does not commit to its key)" if version == 1 else ""
        raise EnvelopeError(
            f"unsupported envelope version {version}{why}; this node reads version "
            f"{VERSION}: the sender must upgrade"
        )
    if not 1 <= count <= MAX_RECIPIENTS:
        raise EnvelopeError(f"envelope recipient count {count} is outside 1..{MAX_RECIPIENTS}")
    header_size = _FIXED_HEADER_SIZE + count * RECIPIENT_ENTRY_SIZE + _LENGTH.size
    if len(view) < header_size:
        raise EnvelopeError(
            f"envelope truncated: {len(view)} bytes, header for {count} recipients "
            f"needs {header_size}"
        )
    (ciphertext_len,) = _LENGTH.unpack_from(view, header_size - _LENGTH.size)
    if ciphertext_len < TAG_SIZE:
        raise EnvelopeError(f"envelope ciphertext length {ciphertext_len} is shorter than a tag")
    if ciphertext_len - TAG_SIZE > max_size:
        raise EnvelopeError(
            f"envelope declares a {ciphertext_len - TAG_SIZE}-byte plaintext, over the "
            f"{max_size}-byte limit; raise max_size if this is intended"
        )
    if len(view) != header_size + ciphertext_len:
        raise EnvelopeError(
            f"envelope is {len(view)} bytes but its header declares "
            f"{header_size + ciphertext_len}: truncated or has trailing bytes"
        )
    entries: dict[bytes, bytes] = {}
    offset = _FIXED_HEADER_SIZE
    for _ in range(count):
        public = bytes(view[offset : offset + KEY_SIZE])
        if public in entries:
            raise EnvelopeError(f"envelope lists recipient {public.hex()} twice")
        entries[public] = bytes(view[offset + KEY_SIZE : offset + RECIPIENT_ENTRY_SIZE])
        offset += RECIPIENT_ENTRY_SIZE
    return _ParsedEnvelope(
        header=bytes(view[:header_size]),
        ephemeral_public=bytes(view[_PREFIX.size : _PREFIX.size + KEY_SIZE]),
        content_nonce=bytes(view[_PREFIX.size + KEY_SIZE : _COMMITMENT_OFFSET]),
        commitment=bytes(view[_COMMITMENT_OFFSET:_FIXED_HEADER_SIZE]),
        entries=entries,
        ciphertext=view[header_size:],
    )


def envelope_recipients(envelope: bytes, max_size: int = MAX_PLAINTEXT_SIZE) -> list[bytes]:
    """The recipient public keys an envelope is addressed to (not authenticated)."""
    return list(_parse(envelope, max_size).entries)


def missing_recipients(
    envelope: bytes, required: Sequence[bytes], max_size: int = MAX_PLAINTEXT_SIZE
) -> list[bytes]:
    """The keys of `required` (in its order) that `envelope` is not addressed to; empty
    when it is addressed to all of them. EnvelopeError when the header does not parse.

    The recipient list is in the header, which is part of the bytes a CID names, so every
    holder of the envelope reads the same list without any private key: a check on it is
    one that all parties make alike. That is what makes a worker's update addressed to
    fewer readers than an honest worker seals for (`protocol.gossip_rules.update_readers`)
    a fault every validator sees, and rejects, rather than one only the left-out reader
    sees (and would be alone to reject, against the majority). Whether a listed entry's
    wrapped key is genuine is not visible here: only its holder can tell."""
    addressed = set(_parse(envelope, max_size).entries)
    return [key for key in dict.fromkeys(bytes(k) for k in required) if key not in addressed]


def _content_key(parsed: _ParsedEnvelope, private: X25519PrivateKey) -> bytes:
    our_public = private.public_key().public_bytes_raw()
    wrapped = parsed.entries.get(our_public)
    if wrapped is None:
        raise EnvelopeError(
            f"envelope is not addressed to public key {our_public.hex()}; ask the sender to "
            "include it among the recipients"
        )
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(parsed.ephemeral_public))
    except ValueError as exc:
        raise EnvelopeError("envelope's ephemeral key is not a usable X25519 public key") from exc
    wrap = AESGCM(_wrapping_key(shared, parsed.ephemeral_public, our_public))
    try:
        content_key = wrap.decrypt(_WRAP_NONCE, wrapped, parsed.ephemeral_public)
    except InvalidTag as exc:
        raise EnvelopeError("envelope's wrapped key for us fails authentication: tampered") from exc
    _check_commitment(
        parsed, content_key,
        "envelope's wrapped key for us is not the key its header commits to: the sender "
        "gave its recipients different keys",
    )
    return content_key


def _check_commitment(parsed: _ParsedEnvelope, content_key: bytes, problem: str) -> None:
    if not hmac.compare_digest(key_commitment(content_key), parsed.commitment):
        raise EnvelopeError(problem)


def _decrypt(parsed: _ParsedEnvelope, content_key: bytes, associated_data: bytes) -> bytes:
    _check_commitment(
        parsed, content_key,
        "content key is not this envelope's: it does not match the key commitment in the "
        "envelope's header",
    )
    try:
        return AESGCM(content_key).decrypt(
            parsed.content_nonce, parsed.ciphertext, parsed.header + associated_data
        )
    except InvalidTag as exc:
        raise EnvelopeError(
            "envelope content fails authentication: tampered, the associated data differs, "
            "or the content key is not this envelope's"
        ) from exc


def open_envelope(
    envelope: bytes,
    private_key: bytes,
    associated_data: bytes = b"",
    max_size: int = MAX_PLAINTEXT_SIZE,
) -> bytes:
    """Decrypt an envelope with our raw X25519 private key; EnvelopeError on any problem."""
    private = _load_private(private_key)
    associated_data = _require_bytes(associated_data, "associated_data")
    parsed = _parse(envelope, max_size)
    return _decrypt(parsed, _content_key(parsed, private), associated_data)


def content_key_of(
    envelope: bytes, private_key: bytes, max_size: int = MAX_PLAINTEXT_SIZE
) -> bytes:
    """The envelope's 32-byte content key, unwrapped with our raw X25519 private key.

    Whoever holds it reads the envelope (`open_with_content_key`) without being one of
    its recipients: this is what a key release hands out once the content may be read."""
    parsed = _parse(envelope, max_size)
    return _content_key(parsed, _load_private(private_key))


def open_with_content_key(
    envelope: bytes,
    content_key: bytes,
    associated_data: bytes = b"",
    max_size: int = MAX_PLAINTEXT_SIZE,
) -> bytes:
    """Decrypt an envelope with its content key (from `content_key_of`, released by a
    recipient); EnvelopeError when the key is not this envelope's or anything was changed."""
    if not isinstance(content_key, bytes | bytearray) or len(content_key) != KEY_SIZE:
        raise EnvelopeError(
            f"a content key must be {KEY_SIZE} raw bytes, got {_describe(content_key)}"
        )
    associated_data = _require_bytes(associated_data, "associated_data")
    return _decrypt(_parse(envelope, max_size), bytes(content_key), associated_data)
