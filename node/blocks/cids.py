"""Cached CID facts for the hot paths of the block store and exchange.

``protocol.cid`` decides which CIDs are acceptable (CIDv1, sha2-256); parsing through
``multiformats`` costs 100-400 us per call (it type-checks every argument at run time),
which at 256 KiB blocks capped a fetch at about 30 MB/s. So each CID text is parsed once
by ``protocol.cid.parse_cid`` and the facts the hot paths need are cached (bounded).
Block verification is the same check as ``protocol.cid.verify_block``: the block's
sha2-256 digest must equal the CID's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from multiformats import CID

from protocol.cid import parse_cid
from protocol.errors import CIDError

__all__ = ["CidInfo", "canonical_cid", "check_block", "cid_from_binary", "cid_info"]

_CACHE_SIZE = 1 << 16
_MAX_BINARY_CID = 96


@dataclass(frozen=True)
class CidInfo:
    """What the block layer needs to know about one CID."""

    text: str  # canonical base32 text, the name a block is stored under
    codec: str  # multicodec name, e.g. "raw" or "dag-pb"
    digest: bytes  # sha2-256 digest the block must hash to
    binary: bytes  # binary CID, as dag-pb links carry it


@lru_cache(maxsize=_CACHE_SIZE)
def cid_info(cid: str) -> CidInfo:
    """Parse ``cid`` (CIDError if it is not a CIDv1 sha2-256) and cache the result."""
    parsed = parse_cid(cid)
    return CidInfo(parsed.encode("base32"), parsed.codec.name, bytes(parsed.raw_digest),
                   bytes(parsed))


def canonical_cid(cid: str) -> str:
    """The base32 text of a CIDv1 sha2-256 (what files are named by); CIDError if it is not one."""
    return cid_info(cid).text


@lru_cache(maxsize=_CACHE_SIZE)
def cid_from_binary(raw: bytes) -> str:
    """Canonical text of a binary CID (as in a dag-pb link); CIDError if malformed."""
    if len(raw) > _MAX_BINARY_CID:
        raise CIDError(f"binary CID of {len(raw)} bytes is longer than {_MAX_BINARY_CID}")
    try:
        text = CID.decode(raw).encode("base32")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CIDError(f"malformed binary CID {raw.hex()}: {exc}") from exc
    return canonical_cid(text)


def check_block(cid: str, data: bytes | bytearray | memoryview) -> None:
    """Raise CIDError unless ``data`` hashes (sha2-256) to the digest in ``cid``."""
    info = cid_info(cid)
    if hashlib.sha256(data).digest() != info.digest:
        raise CIDError(f"block does not match CID {info.text}: its sha2-256 digest differs")
