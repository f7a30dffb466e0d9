"""IPFS-compatible content identifiers: CIDv1, sha2-256, base32 text (``bafk...``).

Everything a peer sends us by CID is checked with :func:`verify_block` before it is used;
only sha2-256 is accepted so a peer cannot pick a weak or absent hash ("identity").
"""

from __future__ import annotations

import functools
import hashlib

from multiformats import CID, multihash

from protocol.errors import CIDError

__all__ = ["CID", "MAX_CID_TEXT_LENGTH", "cid_of", "parse_cid", "verify_block"]

HASH_NAME = "sha2-256"
DIGEST_SIZE = 32
# A CIDv1 sha2-256 in base32 is 59 characters; anything much longer is not one of ours
# and is refused before it reaches the decoder.
MAX_CID_TEXT_LENGTH = 128
# Binary CIDs (as py-libp2p's bitswap passes them): version + codec + multihash, small.
MAX_CID_BINARY_LENGTH = 96
PARSED_CIDS_CACHED = 4096


def cid_of(data: bytes, codec: str = "raw") -> str:
    """The CIDv1 (sha2-256, base32) of ``data`` under the multicodec ``codec``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CIDError(f"cid_of needs bytes, got {type(data).__name__}")
    try:
        digest = multihash.digest(bytes(data), HASH_NAME)
        return str(CID("base32", 1, codec, digest))
    except (KeyError, ValueError) as exc:
        raise CIDError(
            f"unknown multicodec {codec!r}: use a name such as 'raw' or 'dag-pb'"
        ) from exc


def parse_cid(text: str) -> CID:
    """Parse CID text; only CIDv1 with a sha2-256 multihash is accepted."""
    if not isinstance(text, str):
        raise CIDError(f"CID text must be str, got {type(text).__name__}")
    if not text:
        raise CIDError("empty CID text")
    if len(text) > MAX_CID_TEXT_LENGTH:
        raise CIDError(
            f"CID text is {len(text)} characters, longer than {MAX_CID_TEXT_LENGTH}: "
            "not a CIDv1 sha2-256"
        )
    return _parse_valid_length(text)


# multiformats checks its arguments' types at run time (~0.25 ms a CID), and one gossip
# message names up to a round's worth of CIDs that every node checks: at a hundred nodes in
# one process that was 83% of the event loop. A CID is immutable and the text fixes it; the
# cache holds only CIDs that parsed (a failure raises and is not kept), bounded.
@functools.lru_cache(maxsize=PARSED_CIDS_CACHED)
def _parse_valid_length(text: str) -> CID:
    try:
        cid = CID.decode(text)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CIDError(f"malformed CID {text!r}: {exc}") from exc
    return _check_supported(cid, text)


def _parse_binary_cid(raw: bytes) -> CID:
    if len(raw) > MAX_CID_BINARY_LENGTH:
        raise CIDError(f"binary CID is {len(raw)} bytes, longer than {MAX_CID_BINARY_LENGTH}")
    try:
        cid = CID.decode(bytes(raw))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CIDError(f"malformed binary CID {bytes(raw).hex()}: {exc}") from exc
    return _check_supported(cid, bytes(raw).hex())


def _check_supported(cid: CID, shown: str) -> CID:
    if cid.version != 1:
        raise CIDError(f"CID {shown!r} is version {cid.version}; only CIDv1 is accepted")
    if cid.hashfun.name != HASH_NAME:
        raise CIDError(f"CID {shown!r} uses hash {cid.hashfun.name}; only {HASH_NAME} is accepted")
    try:
        digest = cid.raw_digest
    except ValueError as exc:  # multiformats refuses a digest longer than its hash's
        raise CIDError(f"CID {shown!r} has a malformed multihash: {exc}") from exc
    if len(digest) != DIGEST_SIZE:
        raise CIDError(
            f"CID {shown!r} has a {len(digest)}-byte digest; sha2-256 needs {DIGEST_SIZE}"
        )
    return cid


def verify_block(cid: str | CID | bytes, data: bytes) -> None:
    """Raise CIDError unless ``data`` hashes (sha2-256) to the digest in ``cid``.

    The codec is not interpreted, so raw leaves and dag-pb roots verify alike. Binary CIDs
    (bytes, as py-libp2p's bitswap uses them) are accepted as well as text and CID objects.
    """
    if isinstance(cid, CID):
        parsed = _check_supported(cid, str(cid))
    elif isinstance(cid, str):
        parsed = parse_cid(cid)
    elif isinstance(cid, bytes | bytearray | memoryview):
        parsed = _parse_binary_cid(bytes(cid))
    else:
        raise CIDError(f"CID must be str, bytes or multiformats.CID, got {type(cid).__name__}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CIDError(f"block data must be bytes, got {type(data).__name__}")
    if hashlib.sha256(data).digest() != bytes(parsed.raw_digest):
        raise CIDError(f"block does not match CID {parsed}: its sha2-256 digest differs")
