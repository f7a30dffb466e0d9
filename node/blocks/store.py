"""A content-addressed block store on the local filesystem (``<data>/blocks/``).

Each block is one file named by its CIDv1 (base32), sharded by two characters of the CID
like Kubo's flatfs. Writes go to ``tmp/`` and are renamed into place, so a crash never
leaves a partial block under a CID name; leftover temporary files are removed on open.
Every block is verified against its CID when stored and again when read: a block that
rotted on disk is removed and reported, never served.

The total size is capped (``max_bytes``); a put that would exceed it fails with
:class:`BlockStoreFullError` and stores nothing. Roots can be pinned (persisted under
``pins/``); :meth:`BlockStore.gc` deletes every block not reachable from a pinned root or
a temporary hold (held while a publish or fetch is in progress).

The store is safe to use from several trio tasks and threads of one process at once; a
lock file keeps a second process from opening the same directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from protocol.errors import CIDError

from .cids import canonical_cid, check_block
from .unixfs import MAX_BLOCK_SIZE, decode_file_node, is_raw

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BlockCorruptError",
    "BlockNotFoundError",
    "BlockStore",
    "BlockStoreError",
    "BlockStoreFullError",
    "BlockStoreLockedError",
    "canonical_cid",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 * 1024**3
_TMP = "tmp"
_PINS = "pins"
_LOCK = ".lock"


class BlockStoreError(Exception):
    """Base class for block store failures."""


class BlockNotFoundError(BlockStoreError, KeyError):
    """The block is not in the store."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else "block not found"


class BlockStoreFullError(BlockStoreError):
    """Storing the block would take the store over its size cap."""


class BlockCorruptError(BlockStoreError):
    """A stored block no longer matches its CID (it has been removed)."""


class BlockStoreLockedError(BlockStoreError):
    """Another process has this block directory open."""


