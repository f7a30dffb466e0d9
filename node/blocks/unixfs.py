"""UnixFS file DAGs in dag-pb, laid out the way Kubo lays them out (pure: no I/O).

A blob is cut into 256 KiB raw leaves (CIDv1, codec ``raw``, sha2-256); leaves are linked
from dag-pb UnixFS ``File`` nodes of at most 174 links, balanced, exactly as
``ipfs add --cid-version=1 --raw-leaves`` (Kubo's defaults) builds them, so a blob's root
CID here equals the one Kubo or Helia computes for the same bytes (the tests check known
vectors produced by js ``ipfs-unixfs-importer``). A blob of one chunk is its own raw root.

Why dag-pb and not a private manifest: any IPFS tool can fetch, verify and pin what a
node publishes, and the root carries every child's size, so a fetcher learns the blob's
exact size from the first block and bounds every later read by it.

Decoding is strict and bounded: a peer chooses these bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from protocol.cid import cid_of
from protocol.errors import CIDError
from protocol.limits import MAX_BLOCK_SIZE, MAX_DAG_DEPTH

from .cids import cid_from_binary, cid_info

__all__ = [
    "CHUNK_SIZE",
    "MAX_BLOCK_SIZE",
    "MAX_DAG_DEPTH",
    "MAX_LINKS_PER_NODE",
    "Block",
    "DagError",
    "FileNode",
    "Link",
    "build_file_dag",
    "decode_file_node",
    "encode_file_node",
    "is_raw",
]

CHUNK_SIZE = 256 * 1024
# Kubo's balanced layout: 174 links keep a node under 8 KiB with CIDv0 links.
MAX_LINKS_PER_NODE = 174
# A node listing more links than this cannot be one of a sane file's nodes.
MAX_LINKS_DECODED = 4096

_RAW = "raw"
_DAG_PB = "dag-pb"
_UNIXFS_FILE = 2
_UNIXFS_RAW = 0

_WIRE_VARINT = 0
_WIRE_LEN = 2


class DagError(CIDError):
    """A dag-pb / UnixFS node is malformed, inconsistent, or not a file node we accept."""


@dataclass(frozen=True)
class Block:
    """One content-addressed block: its CIDv1 text (base32) and its bytes."""

    cid: str
    data: bytes


@dataclass(frozen=True)
class Link:
    """A child of a file node: its CID, the file bytes under it, and the DAG bytes under it."""

    cid: str
    file_size: int
    tsize: int


@dataclass(frozen=True)
class FileNode:
    """A decoded UnixFS file node: children in order and the file size they add up to."""

    links: tuple[Link, ...]
    file_size: int


def is_raw(cid: str) -> bool:
    """True when ``cid`` names a raw leaf (its bytes are file bytes), False for dag-pb."""
    codec = cid_info(cid).codec
    if codec == _RAW:
        return True
    if codec == _DAG_PB:
        return False
    raise DagError(f"CID {cid} has codec {codec!r}; a file DAG holds only 'raw' and 'dag-pb' blocks")


# --- protobuf, the handful of wire rules dag-pb and UnixFS use ---------------------------


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: protobuf's varint, the multiformats unsigned-varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _WIRE_LEN) + encode_varint(len(payload)) + payload


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(buf):
            raise DagError("truncated varint in dag-pb node")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise DagError("varint longer than 64 bits in dag-pb node")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for varint and length-delimited fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise DagError("protobuf field number 0 in dag-pb node")
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos)
            yield field, wire, value
        elif wire == _WIRE_LEN:
            length, pos = _read_varint(buf, pos)
            if length > len(buf) - pos:
                raise DagError("length-delimited field runs past the end of the dag-pb node")
            yield field, wire, bytes(buf[pos : pos + length])
            pos += length
        else:
            raise DagError(f"unsupported protobuf wire type {wire} in dag-pb node")


# --- encode -------------------------------------------------------------------------------


def encode_file_node(links: list[Link]) -> bytes:
    """dag-pb bytes of a UnixFS File node over ``links`` (Links before Data, as Kubo writes)."""
    if not links:
        raise DagError("a file node needs at least one link")
    unixfs = _key(1, _WIRE_VARINT) + encode_varint(_UNIXFS_FILE)
    unixfs += _key(3, _WIRE_VARINT) + encode_varint(sum(link.file_size for link in links))
    for link in links:
        unixfs += _key(4, _WIRE_VARINT) + encode_varint(link.file_size)
    out = bytearray()
    for link in links:
        pb_link = _len_field(1, cid_info(link.cid).binary)
        pb_link += _len_field(2, b"")  # Kubo writes an empty Name
        pb_link += _key(3, _WIRE_VARINT) + encode_varint(link.tsize)
        out += _len_field(2, pb_link)
    out += _len_field(1, unixfs)
    return bytes(out)


def build_file_dag(blob: bytes, chunk_size: int = CHUNK_SIZE) -> tuple[str, list[Block]]:
    """Cut ``blob`` into raw leaves and balanced file nodes; return (root CID, all blocks).

    Blocks are returned leaves first and the root last, so storing them in order never
    leaves a stored node whose children are missing.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise DagError(f"a blob must be bytes, got {type(blob).__name__}")
    if not blob:
        raise DagError("cannot publish an empty blob: there is nothing to address")
    if not 1 <= chunk_size <= MAX_BLOCK_SIZE:
        raise DagError(f"chunk_size {chunk_size} must be between 1 and {MAX_BLOCK_SIZE}")
    view = memoryview(blob)
    blocks: list[Block] = []
    level: list[Link] = []
    for start in range(0, len(view), chunk_size):
        data = bytes(view[start : start + chunk_size])
        cid = cid_of(data, _RAW)
        blocks.append(Block(cid, data))
        level.append(Link(cid, len(data), len(data)))
    if len(level) == 1:
        return level[0].cid, blocks
    # Packing each level into full nodes of MAX_LINKS_PER_NODE from the left gives the
    # same tree as go-unixfs' balanced builder (which fills the leftmost subtree first).
    while len(level) > 1:
        parents: list[Link] = []
        for start in range(0, len(level), MAX_LINKS_PER_NODE):
            group = level[start : start + MAX_LINKS_PER_NODE]
            data = encode_file_node(group)
            cid = cid_of(data, _DAG_PB)
            blocks.append(Block(cid, data))
            file_size = sum(link.file_size for link in group)
            parents.append(Link(cid, file_size, len(data) + sum(link.tsize for link in group)))
        level = parents
    return level[0].cid, blocks


