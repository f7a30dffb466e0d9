"""Block exchange: publish blobs as UnixFS DAGs and fetch them by CID from peers.

Wire protocol ``/fl-node/blocks/1.0.0``; a stream carries any number of requests in turn::

    request   uvarint length || msgpack {"v": 1, "want": [CID text, ...]}
    response  for each wanted CID, in order: status u8 || length u32 big-endian || bytes
              status 0 = block follows, 1 = don't have (length 0),
              2 = busy (length 0; the server closes the stream: retry later or elsewhere)

Clients keep a few streams per provider open between requests, which saves opening and
negotiating (multistream-select) a stream per request. A server resets a stream idle for
``idle_stream_timeout_s`` and lets a new stream evict the longest-idle one when a limit is
reached, so idle pooled streams never lock a peer out.

Why not py-libp2p's bitswap (compared in ``bench/block_fetch.py``): it stores blocks a peer
pushes without being asked, assembles whole files in RAM without a size bound and cuts
blocks to 63 KB. This protocol asks only for blocks it wants, with the exact size each must
have (known from the verified parent), so every read is bounded before it happens and every
block is hashed before it is stored or used. The blocks themselves are ordinary IPFS blocks
(see :mod:`node.blocks.unixfs`).

Fetching: the root comes first; its declared file size is checked against ``max_size``
before any other block is asked for; then leaves are fetched in batches, several requests
in flight over all providers. A provider that sends bytes not matching the CID is dropped
for the rest of the fetch (and reported through ``on_bad_peer``); one that times out,
resets or dies is dropped too; a block nobody has ends the fetch with a clear error.
A client's reads and stream opens fail when the provider has been silent on every block
stream for ``read_timeout_s`` (see ``_PeerClock``); a provider is dropped after
``provider_strikes`` failed requests in a row. A node's fetches share
``requests_per_provider`` slots per provider; a fetch prefers providers with a free slot and
gives a batch back after ``slot_wait_s`` without one when another provider could serve it,
so one slow provider that many fetches name does not hold anyone's last block. A fetched
blob is announced through ``provide``, so every node that fetched it serves it too.

Serving is bounded and fair (see :class:`BlockExchange`): request size, CIDs per request,
streams and requests per peer and in total, a share of slots that strangers cannot take, a
deadline for each request to arrive in full that trickled bytes cannot extend, a timeout on
every whole response and on idle streams, and strikes and bans for peers that hold slots
without asking.
"""

from __future__ import annotations

import logging
import math
import random
import struct
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import msgpack
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from protocol.errors import CIDError

from .cids import canonical_cid, check_block
from .standing import PeerStanding
from .store import (
    BlockCorruptError,
    BlockNotFoundError,
    BlockStore,
    BlockStoreError,
    BlockStoreFullError,
)
from .streams import maybe_await, peer_info, read_first_byte, reset_quietly, reset_shielded
from .unixfs import (
    MAX_BLOCK_SIZE,
    MAX_DAG_DEPTH,
    DagError,
    FileNode,
    build_file_dag,
    decode_file_node,
    is_raw,
)

__all__ = [
    "PROTOCOL_ID",
    "RESPONSE_HEADER",
    "STATUS_BLOCK",
    "STATUS_BUSY",
    "STATUS_DONT_HAVE",
    "BlobTooLargeError",
    "BlockExchange",
    "BlockFetchError",
    "BlockUnavailableError",
    "ExchangeLimits",
    "FetchTimeoutError",
    "decode_request",
    "encode_request",
]

logger = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/fl-node/blocks/1.0.0")
# Verified leaves waiting to be written, and the threads writing them, per fetch.
_WRITE_QUEUE_BLOCKS = 8
_WRITERS = 2
WIRE_VERSION = 1

STATUS_BLOCK = 0
STATUS_DONT_HAVE = 1
STATUS_BUSY = 2
RESPONSE_HEADER = struct.Struct(">BI")  # status, length of the block that follows

FindProviders = Callable[[str], Awaitable[Sequence[PeerInfo]] | Sequence[PeerInfo]]
Provide = Callable[[str], Awaitable[object] | object]  # e.g. Discovery.provide -> bool
OnBadPeer = Callable[[PeerID, str], None]
IsMember = Callable[[PeerID], bool]


def _nobody_is_member(peer: PeerID) -> bool:
    """The default: every peer is a stranger (no slots are reserved for anyone it names)."""
    return False


class BlockFetchError(Exception):
    """A blob could not be fetched; the message says which block and which providers."""


class BlobTooLargeError(BlockFetchError):
    """The blob's declared size exceeds the caller's ``max_size`` (nothing was fetched)."""


class BlockUnavailableError(BlockFetchError):
    """No reachable, honest provider served a block of the blob."""


class FetchTimeoutError(BlockFetchError):
    """The whole fetch took longer than its ``timeout_s``."""


class _ProviderFailed(Exception):
    """One request to one provider failed (transport error, timeout, protocol violation)."""


class _SlotBusy(Exception):
    """Every slot of a provider stayed held by other fetches for ``slot_wait_s``."""


class _BadBlock(_ProviderFailed):
    """The provider sent bytes that do not match the CID we asked for."""


