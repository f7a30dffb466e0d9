"""CARv1 files (https://ipld.io/specs/transport/car/carv1/): blobs packed with all their
blocks in the one format every IPFS tool imports (``ipfs dag import``, Helia's
``car().import``).

Layout::

    uvarint(len(header)) || header            header = DAG-CBOR {"roots": [CID, ...], "version": 1}
    uvarint(len(cid) + len(block)) || binary CID || block      (once per block)

Blocks are written root first, then depth-first in link order (as ``ipfs dag export``
does), each block once. Every block read from the store is hash-checked on the way (the
store verifies each read), so a CAR written here never carries a rotten block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .cids import canonical_cid, check_block, cid_from_binary, cid_info
from .store import BlockNotFoundError, BlockStore
from .unixfs import (
    MAX_BLOCK_SIZE,
    MAX_DAG_DEPTH,
    Block,
    DagError,
    _read_varint,
    decode_file_node,
    encode_varint,
    is_raw,
)

__all__ = [
    "CarError",
    "car_header",
    "dag_blocks",
    "read_car",
    "store_reader",
    "write_car",
    "write_car_file",
]

_CAR_VERSION = 1
_CID_TAG = 42  # DAG-CBOR's tag for a CID (its bytes are 0x00 + the binary CID)
_MAX_HEADER = 64 * 1024
_MAX_ROOTS = 1024


class CarError(ValueError):
    """A CAR file is malformed, or a DAG to export is incomplete in the store."""


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes([major << 5 | info]) + value.to_bytes(width, "big")
    raise ValueError(f"CBOR length {value} does not fit 64 bits")


def _cbor_text(text: str) -> bytes:
    raw = text.encode()
    return _cbor_head(3, len(raw)) + raw


def car_header(roots: Sequence[str]) -> bytes:
    """The length-prefixed CARv1 header naming ``roots`` (DAG-CBOR, keys in canonical order)."""
    if not roots:
        raise CarError("a CAR file needs at least one root CID")
    body = bytearray(_cbor_head(5, 2))  # a map of two entries; "roots" sorts before "version"
    body += _cbor_text("roots") + _cbor_head(4, len(roots))
    for root in roots:
        link = b"\x00" + cid_info(root).binary
        body += _cbor_head(6, _CID_TAG) + _cbor_head(2, len(link)) + link
    body += _cbor_text("version") + _cbor_head(0, _CAR_VERSION)
    return encode_varint(len(body)) + bytes(body)


def write_car(out: BinaryIO, roots: Sequence[str], blocks: Iterable[Block]) -> int:
    """Write a CARv1 of ``roots`` and ``blocks`` (each written once); returns bytes written."""
    written = out.write(car_header(roots))
    seen: set[str] = set()
    for block in blocks:
        if block.cid in seen:
            continue
        seen.add(block.cid)
        binary = cid_info(block.cid).binary
        written += out.write(encode_varint(len(binary) + len(block.data)) + binary + block.data)
    return written


ReadBlock = Callable[[str], bytes | None]


def dag_blocks(root: str, read: ReadBlock, where: str) -> Iterator[Block]:
    """The blocks of the UnixFS DAG under ``root``, root first then depth-first in link
    order, as ``read(cid)`` returns them (None: absent, a CarError naming it and ``where``)."""
    stack: list[tuple[str, int]] = [(canonical_cid(root), 0)]
    while stack:
        cid, depth = stack.pop()
        data = read(cid)
        if data is None:
            raise CarError(
                f"block {cid} of {root} is not in {where}; fetch the whole blob first "
                "(only complete DAGs are exported)"
            )
        yield Block(cid, data)
        if is_raw(cid):
            continue
        if depth >= MAX_DAG_DEPTH:
            raise CarError(f"the DAG under {root} is deeper than {MAX_DAG_DEPTH} levels")
        links = decode_file_node(data).links
        stack.extend((link.cid, depth + 1) for link in reversed(links))


def store_reader(store: BlockStore) -> ReadBlock:
    """``read`` for :func:`dag_blocks` over a block store (each block verified on read)."""

    def read(cid: str) -> bytes | None:
        try:
            return store.get(cid)
        except BlockNotFoundError:
            return None

    return read


def write_car_file(path: Path, roots: Sequence[str], blocks: Iterable[Block]) -> int:
    """Write a CAR to ``path`` atomically (a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as out:
            size = write_car(out, roots, blocks)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return size


# --- reading (bounded: a CAR may come from anyone) ------------------------------------------


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return _read_varint(data, pos)
    except DagError as exc:
        raise CarError(f"bad varint in a CAR file at byte {pos}") from exc


def _parse_header(body: bytes) -> list[str]:
    """The roots of a CARv1 header, as this module writes it (canonical DAG-CBOR)."""
    pos = 0

    def head() -> tuple[int, int]:
        nonlocal pos
        if pos >= len(body):
            raise CarError("truncated CAR header")
        first = body[pos]
        pos += 1
        major, info = first >> 5, first & 31
        if info < 24:
            return major, info
        width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if width is None or pos + width > len(body):
            raise CarError("malformed CBOR length in the CAR header")
        value = int.from_bytes(body[pos : pos + width], "big")
        pos += width
        return major, value

    def text() -> str:
        nonlocal pos
        major, length = head()
        if major != 3 or pos + length > len(body):
            raise CarError("expected a CBOR text key in the CAR header")
        pos += length
        return body[pos - length : pos].decode("utf-8", "replace")

    major, entries = head()
    if major != 5:
        raise CarError("the CAR header is not a CBOR map")
    roots: list[str] = []
    version = None
    for _ in range(entries):
        key = text()
        if key == "version":
            major, version = head()
            if major != 0:
                raise CarError("the CAR header's version is not an integer")
        elif key == "roots":
            major, count = head()
            if major != 4 or count > _MAX_ROOTS:
                raise CarError(f"the CAR header's roots are not a list of at most {_MAX_ROOTS}")
            for _ in range(count):
                tag_major, tag = head()
                bytes_major, length = head()
                if (tag_major, tag, bytes_major) != (6, _CID_TAG, 2) or pos + length > len(body):
                    raise CarError("a CAR root is not a tagged CID")
                link = body[pos : pos + length]
                pos += length
                if not link.startswith(b"\x00"):
                    raise CarError("a CAR root CID lacks its 0x00 multibase prefix")
                try:
                    roots.append(cid_from_binary(link[1:]))
                except ValueError as exc:  # CIDError, or multiformats' own
                    raise CarError(f"a CAR root is not a CIDv1 sha2-256: {exc}") from exc
        else:
            raise CarError(f"unexpected key {key!r} in the CAR header")
    if version != _CAR_VERSION:
        raise CarError(f"CAR version {version}; only CARv1 is read")
    if pos != len(body):
        raise CarError("trailing bytes after the CAR header")
    return roots


def read_car(data: bytes) -> tuple[list[str], list[Block]]:
    """Roots and blocks of a CARv1 held in ``data``; every block is checked against its CID."""
    length, pos = _read_uvarint(data, 0)
    if length > _MAX_HEADER or pos + length > len(data):
        raise CarError(f"CAR header of {length} bytes is truncated or over {_MAX_HEADER}")
    roots = _parse_header(data[pos : pos + length])
    pos += length
    blocks: list[Block] = []
    while pos < len(data):
        section, pos = _read_uvarint(data, pos)
        if section > MAX_BLOCK_SIZE + 128 or pos + section > len(data):
            raise CarError(f"CAR section of {section} bytes is truncated or over the block limit")
        chunk = data[pos : pos + section]
        pos += section
        # CIDv1: version, codec, hash code, digest length, digest
        version, cursor = _read_uvarint(chunk, 0)
        if version != 1:
            raise CarError(f"a CAR block is addressed by a CIDv{version}; only CIDv1 is read")
        for _ in range(2):  # codec, hash code
            _, cursor = _read_uvarint(chunk, cursor)
        digest_length, cursor = _read_uvarint(chunk, cursor)
        cid_end = cursor + digest_length
        try:
            cid = cid_from_binary(chunk[:cid_end])
            check_block(cid, chunk[cid_end:])
        except ValueError as exc:  # CIDError, or multiformats' own for odd digest sizes
            raise CarError(f"bad block in the CAR file: {exc}") from exc
        blocks.append(Block(cid, chunk[cid_end:]))
    return roots, blocks