# --- decode -------------------------------------------------------------------------------


def _decode_link(raw: bytes) -> tuple[str, int | None]:
    cid_bytes: bytes | None = None
    tsize: int | None = None
    for field, wire, value in _fields(raw):
        if field == 1 and wire == _WIRE_LEN:
            cid_bytes = value  # type: ignore[assignment]
        elif field == 3 and wire == _WIRE_VARINT:
            tsize = value  # type: ignore[assignment]
        elif field == 2 and wire == _WIRE_LEN:
            continue  # names are irrelevant inside a file
        else:
            raise DagError(f"unexpected field {field} (wire {wire}) in a dag-pb link")
    if cid_bytes is None:
        raise DagError("a dag-pb link has no Hash")
    try:
        text = cid_from_binary(cid_bytes)  # CIDv1 + sha2-256 only
    except CIDError as exc:
        raise DagError(f"a dag-pb link holds an unacceptable CID: {exc}") from exc
    is_raw(text)  # raw or dag-pb only
    return text, tsize


def decode_file_node(data: bytes) -> FileNode:
    """Decode a dag-pb UnixFS File node with links and no inline data, checking its sizes."""
    if len(data) > MAX_BLOCK_SIZE:
        raise DagError(f"dag-pb node of {len(data)} bytes exceeds the {MAX_BLOCK_SIZE}-byte block limit")
    raw_links: list[tuple[str, int | None]] = []
    unixfs: bytes | None = None
    for field, wire, value in _fields(data):
        if field == 2 and wire == _WIRE_LEN:
            if len(raw_links) >= MAX_LINKS_DECODED:
                raise DagError(f"dag-pb node lists more than {MAX_LINKS_DECODED} links")
            raw_links.append(_decode_link(value))  # type: ignore[arg-type]
        elif field == 1 and wire == _WIRE_LEN:
            if unixfs is not None:
                raise DagError("dag-pb node has two Data fields")
            unixfs = value  # type: ignore[assignment]
        else:
            raise DagError(f"unexpected field {field} (wire {wire}) in a dag-pb node")
    if unixfs is None:
        raise DagError("dag-pb node has no UnixFS Data: it is not a file node")
    node_type: int | None = None
    file_size: int | None = None
    block_sizes: list[int] = []
    for field, wire, value in _fields(unixfs):
        if field == 1 and wire == _WIRE_VARINT:
            node_type = value  # type: ignore[assignment]
        elif field == 2 and wire == _WIRE_LEN:
            if value:
                raise DagError("UnixFS node carries inline data; only linked file nodes are accepted")
        elif field == 3 and wire == _WIRE_VARINT:
            file_size = value  # type: ignore[assignment]
        elif field == 4 and wire == _WIRE_VARINT:
            if len(block_sizes) >= MAX_LINKS_DECODED:
                raise DagError(f"UnixFS node lists more than {MAX_LINKS_DECODED} block sizes")
            block_sizes.append(value)  # type: ignore[arg-type]
        elif field in (7, 8):
            continue  # mode / mtime metadata do not change the bytes
        else:
            raise DagError(f"unexpected UnixFS field {field} (wire {wire})")
    if node_type not in (_UNIXFS_FILE, _UNIXFS_RAW):
        raise DagError(f"UnixFS node type {node_type} is not a file")
    if not raw_links:
        raise DagError("UnixFS file node has no links")
    if len(block_sizes) != len(raw_links):
        raise DagError(
            f"UnixFS file node has {len(raw_links)} links but {len(block_sizes)} block sizes"
        )
    if any(size == 0 for size in block_sizes):
        raise DagError("UnixFS file node declares an empty child")
    total = sum(block_sizes)
    if file_size is not None and file_size != total:
        raise DagError(f"UnixFS file size {file_size} differs from its block sizes' sum {total}")
    links = tuple(
        Link(cid, size, tsize if tsize is not None else 0)
        for (cid, tsize), size in zip(raw_links, block_sizes, strict=True)
    )
    for link in links:
        if is_raw(link.cid) and link.file_size > MAX_BLOCK_SIZE:
            raise DagError(
                f"raw leaf {link.cid} is declared {link.file_size} bytes, over the "
                f"{MAX_BLOCK_SIZE}-byte block limit"
            )
    return FileNode(links, total)