@dataclass(frozen=True)
class ExchangeLimits:
    """Bounds for both sides of the exchange. Timeouts are in seconds."""

    max_cids_per_request: int = 32
    """The most CIDs a server answers in one request (and a client asks for)."""
    max_request_bytes: int = 8 * 1024
    batch_size: int = 2
    """CIDs a client asks per request: 2 x 256 KiB leaves = 512 KiB per round trip."""
    requests_in_flight: int = 8
    """Concurrent requests of one fetch, over all providers."""
    requests_per_provider: int = 2
    """Concurrent requests to one provider, over all fetches (below max_streams_per_peer).

    With ``batch_size`` this bounds the bulk data queued on one connection: yamux sends
    window updates, stream opens and protocol negotiation through the same FIFO write path
    and TCP buffers as the blocks, so 4 x 1 MiB in flight per peer delayed them by seconds
    under load (window waits over yamux's 5 s limit reset streams; negotiations passed
    libp2p's 10 s limit). Two peers fetching 6.7 MB from each other on loopback moved
    ~40 MB/s with either setting."""
    slot_wait_s: float = 5.0
    """Client: how long a request waits for one of a provider's ``requests_per_provider``
    slots (other fetches hold them) before its blocks go back to the fetch for another
    provider, when the fetch has another; the provider is asked again after
    ``holder_recheck_s``. A crowd's fetches
    share their providers, and a batch queued behind a slow one held the last block of a
    fetch for minutes while other holders were free."""
    max_streams_per_peer: int = 8
    """Block streams a server keeps open for one peer (busy or idle); more get ``busy``."""
    max_requests_per_peer: int = 4
    """Requests of one peer a server answers at once (received in full, response not yet
    written); more get ``busy``. Clients send at most ``requests_per_provider``."""
    max_streams_total: int = 64
    member_reserve: int = 16
    """Slots of ``max_streams_total`` only task members (``is_member``) may take: strangers
    share the rest, so a crowd of fresh identities never locks members out."""
    read_timeout_s: float = 10.0
    """Client: longest silence of a peer; a read (or a stream open) fails once nothing at
    all has moved between us and that peer, on any block stream, for this long."""
    request_arrival_s: float = 10.0
    """Server: the deadline for a request to arrive in full, counted from a new stream's
    opening (or from the first byte of a later request on a reused stream); bytes trickled
    in meanwhile do not extend it, and a peer that misses it is struck. Kept apart from
    ``read_timeout_s``: a client may drop a silent provider quickly (another holder will
    do), but a strike must not fall on an honest peer whose request waited seconds behind
    a loaded event loop (its own or ours) before it reached the socket."""
    strikes_to_ban: int = 3
    """Strikes (a slot held without asking, a response left unread) after which a server
    bans a stranger for ``ban_s``; each held slot also drops the stranger's connection."""
    ban_s: float = 600.0
    request_timeout_s: float = 60.0
    """Longest time for one whole request/response, on either side."""
    idle_stream_timeout_s: float = 30.0
    """A server resets a reused stream idle this long; clients reuse streams idle half that."""
    connect_timeout_s: float = 10.0
    find_providers_timeout_s: float = 10.0
    busy_retries: int = 20
    """How often a fetch retries a provider that answered busy before dropping it."""
    provider_strikes: int = 5
    """Failed requests in a row (timeouts, resets, stream opens) after which a fetch drops a
    provider; a wrong block drops it at once. The pause before the next try doubles from
    ``holder_recheck_s`` (0.5, 1, 2, 4 s: ~8 s in all): a publisher whose node is briefly
    overloaded (a crowd fetching its update at once; 50 nodes on one event loop failed
    stream opens three times in under a second) is the only holder, and dropping it fails
    the fetch for good."""
    connected_holders: int = 6
    """Connected task members (``is_member``) a fetch also asks once its named providers
    are busy, failing or out of blocks: whoever fetched the blob already holds it and
    serves it, so one publisher is not the only source for a crowd."""
    holder_recheck_s: float = 0.5
    """A connected member that lacks a block is asked again after this pause, doubled on
    each miss up to 8 times it: it may be fetching the same blob and hold it a moment later."""
    holder_rechecks: int = 10
    """Misses in a row after which a fetch stops asking a connected member (~30 s with the
    default pause: a crowd fetching from a publisher that a loaded host serves slowly)."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= self.max_cids_per_request:
            raise ValueError(
                f"batch_size must be 1..max_cids_per_request ({self.max_cids_per_request}), "
                f"got {self.batch_size}"
            )
        for name in ("requests_in_flight", "requests_per_provider", "max_streams_per_peer",
                     "max_requests_per_peer", "max_streams_total", "max_request_bytes",
                     "provider_strikes", "strikes_to_ban", "holder_rechecks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.member_reserve < self.max_streams_total:
            raise ValueError(
                f"member_reserve must be 0..max_streams_total-1 ({self.max_streams_total - 1}), "
                f"got {self.member_reserve}: strangers need at least one slot"
            )
        if self.connected_holders < 0:
            raise ValueError(f"connected_holders must be >= 0, got {self.connected_holders}")
        for name in ("read_timeout_s", "request_arrival_s", "request_timeout_s",
                     "idle_stream_timeout_s", "connect_timeout_s", "find_providers_timeout_s",
                     "ban_s", "holder_recheck_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


# --- wire format (pure) -------------------------------------------------------------------


def encode_request(cids: Sequence[str]) -> bytes:
    """The length-prefixed request frame asking for ``cids``."""
    body = msgpack.packb({"v": WIRE_VERSION, "want": list(cids)})
    return _uvarint(len(body)) + body


def decode_request(body: bytes, max_cids: int) -> list[str]:
    """Parse a request body (without its length prefix) into canonical CIDs.

    Raises CIDError on anything malformed, a wrong version, or more than ``max_cids`` CIDs.
    """
    try:
        # The frame is already bounded (max_request_bytes); these limits only keep msgpack
        # from preallocating for absurd declared lengths.
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, max_array_len=4096,
                                  max_map_len=8, max_str_len=256, max_bin_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CIDError(f"block request is not valid msgpack: {exc}") from exc
    if not isinstance(message, dict) or message.get("v") != WIRE_VERSION:
        raise CIDError(f"block request is not a version {WIRE_VERSION} request map")
    want = message.get("want")
    if not isinstance(want, list) or not want or not all(isinstance(c, str) for c in want):
        raise CIDError("block request has no non-empty 'want' list of CID strings")
    if len(want) > max_cids:
        raise CIDError(f"block request asks for {len(want)} CIDs, more than {max_cids}")
    return [canonical_cid(cid) for cid in want]


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _PeerClock:
    """Per-peer silence deadlines that any traffic with that peer pushes back.

    Why not a plain timeout per read: all streams to a peer share one yamux connection
    and all peers share one trio loop. Under load (many fetches at once, a busy loop, the
    GIL held by training threads) a healthy peer's bytes arrive for other streams while one
    stream waits its turn for many seconds; a per-stream timeout then drops a working
    provider, and the fetch waits for its other requests to time out too (stalls
    of a minute). A peer is only declared stalled when nothing at all has moved between
    us and it for the whole ``patience``.
    """

    def __init__(self) -> None:
        self._watches: dict[PeerID, dict[trio.CancelScope, float]] = {}

    def progress(self, peer: PeerID) -> None:
        """Bytes moved between us and ``peer``: push back every deadline on it."""
        watches = self._watches.get(peer)
        if watches:
            now = trio.current_time()
            for scope, patience in watches.items():
                scope.deadline = max(scope.deadline, now + patience)

    @contextmanager
    def silence_limit(self, peer: PeerID, patience: float) -> Iterator[None]:
        """Raise trio.TooSlowError if ``peer`` is silent for ``patience`` seconds."""
        scope = trio.CancelScope(deadline=trio.current_time() + patience)
        watches = self._watches.setdefault(peer, {})
        watches[scope] = patience
        try:
            with scope:
                yield
        finally:
            del watches[scope]
            if not watches and self._watches.get(peer) is watches:
                del self._watches[peer]
        if scope.cancelled_caught:
            raise trio.TooSlowError(f"peer {peer} silent for {patience} s")


async def _read_exactly(stream: INetStream, size: int, clock: _PeerClock, peer: PeerID,
                        patience: float) -> bytes:
    """Read exactly ``size`` bytes; fails once ``peer`` is silent for ``patience``
    (a paused reader can otherwise hang forever after the writer resets)."""
    buf = bytearray()
    while len(buf) < size:
        with clock.silence_limit(peer, patience):
            chunk = await stream.read(size - len(buf))
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {size} bytes")
        clock.progress(peer)
        buf += chunk
    return bytes(buf)


async def _read_uvarint_frame(stream: INetStream, first: int, max_size: int) -> bytes:
    """A uvarint-length-prefixed frame whose first prefix byte ``first`` was already read.

    No timeout of its own: the server reads a request under one fixed deadline."""
    length = 0
    byte = first
    for shift in range(0, 35, 7):
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        byte = (await _read_unbounded(stream, 1))[0]
    else:
        raise CIDError("request length prefix is longer than 5 bytes")
    if length > max_size:
        raise CIDError(f"request frame of {length} bytes exceeds the {max_size}-byte limit")
    return await _read_unbounded(stream, length)


async def _read_unbounded(stream: INetStream, size: int) -> bytes:
    """Exactly ``size`` bytes with no timeout (callers bound it); EOFError if the stream ends."""
    buf = bytearray()
    while len(buf) < size:
        chunk = await stream.read(size - len(buf))
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


# --- fetch bookkeeping ----------------------------------------------------------------------


@dataclass
class _Want:
    """A block still to get: where its file bytes go and how big it must be."""

    cid: str
    offset: int
    size: int | None  # file bytes under it; None only for the root
    depth: int = 0


@dataclass(eq=False)
class _Session:
    """One stream this node is serving."""

    peer: PeerID
    stream: INetStream
    member: bool  # counted against max_streams_total only, not the strangers' share
    idle_since: float | None = None  # set while a reused stream waits for its next request
    idle_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    dropped: bool = False  # its peer was dropped: end quietly, strike nobody again


class _HeldWithoutAsking(Exception):
    """A stream's request did not arrive in full by its deadline."""