class BlockStore:
    """Filesystem block store under ``root`` with a total size cap of ``max_bytes``.

    ``durable=True`` fsyncs each block ``put`` stores before it is renamed into place, so
    a power cut cannot leave an empty file under a CID name (a process crash cannot either
    way); reads verify every block, so even without it a damaged block is never served,
    which is why fetched blocks (``put_fetched``) skip the fsync.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                 durable: bool = True) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}: set the block store cap in bytes")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.durable = durable
        self._lock = threading.RLock()
        self._sizes: dict[str, int] = {}
        self._total = 0  # sum of _sizes, kept so a put is O(1)
        self._reserved = 0  # bytes of puts in flight, counted against the cap
        self._holds: Counter[str] = Counter()
        self._pins: set[str] = set()
        try:
            (self.root / _TMP).mkdir(parents=True, exist_ok=True)
            (self.root / _PINS).mkdir(exist_ok=True)
        except OSError as exc:
            raise BlockStoreError(
                f"cannot create the block store directory {self.root}: {exc.strerror}; "
                "check the node's data directory setting and its permissions"
            ) from exc
        self._lock_file = open(self.root / _LOCK, "a+b")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise BlockStoreLockedError(
                    f"block store {self.root} is in use by another process (or another "
                    "BlockStore in this one); give each node its own data directory"
                ) from exc
            raise
        self._scan()

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the directory lock; the store must not be used afterwards."""
        with self._lock:
            if not self._lock_file.closed:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scan(self) -> None:
        for leftover in (self.root / _TMP).iterdir():
            leftover.unlink(missing_ok=True)
        for shard in self.root.iterdir():
            if not shard.is_dir() or shard.name in (_TMP, _PINS):
                continue
            for path in shard.iterdir():
                if _is_cid_name(path.name):
                    self._sizes[path.name] = path.stat().st_size
                    self._total += self._sizes[path.name]
                else:
                    logger.warning("ignoring %s in the block store: not named by a CID", path)
        for path in (self.root / _PINS).iterdir():
            if _is_cid_name(path.name):
                self._pins.add(path.name)

    # --- blocks ---------------------------------------------------------------------------

    def _path(self, cid: str) -> Path:
        return self.root / cid[-3:-1] / cid

    @property
    def total_bytes(self) -> int:
        """Bytes of all stored blocks."""
        with self._lock:
            return self._total

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and self.has(cid)

    def has(self, cid: str) -> bool:
        """True when the block is stored (not re-verified; :meth:`get` verifies)."""
        with self._lock:
            return canonical_cid(cid) in self._sizes

    def size_of(self, cid: str) -> int | None:
        """The stored block's size in bytes, or None when it is not stored."""
        with self._lock:
            return self._sizes.get(canonical_cid(cid))

    def cids(self) -> list[str]:
        """A snapshot of the stored CIDs."""
        with self._lock:
            return list(self._sizes)

    def put(self, cid: str, data: bytes) -> bool:
        """Verify ``data`` against ``cid`` and store it; True if new, False if already stored.

        Raises CIDError when the bytes do not match, BlockStoreFullError when the cap would
        be exceeded (nothing is stored then).
        """
        return self._store(cid, data, verify=True, durable=self.durable)

    def put_fetched(self, cid: str, data: bytes) -> bool:
        """Store a block whose bytes the caller has just checked against ``cid`` (the block
        exchange verifies every block it receives): not hashed again and not fsynced. A
        fetched block needs no fsync: every read verifies it, so one a power cut damaged is
        removed and fetched again, while a blob only this node holds (one it published)
        goes through ``put``. Same results as ``put``."""
        return self._store(cid, data, verify=False, durable=False)

    def _store(self, cid: str, data: bytes, *, verify: bool, durable: bool) -> bool:
        key = canonical_cid(cid)
        if len(data) > MAX_BLOCK_SIZE:
            raise CIDError(f"block {key} is {len(data)} bytes, over the {MAX_BLOCK_SIZE}-byte block limit")
        if verify:
            check_block(key, data)
        size = len(data)
        with self._lock:
            if key in self._sizes:
                return False
            used = self._total + self._reserved
            if used + size > self.max_bytes:
                raise BlockStoreFullError(
                    f"block store {self.root} is full: {used} of {self.max_bytes} bytes used, "
                    f"block {key} needs {size} more; raise the block store cap (max_bytes) "
                    "or unpin old blobs and run gc()"
                )
            self._reserved += size
        tmp = self.root / _TMP / f"{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            final = self._path(key)
            with self._lock:
                if key in self._sizes:  # a concurrent put of the same block won
                    return False
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp, final)
                self._sizes[key] = size
                self._total += size
            if durable:
                _fsync_dir(final.parent)
            return True
        finally:
            with self._lock:
                self._reserved -= size
            tmp.unlink(missing_ok=True)

    def get(self, cid: str) -> bytes:
        """The block's bytes, verified; BlockNotFoundError or BlockCorruptError otherwise."""
        key = canonical_cid(cid)
        path = self._path(key)
        with self._lock:
            known = key in self._sizes
        if not known:
            raise BlockNotFoundError(f"block {key} is not in the block store {self.root}")
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            self._discard(key)
            raise BlockNotFoundError(f"block {key} is not in the block store {self.root}") from exc
        try:
            check_block(key, data)
        except CIDError as exc:
            self._discard(key)
            raise BlockCorruptError(
                f"block {key} in {path} was corrupt on disk and has been removed; "
                "fetch it again from a peer"
            ) from exc
        return data

    def delete(self, cid: str) -> int:
        """Remove one block; returns the bytes freed (0 if it was absent).

        Refuses (BlockStoreError) when the block is reachable from a pin or a hold: unpin
        first, or use :meth:`gc`.
        """
        key = canonical_cid(cid)
        with self._lock:
            if key in self._protected():
                raise BlockStoreError(
                    f"block {key} belongs to a pinned or in-use blob; unpin its root first"
                )
            return self._discard(key)

    def _discard(self, key: str) -> int:
        with self._lock:
            size = self._sizes.pop(key, 0)
            self._total -= size
            self._path(key).unlink(missing_ok=True)
            return size

    # --- pins, holds, gc ------------------------------------------------------------------

    def pin(self, root_cid: str) -> None:
        """Keep ``root_cid`` and every block under it through :meth:`gc` (persisted)."""
        key = canonical_cid(root_cid)
        with self._lock:
            if key in self._pins:
                return
            (self.root / _PINS / key).touch()
            self._pins.add(key)

    def unpin(self, root_cid: str) -> None:
        """Stop keeping ``root_cid``; its blocks go at the next :meth:`gc`."""
        key = canonical_cid(root_cid)
        with self._lock:
            self._pins.discard(key)
            (self.root / _PINS / key).unlink(missing_ok=True)

    def pins(self) -> set[str]:
        """The pinned root CIDs."""
        with self._lock:
            return set(self._pins)

    @contextlib.contextmanager
    def hold(self, *cids: str) -> Iterator[None]:
        """Protect ``cids`` and the DAGs under them from :meth:`gc` and :meth:`delete` while
        a publish or fetch uses them (in memory only, not persisted)."""
        keys = [canonical_cid(cid) for cid in cids]
        with self._lock:
            self._holds.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._holds.subtract(keys)
                for key in keys:
                    if self._holds[key] <= 0:
                        self._holds.pop(key, None)

    def _protected(self) -> set[str]:
        with self._lock:
            roots = self._pins | set(self._holds)
            return set(self.walk(roots))

    def walk(self, roots: Iterable[str]) -> Iterator[str]:
        """CIDs of the stored blocks reachable from ``roots`` (missing subtrees are skipped)."""
        seen: set[str] = set()
        stack = [canonical_cid(root) for root in roots]
        while stack:
            cid = stack.pop()
            if cid in seen or not self.has(cid):
                continue
            seen.add(cid)
            yield cid
            if is_raw(cid):
                continue
            try:
                node = decode_file_node(self.get(cid))
            except (BlockStoreError, CIDError) as exc:
                logger.warning("cannot follow the links of %s during a walk: %s", cid, exc)
                continue
            stack.extend(link.cid for link in node.links)

    def gc(self) -> int:
        """Delete every block not reachable from a pin or hold; returns the bytes freed."""
        with self._lock:
            keep = self._protected()
            return sum(self._discard(cid) for cid in list(self._sizes) if cid not in keep)


def _is_cid_name(name: str) -> bool:
    try:
        return canonical_cid(name) == name
    except CIDError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