class _ResponseUnread(Exception):
    """The peer did not read its response within ``request_timeout_s``."""


@dataclass
class _Progress:
    answered: bool = False  # a response header arrived on this stream for this request


@dataclass
class _Provider:
    info: PeerInfo
    in_flight: int = 0
    busy: int = 0
    strikes: int = 0  # failed requests since its last delivered block
    down: str | None = None  # why it was dropped for this fetch
    connected: bool = False  # a connected member asked on chance, not named as a holder
    misses: int = 0  # "don't have" answers of a connected member since its last block
    ask_at: float = -math.inf  # a connected member that missed is not asked before this


@dataclass
class _BlobFetch:
    """The state of one blob fetch: pending blocks, providers, the assembly buffer."""

    root: str
    max_size: int
    pending: deque[_Want] = field(default_factory=deque)
    tried: dict[str, set[PeerID]] = field(default_factory=dict)  # cid -> providers that failed it
    providers: dict[PeerID, _Provider] = field(default_factory=dict)
    buffer: bytearray | None = None  # allocated once the root says how big the blob is
    raw_root: bytes | None = None
    in_flight: int = 0
    remaining: int = 1  # blocks not yet placed (the root counts until it arrives)
    changed: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None  # set once: the fetch stops and raises it
    cancel_scope: trio.CancelScope | None = None
    discovering: bool = False  # a find_providers lookup is running
    to_store: trio.MemorySendChannel[tuple[str, bytes]] | None = None  # verified leaves
    setbacks_at_lookup: int | None = None  # setbacks() when find_providers last ran

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()
        self.notify()

    def setbacks(self) -> int:
        """Grows whenever a provider is dropped or lacks a block."""
        dropped = sum(1 for provider in self.providers.values() if provider.down)
        return dropped + sum(len(peers) for peers in self.tried.values())

    def usable(self) -> list[_Provider]:
        return [p for p in self.providers.values() if p.down is None]

    def next_recheck(self) -> float:
        """When the next connected member waiting to be asked again may be (inf: none)."""
        now = trio.current_time()
        waiting = [p.ask_at for p in self.usable() if p.ask_at > now]
        return min(waiting, default=math.inf)


class BlockExchange:
    """Serves this node's blocks and fetches blobs from peers over ``PROTOCOL_ID``.

    ``find_providers(cid)`` (sync or async) names peers that may hold a blob, e.g. the DHT;
    ``provide(cid)`` (sync or async) announces a published root, and every fetched one, so
    whoever fetched a blob serves it too; ``on_bad_peer(peer, why)`` hears about providers
    that sent wrong bytes and peers that held serving slots without asking, for peer
    scoring; ``is_member(peer)`` names the task's members, who may use the serving slots
    strangers cannot (``ExchangeLimits.member_reserve``); it can be set later, as an
    attribute, once the members are known.

    Serving is fair to honest peers under attack: each peer has bounded streams and
    requests; a request must arrive in full by a fixed deadline from its stream's opening
    (trickled bytes do not extend it); a stranger that misses it is dropped (its block
    streams reset, its connection closed) and struck, and banned after ``strikes_to_ban``
    strikes; members keep a reserve of slots however many strangers connect (a member
    that misses the deadline is struck without being dropped; banned, it is served from
    the strangers' share only).
    """

    def __init__(
        self,
        host: IHost,
        store: BlockStore,
        *,
        find_providers: FindProviders | None = None,
        provide: Provide | None = None,
        on_bad_peer: OnBadPeer | None = None,
        limits: ExchangeLimits | None = None,
        is_member: IsMember | None = None,
    ) -> None:
        self.host = host
        self.store = store
        self.limits = limits or ExchangeLimits()
        self.is_member: IsMember = is_member or _nobody_is_member
        self._find_providers = find_providers
        self._provide = provide
        self._on_bad_peer = on_bad_peer
        self._serving: Counter[PeerID] = Counter()  # streams being served, per peer
        self._answering: Counter[PeerID] = Counter()  # requests being answered, per peer
        self._sessions: set[_Session] = set()
        self._standing = PeerStanding(self.limits.strikes_to_ban, self.limits.ban_s)
        self._started = False
        self._idle: dict[PeerID, list[tuple[INetStream, float]]] = {}  # pooled client streams
        self._slots: dict[PeerID, trio.Semaphore] = {}
        self._clock = _PeerClock()
        self._background: trio.Nursery | None = None  # announcements, while entered
        self._background_cm: AbstractAsyncContextManager[trio.Nursery] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start answering block requests on the host."""
        if not self._started:
            self.host.set_stream_handler(PROTOCOL_ID, self._serve)
            self._started = True

    def stop(self) -> None:
        """Stop answering new block requests (requests in progress finish or time out)."""
        if self._started:
            self.host.remove_stream_handler(PROTOCOL_ID)
            self._started = False

    async def __aenter__(self) -> BlockExchange:
        # Announcing a fetched blob runs in the background: a slow DHT must not delay the
        # fetch's caller. Without ``async with`` the fetch awaits the announcement itself.
        self._background_cm = trio.open_nursery()
        self._background = await self._background_cm.__aenter__()
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        background, manager = self._background, self._background_cm
        self._background = self._background_cm = None
        if background is not None and manager is not None:
            background.cancel_scope.cancel()
            # The body's exception, if any, propagates as it is: the announcements swallow
            # their own errors, so the nursery has nothing to add.
            await manager.__aexit__(None, None, None)
        await self.close_idle_streams()

    @property
    def streams_served(self) -> int:
        """Streams this node is serving right now (busy or idle between requests)."""
        return len(self._sessions)

    @property
    def streams_idle(self) -> int:
        """Served streams idle between requests (these give way to new streams)."""
        return sum(1 for session in self._sessions if session.idle_since is not None)

    def streams_of(self, peer: PeerID) -> int:
        """Streams this node is serving to ``peer`` right now."""
        return self._serving[peer]

    def is_banned(self, peer: PeerID) -> bool:
        """True while ``peer``'s block streams are refused (see ``ExchangeLimits.strikes_to_ban``),
        or, for a member, while it may not use the members' reserve."""
        return self._standing.banned(peer, trio.current_time())

    def strikes(self, peer: PeerID) -> int:
        """Strikes against ``peer`` since its last ban."""
        return self._standing.strikes(peer)

    # --- publish ----------------------------------------------------------------------------

    async def publish(self, blob: bytes, *, pin: bool = True, announce_aside: bool = False) -> str:
        """Store ``blob`` as a UnixFS DAG, pin it, announce it; returns the root CID. With
        ``announce_aside`` it returns once the blob is stored and served, announcing it in
        the background (a DHT record takes seconds a caller need not wait for)."""
        root, blocks = await trio.to_thread.run_sync(build_file_dag, blob)

        def store_all() -> None:
            with self.store.hold(*(block.cid for block in blocks)):
                needed = sum(len(b.data) for b in blocks if not self.store.has(b.cid))
                if self.store.total_bytes + needed > self.store.max_bytes:
                    raise BlockStoreFullError(
                        f"publishing {len(blob)} bytes needs {needed} more bytes in the block "
                        f"store, which holds {self.store.total_bytes} of {self.store.max_bytes}; "
                        "raise the block store cap (max_bytes) or unpin old blobs and run gc()"
                    )
                for block in blocks:
                    self.store.put(block.cid, block.data)
                if pin:
                    self.store.pin(root)

        await trio.to_thread.run_sync(store_all)
        if announce_aside and self._background is not None:
            self._background.start_soon(self._announce, root)
        else:
            await self._announce(root)
        return root

    async def _announce(self, root: str) -> None:
        """Tell ``provide`` that this node serves ``root`` (best effort)."""
        if self._provide is None:
            return
        try:
            await maybe_await(self._provide(root))
        except Exception as exc:  # announcing is best effort: explicit providers still work
            logger.warning("announcing %s as provided failed: %s", root, exc)

    # --- serve ------------------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        opened = trio.current_time()
        peer = stream.muxed_conn.peer_id
        listed = self._member(peer)
        banned = self._standing.banned(peer, opened)
        if banned and not listed:
            logger.debug("refusing a block stream from banned peer %s", peer)
            await reset_quietly(stream)
            await self._disconnect(peer)
            return
        # A member that keeps holding slots without asking waits with the strangers.
        session = self._admit(peer, listed and not banned, stream)
        if session is None:
            await self._answer_busy(stream)
            return
        try:
            await self._serve_session(session, opened)
        except _HeldWithoutAsking as exc:
            if not session.dropped:
                await self._drop_peer(session, str(exc))
        except _ResponseUnread as exc:
            self._strike(session, str(exc))
            await reset_quietly(stream)
        except Exception as exc:  # a broken or hostile peer; its stream is reset, we go on
            logger.debug("block request from %s failed: %r", peer, exc)
            await reset_quietly(stream)
        finally:
            self._release(session)

    async def _serve_session(self, session: _Session, opened: float) -> None:
        """Answer requests on one stream until the client closes it (or a limit ends it)."""
        limits = self.limits
        stream, peer = session.stream, session.peer
        first: int | None = None
        deadline = opened + limits.request_arrival_s
        served = 0
        while True:
            if served:
                # A reused stream may idle, and may be evicted while idle to make room for
                # another stream; its next request's deadline starts at its first byte.
                session.idle_scope = trio.CancelScope()
                session.idle_since = trio.current_time()
                with session.idle_scope, trio.fail_after(limits.idle_stream_timeout_s):
                    first = await read_first_byte(stream)
                session.idle_since = None
                if session.idle_scope.cancelled_caught:
                    await reset_quietly(stream)
                    return
                if first is None:
                    break
                deadline = trio.current_time() + limits.request_arrival_s
            body = await self._receive_request(stream, first, deadline)
            if body is None:  # the client closed its side: done
                break
            cids = decode_request(body, limits.max_cids_per_request)
            if self._answering[peer] >= limits.max_requests_per_peer:
                await self._answer_busy(stream)
                return
            self._answering[peer] += 1
            try:
                await self._answer(stream, peer, cids)
            finally:
                self._answering[peer] -= 1
                if self._answering[peer] <= 0:
                    del self._answering[peer]
            served += 1
        await stream.close()

    async def _receive_request(self, stream: INetStream, first: int | None,
                               deadline: float) -> bytes | None:
        """The next request frame, in full by ``deadline``; None if the client closed."""
        with trio.move_on_at(deadline):
            if first is None:
                first = await read_first_byte(stream)
                if first is None:
                    return None
            return await _read_uvarint_frame(stream, first, self.limits.max_request_bytes)
        raise _HeldWithoutAsking(
            f"held a block stream without a complete request for {self.limits.request_arrival_s} s"
        )

    async def _answer(self, stream: INetStream, peer: PeerID, cids: list[str]) -> None:
        with trio.move_on_after(self.limits.request_timeout_s):
            for cid in cids:
                data = self._local_block(cid)
                if data is None:
                    await stream.write(RESPONSE_HEADER.pack(STATUS_DONT_HAVE, 0))
                else:
                    await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
                self._clock.progress(peer)  # the peer reads: it is alive
            return
        raise _ResponseUnread(
            f"left a response unread for {self.limits.request_timeout_s} s"
        )

    def _member(self, peer: PeerID) -> bool:
        try:
            return bool(self.is_member(peer))
        except Exception as exc:  # a broken callback must not stop serving
            logger.warning("is_member(%s) failed, serving it as a stranger: %r", peer, exc)
            return False

    def _admit(self, peer: PeerID, member: bool, stream: INetStream) -> _Session | None:
        """Count a new stream from ``peer`` against the limits; None means answer busy.

        Over a limit, the longest-idle reused stream that the limit counts is evicted
        instead, so idle pooled streams never lock out real requests. Strangers share
        ``max_streams_total - member_reserve`` slots and evict only strangers' streams.
        """
        limits = self.limits
        if self._serving[peer] >= limits.max_streams_per_peer:
            if not self._evict_idle(lambda s: s.peer == peer):
                return None
        if not member:
            strangers = sum(1 for s in self._sessions if not s.member)
            if strangers >= limits.max_streams_total - limits.member_reserve:
                if not self._evict_idle(lambda s: not s.member):
                    return None
        if len(self._sessions) >= limits.max_streams_total:
            if not self._evict_idle(lambda s: member or not s.member):
                return None
        session = _Session(peer, stream, member)
        self._sessions.add(session)
        self._serving[peer] += 1
        return session

    def _evict_idle(self, counted: Callable[[_Session], bool]) -> bool:
        """End the longest-idle session that ``counted`` selects; False if none is idle."""
        idle = [s for s in self._sessions if s.idle_since is not None and counted(s)]
        victim = min(idle, key=lambda s: s.idle_since or 0.0, default=None)
        if victim is None:
            return False
        self._release(victim)
        victim.idle_scope.cancel()
        return True

    def _release(self, session: _Session) -> None:
        if session in self._sessions:
            self._sessions.discard(session)
            self._serving[session.peer] -= 1
            if self._serving[session.peer] <= 0:
                del self._serving[session.peer]

    def _strike(self, session: _Session, why: str) -> None:
        """Count a strike against the session's peer and report it.

        A banned member is not refused: it loses the members' reserve for ``ban_s``."""
        peer = session.peer
        banned = self._standing.strike(peer, trio.current_time())
        logger.info("block peer %s struck%s: %s", peer, " and banned" if banned else "", why)
        self._report_bad_peer(peer, why)

    async def _drop_peer(self, session: _Session, why: str) -> None:
        """Strike the peer; end all its block streams, and close a stranger's connection."""
        self._strike(session, why)
        peer = session.peer
        stranger = not self._member(peer)  # a member's connection carries the task's gossip
        victims = [s for s in self._sessions if s.peer == peer and s is not session] if stranger else []
        for victim in [session, *victims]:
            victim.dropped = True
        for victim in [session, *victims]:
            await reset_shielded(victim.stream)
        if stranger:
            await self._disconnect(peer)

    async def _disconnect(self, peer: PeerID) -> None:
        # Shielded: closing the connection cancels the stream handlers running on it,
        # this one included.
        with trio.CancelScope(shield=True), trio.move_on_after(self.limits.connect_timeout_s):
            try:
                await self.host.disconnect(peer)
            except Exception as exc:  # already gone
                logger.debug("disconnecting %s raised %r", peer, exc)

    def _report_bad_peer(self, peer: PeerID, why: str) -> None:
        if self._on_bad_peer is not None:
            try:
                self._on_bad_peer(peer, why)
            except Exception as exc:
                logger.warning("on_bad_peer callback failed: %s", exc)

    async def _answer_busy(self, stream: INetStream) -> None:
        try:
            with trio.fail_after(self.limits.read_timeout_s):
                await stream.write(RESPONSE_HEADER.pack(STATUS_BUSY, 0))
                await stream.close()
        except Exception:
            await reset_quietly(stream)

    def _local_block(self, cid: str) -> bytes | None:
        try:
            return self.store.get(cid)
        except (BlockNotFoundError, BlockCorruptError):
            return None

    # --- fetch ------------------------------------------------------------------------------

    async def fetch(
        self,
        root_cid: str,
        max_size: int,
        *,
        providers: Iterable[PeerInfo | str] = (),
        timeout_s: float | None = None,
        pin: bool = False,
    ) -> bytes:
        """Fetch the blob under ``root_cid`` (at most ``max_size`` bytes), verifying every block.

        Blocks already in the local store are used; fetched ones are stored (and the root
        pinned when ``pin``). Providers are ``providers`` (PeerInfo or full multiaddrs
        ending in /p2p/...) plus whatever ``find_providers`` returns. A blob fetched from
        peers is announced through ``provide``: this node serves it onward, so a publisher
        that serves one peer only cannot keep it from the others.
        """
        root = canonical_cid(root_cid)
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1 byte, got {max_size}")
        state = _BlobFetch(root, max_size)
        for provider in providers:
            info = peer_info(provider)
            if info.peer_id != self.host.get_id():
                state.providers.setdefault(info.peer_id, _Provider(info))
        state.pending.append(_Want(root, 0, None))
        with self.store.hold(root):
            self._take_local(state)
            from_peers = bool(state.remaining) and state.error is None
            if from_peers:
                deadline = timeout_s if timeout_s is not None else float("inf")
                with trio.move_on_after(deadline) as scope:
                    async with trio.open_nursery() as nursery:
                        state.cancel_scope = nursery.cancel_scope
                        to_store, stored = trio.open_memory_channel[tuple[str, bytes]](
                            _WRITE_QUEUE_BLOCKS)
                        state.to_store = to_store
                        async with stored:
                            for _ in range(_WRITERS):
                                nursery.start_soon(self._write_leaves, state, stored.clone())
                        async with to_store, trio.open_nursery() as requests:
                            if self._find_providers is not None and not state.providers:
                                # Named providers are asked first; the DHT (a dozen
                                # queries) only once they fail or lack a block.
                                state.discovering = True
                                requests.start_soon(self._discover, state)
                            for _ in range(self.limits.requests_in_flight):
                                requests.start_soon(self._worker, state)
                if scope.cancelled_caught:
                    raise FetchTimeoutError(
                        f"fetching {root} did not finish within {timeout_s} s ({state.remaining} "
                        "blocks missing); retry, or raise timeout_s for slow peers"
                    )
            if state.error is not None:
                raise state.error
            if pin:
                self.store.pin(root)
        if from_peers:
            if self._background is not None:
                self._background.start_soon(self._announce, root)
            else:
                await self._announce(root)
        if state.raw_root is not None:
            return state.raw_root
        assert state.buffer is not None
        return bytes(state.buffer)

    async def _discover(self, state: _BlobFetch) -> int:
        """Ask ``find_providers`` for more providers; returns how many new ones it named."""
        if self._find_providers is None:
            return 0
        found: Sequence[PeerInfo] = ()
        state.discovering = True
        state.setbacks_at_lookup = state.setbacks()
        try:
            with trio.move_on_after(self.limits.find_providers_timeout_s):
                found = await maybe_await(self._find_providers(state.root))
        except Exception as exc:
            logger.warning("find_providers(%s) failed: %s", state.root, exc)
        finally:
            state.discovering = False
            state.notify()
        added = 0
        for info in found:
            known = state.providers.get(info.peer_id)
            if known is not None and known.connected:  # it announced the blob: a holder
                known.connected = False
                known.ask_at = -math.inf
                added += known.down is None
            elif info.peer_id != self.host.get_id() and known is None:
                state.providers[info.peer_id] = _Provider(info)
                added += 1
        return added

    def _widen(self, state: _BlobFetch) -> int:
        """Add connected task members to the fetch's providers (see
        ``ExchangeLimits.connected_holders``), in random order so that a crowd fetching one
        blob spreads over its holders; returns how many were added."""
        limit = self.limits.connected_holders
        have = sum(1 for p in state.providers.values() if p.connected)
        if have >= limit:
            return 0
        me = self.host.get_id()
        peers = [peer for peer in self.host.get_connected_peers()
                 if peer != me and peer not in state.providers and self._member(peer)]
        chosen = random.sample(peers, min(len(peers), limit - have))
        for peer in chosen:
            state.providers[peer] = _Provider(PeerInfo(peer, []), connected=True)
        if chosen:
            logger.debug("asking %d connected members for %s too", len(chosen), state.root)
            state.notify()
        return len(chosen)

    def _take_local(self, state: _BlobFetch) -> None:
        """Use every pending block that is already in the local store."""
        for want in list(state.pending):
            if not self.store.has(want.cid):
                continue
            try:
                data = self.store.get(want.cid)
            except (BlockNotFoundError, BlockCorruptError):
                continue  # removed meanwhile, or rotted (and removed): fetch it
            state.pending.remove(want)
            try:
                self._place(state, want, data)
            except DagError as exc:  # verified bytes, so the DAG itself is unusable
                state.fail(BlockFetchError(f"{state.root} is not a usable file DAG: {exc}"))
                return
            except BlobTooLargeError as exc:
                state.fail(exc)
                return

    async def _worker(self, state: _BlobFetch) -> None:
        while True:
            picked = await self._next_request(state)
            if picked is None:
                return
            provider, wants = picked
            provider.in_flight += 1
            state.in_flight += 1
            try:
                await self._request(state, provider, wants)
            except _SlotBusy:
                # busy with other fetches, not failing: ask the others, and it later
                provider.ask_at = trio.current_time() + self.limits.holder_recheck_s
                self._widen(state)
            except _BadBlock as exc:
                self._drop_provider(state, provider, str(exc), bad=True)
                self._widen(state)
            except _ProviderFailed as exc:
                self._widen(state)
                # A reset or timeout may be the load, not the provider (yamux resets a
                # stream whose window stays shut 5 s): retry a few times before dropping.
                provider.strikes += 1
                if provider.strikes >= self.limits.provider_strikes:
                    self._drop_provider(state, provider, str(exc), bad=False)
                else:
                    logger.info("request to %s for %s failed (%d of %d): %s",
                                provider.info.peer_id, state.root, provider.strikes,
                                self.limits.provider_strikes, exc)
                    pause = self.limits.holder_recheck_s * 2 ** (provider.strikes - 1)
                    provider.ask_at = max(provider.ask_at, trio.current_time() + pause)
            finally:
                provider.in_flight -= 1
                state.in_flight -= 1
                state.notify()

    async def _next_request(self, state: _BlobFetch) -> tuple[_Provider, list[_Want]] | None:
        """Wait for work: a provider and a batch of pending blocks it has not failed."""
        while True:
            if state.error is not None or state.remaining == 0:
                return None
            picked = self._pick(state)
            if picked is not None:
                return picked
            recheck = state.next_recheck()
            if state.discovering or state.in_flight or recheck < math.inf:
                # providers may be on their way, a request may free one, or a connected
                # member that lacked a block is due to be asked again
                with trio.move_on_at(recheck):
                    await state.changed.wait()
                continue
            if not state.pending:  # cannot happen: every want is pending, in flight or placed
                state.fail(BlockFetchError(f"fetch of {state.root} lost track of "
                                           f"{state.remaining} blocks"))
                return None
            # Nothing in flight and no provider left for what is pending: ask connected
            # members, look for more providers if providers failed since the last lookup,
            # else give up.
            if self._widen(state):
                continue
            if state.setbacks() == state.setbacks_at_lookup or await self._discover(state) == 0:
                if await self._await_members(state):
                    continue
                state.fail(self._unavailable(state))
                return None

    async def _await_members(self, state: _BlobFetch) -> bool:
        """With no provider at all, a task's node waits (``holder_rechecks`` pauses) for a
        member to connect, then asks it: just after a task starts, a node is connected to its
        bootstrap peers only, while the whole task fetches the initial model. True once one
        is known. A bare exchange (no ``is_member``) has nobody to wait for."""
        if state.providers or self.is_member is _nobody_is_member:
            return False
        for attempt in range(self.limits.holder_rechecks):
            await trio.sleep(self.limits.holder_recheck_s * min(2**attempt, 8))
            if state.providers or self._widen(state):  # another request may have added one
                return True
        return False

    def _pick(self, state: _BlobFetch) -> tuple[_Provider, list[_Want]] | None:
        now = trio.current_time()
        ready = [p for p in state.usable()
                 if p.in_flight < self.limits.requests_per_provider and p.ask_at <= now]
        if state.in_flight:
            # with requests of its own under way, a fetch waits for them rather than queue a
            # batch behind other fetches' requests to a provider whose slots are all taken
            ready = [p for p in ready if self._slot_free(p.info.peer_id)]
        # The least loaded first (a provider other fetches keep busy last); the named
        # providers in the caller's order, then the connected members at random, so that a
        # crowd fetching one blob spreads over them.
        connected = [p for p in ready if p.connected]
        random.shuffle(connected)
        candidates = sorted([p for p in ready if not p.connected] + connected,
                            key=lambda p: (not self._slot_free(p.info.peer_id), p.in_flight))
        for provider in candidates:
            peer = provider.info.peer_id
            batch = [w for w in state.pending if peer not in state.tried.get(w.cid, ())]
            batch = batch[: self.limits.batch_size]
            if batch:
                for want in batch:
                    state.pending.remove(want)
                return provider, batch
        return None

    def _unavailable(self, state: _BlobFetch) -> BlockUnavailableError:
        want = state.pending[0]
        asked = sorted(str(p) for p in state.tried.get(want.cid, ()))
        dropped = [f"{peer} ({p.down})" for peer, p in state.providers.items() if p.down]
        if not state.providers:
            return BlockUnavailableError(
                f"no providers known for {state.root}: pass providers= or make sure the "
                "publisher announced it"
            )
        return BlockUnavailableError(
            f"block {want.cid} of {state.root} is not available: providers without it: "
            f"{asked or 'none'}; providers dropped: {dropped or 'none'}"
        )

    def _drop_provider(self, state: _BlobFetch, provider: _Provider, why: str, bad: bool) -> None:
        provider.down = why
        logger.info("dropping provider %s for %s: %s", provider.info.peer_id, state.root, why)
        if bad:
            self._report_bad_peer(provider.info.peer_id, why)

    async def _request(self, state: _BlobFetch, provider: _Provider, wants: list[_Want]) -> None:
        """Ask one provider for ``wants``; place what arrives, requeue what does not."""
        peer = provider.info.peer_id
        todo = deque(wants)
        try:
            # wait for a slot no longer than slot_wait_s while another provider could serve
            others = any(p is not provider for p in state.usable())
            async with self._provider_slot(peer, self.limits.slot_wait_s if others else math.inf):
                for attempt in range(2):
                    stream, reused = await self._checkout(provider)
                    progress = _Progress()
                    try:
                        with trio.fail_after(self.limits.request_timeout_s):
                            keep = await self._transfer(state, provider, stream, todo, progress)
                    except _BadBlock:
                        await reset_shielded(stream)
                        raise
                    except Exception as exc:
                        await reset_shielded(stream)
                        if reused and not progress.answered and attempt == 0:
                            # A pooled stream the server has since closed: not its fault.
                            logger.debug("stale pooled stream to %s: %r", peer, exc)
                            continue
                        raise _ProviderFailed(f"request failed: {exc!r}") from exc
                    await self._checkin(peer, stream, keep)
                    return
        except (_ProviderFailed, _SlotBusy):
            raise
        except Exception as exc:  # dial or stream-open failure, timeout
            raise _ProviderFailed(f"request failed: {exc!r}") from exc
        finally:
            state.pending.extend(todo)  # whoever is still usable gets them next

    async def _transfer(self, state: _BlobFetch, provider: _Provider, stream: INetStream,
                        todo: deque[_Want], progress: _Progress) -> bool:
        """One request/response on ``stream``; True when the stream can be reused."""
        limits = self.limits
        peer = provider.info.peer_id
        with self._clock.silence_limit(peer, limits.read_timeout_s):
            await stream.write(encode_request([want.cid for want in todo]))
        self._clock.progress(peer)
        missed = False
        while todo:
            want = todo[0]
            header = await _read_exactly(stream, RESPONSE_HEADER.size, self._clock, peer,
                                         limits.read_timeout_s)
            progress.answered = True
            status, length = RESPONSE_HEADER.unpack(header)
            if status == STATUS_BUSY:
                provider.busy += 1
                if provider.busy > limits.busy_retries:
                    raise _ProviderFailed(f"busy {provider.busy} times")
                self._widen(state)
                await trio.sleep(min(0.05 * provider.busy, 1.0))
                return False  # the server closes a stream it answered busy
            if status == STATUS_DONT_HAVE:
                if provider.connected:
                    missed = True
                else:
                    state.tried.setdefault(want.cid, set()).add(provider.info.peer_id)
                state.pending.append(todo.popleft())
                continue
            if status != STATUS_BLOCK:
                raise _ProviderFailed(f"unknown response status {status}")
            self._check_length(want, length)
            data = await _read_exactly(stream, length, self._clock, peer, limits.read_timeout_s)
            try:
                await self._accept(state, want, data)
            except CIDError as exc:
                raise _BadBlock(f"sent a bad block for {want.cid}: {exc}") from exc
            todo.popleft()
            provider.busy = 0
            provider.strikes = 0
            provider.misses = 0
        if missed:
            self._missed(state, provider)
        return True

    def _missed(self, state: _BlobFetch, provider: _Provider) -> None:
        """A connected member lacked a block: ask it again later, or no more."""
        provider.misses += 1
        if provider.misses > self.limits.holder_rechecks:
            provider.down = f"lacked the blob {provider.misses} times in a row"
            return
        pause = self.limits.holder_recheck_s * min(2 ** (provider.misses - 1), 8)
        provider.ask_at = trio.current_time() + pause

    # --- client streams: a small pool per provider (see the module doc) --------------------

    @asynccontextmanager
    async def _provider_slot(self, peer: PeerID, patience: float) -> AsyncIterator[None]:
        """Bound this node's concurrent requests to one provider, over all fetches;
        _SlotBusy when no slot frees within ``patience``."""
        slots = self._slots.get(peer)
        if slots is None:
            slots = self._slots[peer] = trio.Semaphore(self.limits.requests_per_provider)
        acquired = False
        try:
            with trio.move_on_after(patience):
                await slots.acquire()
                acquired = True
            if not acquired:
                raise _SlotBusy(f"{peer}'s {self.limits.requests_per_provider} slots stayed "
                                f"held by other fetches for {patience} s")
            yield
        finally:
            if acquired:
                slots.release()
            idle = slots.value == self.limits.requests_per_provider
            if idle and not slots.statistics().tasks_waiting and self._slots.get(peer) is slots:
                del self._slots[peer]

    def _slot_free(self, peer: PeerID) -> bool:
        slots = self._slots.get(peer)
        return slots is None or slots.value > 0

    async def _checkout(self, provider: _Provider) -> tuple[INetStream, bool]:
        """A pooled stream to ``provider`` (True) or a new one (False)."""
        peer = provider.info.peer_id
        pool = self._idle.pop(peer, [])
        while pool:
            stream, since = pool.pop()
            if trio.current_time() - since < self.limits.idle_stream_timeout_s / 2:
                if pool:  # others may have checked streams in meanwhile: keep both
                    self._idle[peer] = pool + self._idle.get(peer, [])
                return stream, True
            await reset_shielded(stream)  # the server may be timing it out right now
        with trio.fail_after(self.limits.connect_timeout_s):
            await self.host.connect(provider.info)
        # Opening a stream is a round trip over the (maybe busy) connection: see _PeerClock.
        with self._clock.silence_limit(peer, self.limits.connect_timeout_s):
            stream = await self.host.new_stream(peer, [PROTOCOL_ID])
        self._clock.progress(peer)
        return stream, False

    async def _checkin(self, peer: PeerID, stream: INetStream, reusable: bool) -> None:
        pool = self._idle.get(peer, [])
        if reusable and len(pool) < self.limits.requests_per_provider:
            self._idle[peer] = [*pool, (stream, trio.current_time())]
            return
        await reset_shielded(stream)

    async def close_idle_streams(self) -> None:
        """Reset every pooled client stream (done on exit)."""
        pools, self._idle = self._idle, {}
        for pool in pools.values():
            for stream, _ in pool:
                await reset_shielded(stream)

    def _check_length(self, want: _Want, length: int) -> None:
        # A leaf whose length differs from what its parent declares is still read (it is
        # bounded): if its bytes match the CID the DAG is what lies, not the provider.
        if length > MAX_BLOCK_SIZE:
            raise _BadBlock(f"offered a {length}-byte block for {want.cid}, over the "
                            f"{MAX_BLOCK_SIZE}-byte limit")

    async def _accept(self, state: _BlobFetch, want: _Want, data: bytes) -> None:
        """Verify ``data`` as ``want``, check its place in the DAG, store it, place it.

        Nodes are stored before their children are asked for, so a held root always
        reaches every stored block (gc-safe); leaves go to background writers, because
        a durable write (fsync) can take longer than receiving the next block.
        """
        check_block(want.cid, data)  # CIDError: the provider lied
        try:
            self._place(state, want, data, check_only=True)
            if is_raw(want.cid) and state.to_store is not None:
                await state.to_store.send((want.cid, data))
            else:
                await trio.to_thread.run_sync(self.store.put_fetched, want.cid, data)
        except DagError as exc:
            # The bytes match the CID, so the provider is honest: the DAG itself is bad.
            state.fail(BlockFetchError(f"{state.root} is not a usable file DAG: {exc}"))
            return
        except (BlobTooLargeError, BlockStoreError) as exc:
            state.fail(exc)
            return
        self._place(state, want, data)

    async def _write_leaves(self, state: _BlobFetch,
                            stored: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
        async with stored:
            async for cid, data in stored:
                try:
                    await trio.to_thread.run_sync(self.store.put_fetched, cid, data)
                except BlockStoreError as exc:
                    state.fail(exc)
                    return

    def _place(self, state: _BlobFetch, want: _Want, data: bytes, check_only: bool = False) -> None:
        """Put a verified block where it belongs; queue a node's children.

        With ``check_only`` nothing changes: DagError / BlobTooLargeError say whether it fits.
        """
        node = fit_block(state.root, want.cid, data, want.size, want.depth, state.max_size)
        if check_only:
            return
        if node is None:
            if want.size is None:  # the whole blob is one raw block
                state.raw_root = data
                state.remaining -= 1
                return
            assert state.buffer is not None
            # A leaf can repeat within a blob; every copy is placed from these bytes.
            copies = [w for w in state.pending if w.cid == want.cid]
            for copy in [want, *copies]:
                state.buffer[copy.offset : copy.offset + len(data)] = data
                state.remaining -= 1
            for copy in copies:
                state.pending.remove(copy)
            return
        if want.size is None:
            state.buffer = bytearray(node.file_size)
        for cid, offset, size in child_wants(node, want.offset):
            state.pending.append(_Want(cid, offset, size, want.depth + 1))
        state.remaining += len(node.links) - 1
        self._take_local(state)


def fit_block(
    root: str, cid: str, data: bytes, size: int | None, depth: int, max_size: int
) -> FileNode | None:
    """Check that a verified block fits where it was asked for in ``root``'s DAG.

    ``size`` is what the parent's link says (None: the block is the root). A raw leaf must
    have that size (returns None); a dag-pb node must sit within the depth bound and hold
    that size (returned, to queue its children). A root may not exceed ``max_size``, checked
    before anything beyond it is fetched. Raises DagError or BlobTooLargeError.
    """
    if is_raw(cid):
        if size is None:
            if len(data) > max_size:
                raise BlobTooLargeError(f"{root} is {len(data)} bytes, over max_size {max_size}")
        elif len(data) != size:
            raise DagError(f"leaf {cid} has {len(data)} bytes, its parent says {size}")
        return None
    if depth >= MAX_DAG_DEPTH:
        raise DagError(f"the DAG is deeper than {MAX_DAG_DEPTH} levels; no sane file is")
    node = decode_file_node(data)
    if size is None:
        if node.file_size > max_size:
            raise BlobTooLargeError(
                f"{root} declares {node.file_size} bytes, over max_size "
                f"{max_size}; nothing was fetched beyond its root"
            )
    elif node.file_size != size:
        raise DagError(f"node {cid} holds {node.file_size} bytes, its parent says {size}")
    return node


def child_wants(node: FileNode, offset: int) -> Iterator[tuple[str, int, int]]:
    """(cid, offset in the blob, size) of each child of a node that starts at ``offset``."""
    for link in node.links:
        yield link.cid, offset, link.file_size
        offset += link.file_size
