"""Bitswap 1.2.0 beside ``/fl-node/blocks/1.0.0``: IPFS peers (Kubo, Helia) fetch this
node's blobs by CID, and this node fetches blobs from them.

Our own implementation (wire format in :mod:`node.blocks.bitswap_wire`), not a wrapper of
py-libp2p's bitswap: that one stores every block a peer pushes, asked for or not, and
assembles whole files in RAM without a bound; fixing both means replacing its receive
path and its fetch, which is most of it.

Bitswap is message-based, not request/response: a client writes wantlists on streams it
opens, a server answers with blocks and HAVE/DONT_HAVE presences on streams *it* opens
back. So one stream handler here takes every inbound message, and its wantlist goes to
the server side, its blocks and presences to the client side.

Serving, with the block exchange's protections:

- only blocks in the store, read (and hash-checked) when sent; a want for anything else
  gets DONT_HAVE when asked for, otherwise it is dropped (no long-lived wants);
- a message from a peer we are not fetching from is at most ``max_want_message_bytes``;
  from a provider we await blocks from, the spec's 4 MiB;
- wantlist entries per message, wants queued per peer, peers with queued wants, streams
  per peer and in total are bounded; over a stream limit the stream that has waited
  longest for (or trickled) its current message gives way; silent and idle streams are
  reset, and a message must arrive whole within ``send_timeout_s``;
- answers are packed up to 2 MiB and at most ``max_concurrent_answers`` are built or
  written at once over all peers, so slow readers pin bounded memory.

Fetching (:meth:`Bitswap.fetch`) walks the UnixFS DAG from its root like the block
exchange: the root's declared size is checked against ``max_size`` first, each child must
have the size its verified parent declares, each block's CID is computed from its bytes,
blocks nobody asked for are dropped, never stored. A provider that says DONT_HAVE is
asked no more for that block; one silent while it owes blocks is dropped.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from protocol.errors import CIDError

from .bitswap_wire import (
    SPEC_MAX_MESSAGE_BYTES,
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
    frame,
)
from .cids import canonical_cid, cid_from_binary, cid_info
from .exchange import (
    BlobTooLargeError,
    BlockFetchError,
    BlockUnavailableError,
    FetchTimeoutError,
    FindProviders,
    child_wants,
    fit_block,
)
from .store import BlockCorruptError, BlockNotFoundError, BlockStore, BlockStoreError
from .streams import maybe_await, peer_info, read_first_byte, reset_shielded
from .unixfs import DagError

__all__ = [
    "PROTOCOL_V110",
    "PROTOCOL_V120",
    "Bitswap",
    "BitswapLimits",
]

logger = logging.getLogger(__name__)

PROTOCOL_V120 = TProtocol("/ipfs/bitswap/1.2.0")
PROTOCOL_V110 = TProtocol("/ipfs/bitswap/1.1.0")
# 1.0.0 addresses blocks by CIDv0 only; every block here is CIDv1.
PROTOCOLS = (PROTOCOL_V120, PROTOCOL_V110)
_INBOX_ITEMS = 16

OnBadPeer = Callable[[PeerID, str], None]


@dataclass(frozen=True)
class BitswapLimits:
    """Bounds on both sides of bitswap. Timeouts are in seconds."""

    max_message_bytes: int = SPEC_MAX_MESSAGE_BYTES
    """Largest inbound message from a peer we await blocks from (the spec's maximum)."""
    max_want_message_bytes: int = 64 * 1024
    """Largest inbound message from anyone else: wantlists and presences are small."""
    max_wantlist_entries: int = 1024
    """Wantlist entries (and presences) in one inbound message; more fails the stream."""
    max_blocks_per_message: int = 64
    max_pending_wants_per_peer: int = 1024
    """Wants of one peer queued to be answered; more are dropped until the queue drains."""
    max_peers_pending: int = 128
    """Peers with queued wants; a new peer's wants are dropped while this many wait."""
    max_streams_per_peer: int = 8
    """Inbound streams open at once from one peer."""
    max_streams_total: int = 64
    max_outgoing_message_bytes: int = 2 * 1024 * 1024
    """Blocks are packed into messages up to this size (one block may exceed it)."""
    max_concurrent_answers: int = 16
    """Answer messages being built or written at once, over all peers: with the size
    above, this bounds the memory slow readers can pin (16 x 2 MiB)."""
    read_timeout_s: float = 10.0
    """Longest silence inside an inbound message, and of a provider that owes blocks."""
    idle_stream_timeout_s: float = 10.0
    """An inbound stream with no message this long is reset (Helia uses 10 s too)."""
    send_timeout_s: float = 30.0
    """Longest time to read one inbound message, or to open a stream and write one."""
    connect_timeout_s: float = 10.0
    fetch_window: int = 32
    """Blocks one fetch wants at once, over all providers."""
    provider_window: int = 16
    """Blocks one fetch wants at once from one provider."""

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_want_message_bytes", "max_wantlist_entries",
                     "max_blocks_per_message", "max_pending_wants_per_peer", "max_peers_pending",
                     "max_streams_per_peer", "max_streams_total", "max_outgoing_message_bytes",
                     "max_concurrent_answers", "fetch_window", "provider_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"BitswapLimits.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("read_timeout_s", "idle_stream_timeout_s", "send_timeout_s",
                     "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BitswapLimits.{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_message_bytes > SPEC_MAX_MESSAGE_BYTES:
            raise ValueError(
                f"BitswapLimits.max_message_bytes {self.max_message_bytes} is over the spec's "
                f"{SPEC_MAX_MESSAGE_BYTES}"
            )


@dataclass(eq=False)
class _Inbound:
    """One inbound stream being read."""

    peer: PeerID
    since: float = 0.0  # when it began waiting for, or reading, its current message
    waiting: bool = False  # waiting for or reading a message: it may be evicted
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    evicted: bool = False


@dataclass(eq=False)
class _Ledger:
    """A peer's queued wants, answered by one sender task."""

    peer: PeerID
    presences: bool  # the peer speaks 1.2.0: HAVE / DONT_HAVE may be sent
    wants: dict[bytes, WantEntry] = field(default_factory=dict)
    sending: bool = False


# --- fetch state ----------------------------------------------------------------------------


@dataclass
class _Want:
    cid: str
    offset: int
    size: int | None  # file bytes under the block; None for the root
    depth: int = 0


@dataclass(eq=False)
class _Source:
    info: PeerInfo
    owed: set[str] = field(default_factory=set)  # CIDs asked of it, not yet answered
    lacks: set[str] = field(default_factory=set)  # CIDs it said it does not have
    last_heard: float = 0.0
    down: str | None = None


@dataclass(eq=False)
class _Fetch:
    """One blob being fetched over bitswap."""

    root: str
    max_size: int
    inbox: trio.MemorySendChannel[tuple[PeerID, str, bytes | None]]
    queued: deque[_Want] = field(default_factory=deque)
    asked: dict[str, list[_Want]] = field(default_factory=dict)  # CID -> wants of it in flight
    asked_of: dict[str, PeerID] = field(default_factory=dict)
    sources: dict[PeerID, _Source] = field(default_factory=dict)
    buffer: bytearray | None = None
    whole: bytes | None = None  # the blob when it is a single raw block
    remaining: int = 1
    error: Exception | None = None


class Bitswap:
    """Serves ``store``'s blocks over bitswap and fetches blobs from bitswap peers.

    Use as ``async with Bitswap(host, store) as bitswap:``; the handler is registered for
    the block's lifetime. ``on_bad_peer(peer, why)`` hears about peers that broke the
    protocol or sent blocks that do not belong to the DAG they were asked for.
    """

    def __init__(self, host: IHost, store: BlockStore, *, limits: BitswapLimits | None = None,
                 find_providers: FindProviders | None = None,
                 on_bad_peer: OnBadPeer | None = None) -> None:
        self.host = host
        self.store = store
        self.limits = limits or BitswapLimits()
        self._find_providers = find_providers
        self._on_bad_peer = on_bad_peer
        self._inbound: set[_Inbound] = set()
        self._inbound_per_peer: Counter[PeerID] = Counter()
        self._ledgers: dict[PeerID, _Ledger] = {}
        self._wanted: dict[str, set[_Fetch]] = {}  # CID -> fetches waiting for it
        self._owed_by: Counter[PeerID] = Counter()  # blocks we await from each peer
        self._answer_slots = trio.Semaphore(self.limits.max_concurrent_answers)
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: object = None
        # What happened, for operators and tests.
        self.blocks_sent = 0
        self.blocks_received = 0
        self.unrequested_blocks = 0
        self.dropped_wants = 0
        self.rejected_streams = 0
        self.evicted_streams = 0
        self.answers_failed = 0  # peers unreachable or too slow to read an answer
        self.violations: Counter[PeerID] = Counter()

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Bitswap:
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._nursery_manager = manager
        for protocol in PROTOCOLS:
            self.host.set_stream_handler(protocol, self._handle_stream)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for protocol in PROTOCOLS:
            self.host.remove_stream_handler(protocol)
        manager, self._nursery_manager = self._nursery_manager, None
        nursery, self._nursery = self._nursery, None
        if nursery is not None:
            nursery.cancel_scope.cancel()
        if manager is not None:
            await manager.__aexit__(None, None, None)  # type: ignore[attr-defined]

    @property
    def streams_open(self) -> int:
        """Inbound bitswap streams open right now."""
        return len(self._inbound)

    @property
    def peers_pending(self) -> int:
        """Peers whose wants are queued to be answered."""
        return len(self._ledgers)

    @property
    def answers_in_flight(self) -> int:
        """Answer messages being built or written right now, over all peers."""
        return self.limits.max_concurrent_answers - self._answer_slots.value

    def streams_from(self, peer: PeerID) -> int:
        """Inbound bitswap streams open right now from ``peer``."""
        return self._inbound_per_peer[peer]

    def pending_wants(self, peer: PeerID) -> int:
        ledger = self._ledgers.get(peer)
        return len(ledger.wants) if ledger else 0

    # --- inbound streams ----------------------------------------------------------------------

    async def _handle_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        presences = stream.get_protocol() == PROTOCOL_V120
        session = self._admit(peer)
        if session is None:
            self.rejected_streams += 1
            await reset_shielded(stream)
            return
        try:
            while True:
                body = None
                session.scope = trio.CancelScope()
                session.since, session.waiting = trio.current_time(), True
                with session.scope:
                    first = None
                    with trio.move_on_after(self.limits.idle_stream_timeout_s) as idle:
                        first = await read_first_byte(stream)
                        if first is None:
                            break
                        session.since = trio.current_time()
                    if first is not None and not idle.cancelled_caught:
                        with trio.fail_after(self.limits.send_timeout_s):
                            body = await self._read_body(stream, peer, first)
                session.waiting = False
                if body is None:  # idle too long, or evicted for a new stream
                    await reset_shielded(stream)
                    return
                message = decode_message(body, max_entries=self.limits.max_wantlist_entries,
                                         max_blocks=self.limits.max_blocks_per_message)
                await self._dispatch(peer, presences, message)
            session.waiting = False
            await stream.close()
        except (BitswapProtocolError, CIDError) as exc:
            self.violations[peer] += 1
            logger.info("bitswap peer %s broke the protocol: %s", peer, exc)
            self._report(peer, f"bitswap: {exc}")
            await reset_shielded(stream)
        except Exception as exc:  # a broken or slow peer: its stream goes, we go on
            logger.debug("bitswap stream from %s failed: %r", peer, exc)
            await reset_shielded(stream)
        finally:
            self._release(session)

    async def _read_body(self, stream: INetStream, peer: PeerID, first: int) -> bytes:
        length, byte, shift = first & 0x7F, first, 7
        while byte & 0x80:
            if shift > 28:
                raise BitswapProtocolError("bitswap message length prefix over 5 bytes")
            byte = (await self._read_exactly(stream, 1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
        limit = (self.limits.max_message_bytes if self._owed_by[peer]
                 else self.limits.max_want_message_bytes)
        if length > limit:
            raise BitswapProtocolError(
                f"a {length}-byte bitswap message, over the {limit}-byte limit for this peer"
            )
        return await self._read_exactly(stream, length)

    async def _read_exactly(self, stream: INetStream, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            with trio.fail_after(self.limits.read_timeout_s):
                chunk = await stream.read(size - len(buf))
            if not chunk:
                raise BitswapProtocolError(f"stream ended {size - len(buf)} bytes into a message")
            buf += chunk
        return bytes(buf)

    def _admit(self, peer: PeerID) -> _Inbound | None:
        """Count a new inbound stream. Over a limit, the stream (of this peer when its own
        limit is hit) that has waited longest for, or been reading, its current message
        gives way: honest peers write a whole message at once, so a slot held by an idle
        or trickling stream is always the one taken back. None when nothing can go."""
        limits = self.limits
        peer_full = self._inbound_per_peer[peer] >= limits.max_streams_per_peer
        if peer_full or len(self._inbound) >= limits.max_streams_total:
            waiting = [s for s in self._inbound
                       if s.waiting and not s.evicted and (not peer_full or s.peer == peer)]
            if not waiting:
                return None
            victim = min(waiting, key=lambda s: s.since)
            victim.evicted = True
            self.evicted_streams += 1
            victim.scope.cancel()
            self._release(victim)
        session = _Inbound(peer)
        self._inbound.add(session)
        self._inbound_per_peer[peer] += 1
        return session

    def _release(self, session: _Inbound) -> None:
        if session in self._inbound:
            self._inbound.discard(session)
            self._inbound_per_peer[session.peer] -= 1
            if self._inbound_per_peer[session.peer] <= 0:
                del self._inbound_per_peer[session.peer]

    async def _dispatch(self, peer: PeerID, presences: bool, message: BitswapMessage) -> None:
        if message.wantlist or message.full:
            self._take_wants(peer, presences, message)
        for block in message.payload:
            await self._take_block(peer, block)
        for presence in message.presences:
            if presence.type == PresenceType.DONT_HAVE:
                await self._take_dont_have(peer, presence.cid)

    def _report(self, peer: PeerID, why: str) -> None:
        if self._on_bad_peer is not None:
            try:
                self._on_bad_peer(peer, why)
            except Exception as exc:
                logger.warning("on_bad_peer callback failed: %s", exc)

    # --- serving ------------------------------------------------------------------------------

    def _take_wants(self, peer: PeerID, presences: bool, message: BitswapMessage) -> None:
        ledger = self._ledgers.get(peer)
        if ledger is None:
            if len(self._ledgers) >= self.limits.max_peers_pending:
                self.dropped_wants += len(message.wantlist)
                logger.debug("dropping %d wants of %s: %d peers already wait",
                            len(message.wantlist), peer, len(self._ledgers))
                return
            ledger = self._ledgers[peer] = _Ledger(peer, presences)
        if message.full:
            ledger.wants.clear()
        for entry in message.wantlist:
            if entry.cancel:
                ledger.wants.pop(entry.cid, None)
            elif entry.cid in ledger.wants or len(ledger.wants) < self.limits.max_pending_wants_per_peer:
                ledger.wants[entry.cid] = entry
            else:
                self.dropped_wants += 1
        if not ledger.wants:
            if not ledger.sending:
                del self._ledgers[peer]
        elif not ledger.sending and self._nursery is not None:
            ledger.sending = True
            self._nursery.start_soon(self._answer, ledger)

    async def _answer(self, ledger: _Ledger) -> None:
        """Send ``ledger``'s peer what it wants, highest priority first, on one stream."""
        stream: INetStream | None = None
        try:
            while ledger.wants:
                async with self._answer_slots:
                    message, blocks = self._next_answer(ledger)
                    with trio.fail_after(self.limits.send_timeout_s):
                        if stream is None and (message.payload or message.presences):
                            stream = await self.host.new_stream(ledger.peer, list(PROTOCOLS))
                            if stream.get_protocol() != PROTOCOL_V120:  # no presences in 1.1.0
                                ledger.presences = False
                                message = BitswapMessage(payload=message.payload)
                        if stream is not None and (message.payload or message.presences):
                            await stream.write(frame(message))
                self.blocks_sent += blocks
            if stream is not None:
                with trio.move_on_after(self.limits.send_timeout_s):
                    await stream.close()
        except Exception as exc:  # unreachable or too slow: it can ask again
            logger.debug("answering bitswap peer %s failed: %r", ledger.peer, exc)
            self.answers_failed += 1
            self.dropped_wants += len(ledger.wants)
            ledger.wants.clear()
            if stream is not None:
                await reset_shielded(stream)
        finally:
            ledger.sending = False
            if self._ledgers.get(ledger.peer) is ledger:
                if not ledger.wants:
                    del self._ledgers[ledger.peer]
                elif self._nursery is not None:  # wants came while the stream was closing
                    ledger.sending = True
                    self._nursery.start_soon(self._answer, ledger)

    def _next_answer(self, ledger: _Ledger) -> tuple[BitswapMessage, int]:
        """Take wants off the ledger into one message of at most the outgoing size."""
        payload: list[PayloadBlock] = []
        presences: list[Presence] = []
        size = 0
        order = sorted(ledger.wants.values(), key=lambda e: -e.priority)
        for entry in order:
            if size >= self.limits.max_outgoing_message_bytes \
                    or len(presences) >= self.limits.max_wantlist_entries \
                    or len(payload) >= self.limits.max_blocks_per_message:
                break
            del ledger.wants[entry.cid]
            cid = _cid_text(entry.cid)
            have = cid is not None and self.store.has(cid) and _servable(cid)
            if have and entry.want_type == WantType.HAVE:
                if ledger.presences:
                    presences.append(Presence(entry.cid, PresenceType.HAVE))
                continue
            data = self._local_block(cid) if have and cid is not None else None
            if data is not None and cid is not None:
                payload.append(PayloadBlock(cid_prefix(cid), data))
                size += len(data)
            elif entry.send_dont_have and ledger.presences:
                presences.append(Presence(entry.cid, PresenceType.DONT_HAVE))
        return BitswapMessage(payload=tuple(payload), presences=tuple(presences)), len(payload)

    def _local_block(self, cid: str) -> bytes | None:
        try:
            return self.store.get(cid)  # verified against its CID on every read
        except (BlockNotFoundError, BlockCorruptError):
            return None

    # --- receiving blocks -----------------------------------------------------------------------

    async def _take_block(self, peer: PeerID, block: PayloadBlock) -> None:
        try:
            cid = block_cid(block.prefix, block.data)
        except CIDError:
            cid = None
        fetches = self._wanted.get(cid, set()) if cid is not None else set()
        if not fetches:
            self.unrequested_blocks += 1  # or late, after a cancel: dropped, never stored
            return
        self.blocks_received += 1
        assert cid is not None
        for fetch in list(fetches):
            await _deliver(fetch, peer, cid, block.data)

    async def _take_dont_have(self, peer: PeerID, raw_cid: bytes) -> None:
        cid = _cid_text(raw_cid)
        for fetch in list(self._wanted.get(cid, ())) if cid is not None else ():
            assert cid is not None
            await _deliver(fetch, peer, cid, None)

    # --- fetching -------------------------------------------------------------------------------

    async def fetch(self, root_cid: str, max_size: int, *, providers: Iterable[PeerInfo | str] = (),
                    timeout_s: float | None = None, pin: bool = False) -> bytes:
        """Fetch the blob under ``root_cid`` (at most ``max_size`` bytes) from bitswap
        ``providers`` and whoever ``find_providers`` (e.g. the DHT) names, verifying and
        storing every block; raises the block exchange's errors (BlobTooLargeError,
        BlockUnavailableError, FetchTimeoutError, BlockFetchError).
        """
        root = canonical_cid(root_cid)
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1 byte, got {max_size}")
        send, receive = trio.open_memory_channel[tuple[PeerID, str, bytes | None]](_INBOX_ITEMS)
        state = _Fetch(root, max_size, send)
        for provider in providers:
            info = peer_info(provider)
            if info.peer_id != self.host.get_id():
                state.sources.setdefault(info.peer_id, _Source(info))
        state.queued.append(_Want(root, 0, None))
        with self.store.hold(root):
            try:
                with trio.move_on_after(math.inf if timeout_s is None else timeout_s) as deadline:
                    async with trio.open_nursery() as nursery, receive:
                        await self._run_fetch(state, receive, nursery)
                        nursery.cancel_scope.cancel()
            finally:
                self._forget(state)
            if deadline.cancelled_caught:
                raise FetchTimeoutError(
                    f"fetching {root} over bitswap did not finish within {timeout_s} s "
                    f"({state.remaining} blocks missing); retry, or raise timeout_s"
                )
            if state.error is not None:
                raise state.error
            if pin:
                self.store.pin(root)
        if state.whole is not None:
            return state.whole
        assert state.buffer is not None
        return bytes(state.buffer)

    async def _run_fetch(self, state: _Fetch,
                         inbox: trio.MemoryReceiveChannel[tuple[PeerID, str, bytes | None]],
                         nursery: trio.Nursery) -> None:
        async def connect(source: _Source) -> None:
            try:
                with trio.fail_after(self.limits.connect_timeout_s):
                    await self.host.connect(source.info)
            except Exception as exc:
                source.down = f"cannot connect: {exc!r}"

        if self._find_providers is not None:
            with trio.move_on_after(self.limits.connect_timeout_s):
                try:
                    for info in await maybe_await(self._find_providers(state.root)):
                        if info.peer_id != self.host.get_id():
                            state.sources.setdefault(info.peer_id, _Source(info))
                except Exception as exc:
                    logger.warning("find_providers(%s) failed: %s", state.root, exc)
        async with trio.open_nursery() as dials:
            for source in state.sources.values():
                dials.start_soon(connect, source)
        await self._take_local(state)
        while state.remaining and state.error is None:
            self._ask(state, nursery)
            if not state.asked:
                state.error = self._unavailable(state)
                return
            owing = [s for s in state.sources.values() if s.owed and s.down is None]
            wake = min((s.last_heard for s in owing), default=trio.current_time())
            with trio.move_on_after(max(0.0, wake + self.limits.read_timeout_s - trio.current_time())):
                peer, cid, data = await inbox.receive()
                await self._on_answer(state, peer, cid, data)
                continue
            now = trio.current_time()
            for source in owing:
                if now - source.last_heard >= self.limits.read_timeout_s:
                    self._drop_source(state, source, f"silent for {self.limits.read_timeout_s} s "
                                                     f"while owing {len(source.owed)} blocks")

    def _ask(self, state: _Fetch, nursery: trio.Nursery) -> None:
        """Ask usable providers for queued blocks, within the fetch and provider windows.

        A provider is asked again once it owes at most half its window, then up to the
        full window: wants go out in batches, not a one-entry message per block received.
        """
        refill = {peer for peer, s in state.sources.items()
                  if len(s.owed) <= self.limits.provider_window // 2}
        batches: dict[PeerID, list[str]] = {}
        kept: deque[_Want] = deque()
        while state.queued:
            want = state.queued.popleft()
            if want.cid in state.asked:  # the same block again (a repeated leaf)
                state.asked[want.cid].append(want)
                continue
            source = self._pick_source(state, want.cid, refill)
            if source is None or len(state.asked) >= self.limits.fetch_window:
                kept.append(want)
                continue
            state.asked[want.cid] = [want]
            state.asked_of[want.cid] = source.info.peer_id
            if not source.owed:
                source.last_heard = trio.current_time()
            source.owed.add(want.cid)
            self._owed_by[source.info.peer_id] += 1
            self._wanted.setdefault(want.cid, set()).add(state)
            batches.setdefault(source.info.peer_id, []).append(want.cid)
        state.queued = kept
        for peer, cids in batches.items():
            entries = tuple(WantEntry(cid_info(c).binary, 1, False, WantType.BLOCK, True) for c in cids)
            nursery.start_soon(self._send_wants, state, peer, BitswapMessage(wantlist=entries))

    def _pick_source(self, state: _Fetch, cid: str, refill: set[PeerID]) -> _Source | None:
        usable = [s for peer, s in state.sources.items()
                  if peer in refill and s.down is None and cid not in s.lacks
                  and len(s.owed) < self.limits.provider_window]
        return min(usable, key=lambda s: len(s.owed), default=None)

    async def _send_wants(self, state: _Fetch, peer: PeerID, message: BitswapMessage) -> None:
        try:
            await self._send(peer, message)
        except Exception as exc:
            logger.info("sending wants to %s failed: %r", peer, exc)
            await _deliver(state, peer, "", b"")  # tells the fetch loop the provider is gone

    async def _send(self, peer: PeerID, message: BitswapMessage) -> None:
        """Write one message on a new stream (as Helia and Kubo do) and close it."""
        with trio.fail_after(self.limits.send_timeout_s):
            stream = await self.host.new_stream(peer, list(PROTOCOLS))
            try:
                await stream.write(frame(message))
                await stream.close()
            except BaseException:
                await reset_shielded(stream)
                raise

    async def _on_answer(self, state: _Fetch, peer: PeerID, cid: str, data: bytes | None) -> None:
        source = state.sources.get(peer)
        if source is not None:
            source.last_heard = trio.current_time()
        if not cid:  # our want message could not be sent
            if source is not None:
                self._drop_source(state, source, "cannot send it our wants")
            return
        if data is None:  # DONT_HAVE
            if source is not None:
                source.lacks.add(cid)
                if cid in source.owed:
                    self._settle(state, cid)
                    state.queued.extend(state.asked.pop(cid, []))
            return
        wants = state.asked.get(cid)
        if not wants:
            return  # a second copy, from a provider asked before a DONT_HAVE or a drop
        try:
            await self._accept(state, wants, data)
        except (DagError, BlobTooLargeError, BlockStoreError) as exc:
            state.error = exc if not isinstance(exc, DagError) else BlockFetchError(
                f"{state.root} is not a usable file DAG: {exc}")
            return
        self._settle(state, cid)
        del state.asked[cid]

    def _settle(self, state: _Fetch, cid: str) -> None:
        """``cid`` is answered: no provider owes it to this fetch any more."""
        peer = state.asked_of.pop(cid, None)
        source = state.sources.get(peer) if peer is not None else None
        if source is not None and cid in source.owed:
            source.owed.discard(cid)
            self._owe_less(source.info.peer_id)
        fetches = self._wanted.get(cid)
        if fetches is not None:
            fetches.discard(state)
            if not fetches:
                del self._wanted[cid]

    def _owe_less(self, peer: PeerID, count: int = 1) -> None:
        self._owed_by[peer] -= count
        if self._owed_by[peer] <= 0:
            del self._owed_by[peer]

    def _drop_source(self, state: _Fetch, source: _Source, why: str) -> None:
        if source.down is not None:
            return
        source.down = why
        logger.info("bitswap: dropping provider %s for %s: %s", source.info.peer_id, state.root, why)
        for cid in list(source.owed):
            self._settle(state, cid)
            state.queued.extend(state.asked.pop(cid, []))

    def _forget(self, state: _Fetch) -> None:
        """Unregister every want of a finished fetch (late blocks are then unrequested) and
        cancel what providers still owe it, as the spec asks."""
        cancels: dict[PeerID, list[WantEntry]] = {}
        for cid in list(state.asked):
            peer = state.asked_of.get(cid)
            if peer is not None:
                cancels.setdefault(peer, []).append(WantEntry(cid_info(cid).binary, cancel=True))
            self._settle(state, cid)
        state.asked.clear()
        for peer, entries in cancels.items():
            if self._nursery is not None:
                self._nursery.start_soon(self._send_quietly, peer, BitswapMessage(wantlist=tuple(entries)))

    async def _send_quietly(self, peer: PeerID, message: BitswapMessage) -> None:
        try:
            await self._send(peer, message)
        except Exception as exc:
            logger.debug("sending cancels to %s failed: %r", peer, exc)

    async def _take_local(self, state: _Fetch) -> None:
        while state.queued and state.error is None:
            local = [w for w in state.queued if self.store.has(w.cid)]
            if not local:
                return
            for want in local:
                state.queued.remove(want)
                data = self._local_block(want.cid)
                if data is None:
                    state.queued.append(want)
                    return
                try:
                    self._place(state, want, data)
                except (DagError, BlobTooLargeError) as exc:
                    state.error = exc if isinstance(exc, BlobTooLargeError) else BlockFetchError(
                        f"{state.root} is not a usable file DAG: {exc}")
                    return

    async def _accept(self, state: _Fetch, wants: list[_Want], data: bytes) -> None:
        """Check a verified block's place in the DAG, store it, then place every copy."""
        for want in wants:
            self._place(state, want, data, check_only=True)
        await trio.to_thread.run_sync(self.store.put, wants[0].cid, data)
        for want in wants:
            self._place(state, want, data)
        await self._take_local(state)

    def _place(self, state: _Fetch, want: _Want, data: bytes, check_only: bool = False) -> None:
        """Write a leaf into the blob, or queue a node's children; with ``check_only``
        only raise DagError / BlobTooLargeError when the block does not fit."""
        node = fit_block(state.root, want.cid, data, want.size, want.depth, state.max_size)
        if check_only:
            return
        if node is None:
            if want.size is None:
                state.whole = data
            else:
                assert state.buffer is not None
                state.buffer[want.offset : want.offset + want.size] = data
            state.remaining -= 1
            return
        if want.size is None:
            state.buffer = bytearray(node.file_size)
        for cid, offset, size in child_wants(node, want.offset):
            state.queued.append(_Want(cid, offset, size, want.depth + 1))
        state.remaining += len(node.links) - 1

    def _unavailable(self, state: _Fetch) -> BlockUnavailableError:
        if not state.sources:
            return BlockUnavailableError(f"no bitswap providers given for {state.root}")
        want = state.queued[0] if state.queued else None
        lacking = sorted(str(p) for p, s in state.sources.items()
                         if want is not None and want.cid in s.lacks)
        dropped = [f"{p} ({s.down})" for p, s in state.sources.items() if s.down]
        missing = want.cid if want is not None else state.root
        return BlockUnavailableError(
            f"block {missing} of {state.root} is not available over bitswap: providers "
            f"without it: {lacking or 'none'}; providers dropped: {dropped or 'none'}"
        )


async def _deliver(fetch: _Fetch, peer: PeerID, cid: str, data: bytes | None) -> None:
    try:
        await fetch.inbox.send((peer, cid, data))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the fetch is over


def _servable(cid: str) -> bool:
    try:
        cid_prefix(cid)
    except CIDError:
        return False  # a codec this node never stores blobs in
    return True


def _cid_text(raw: bytes) -> str | None:
    """Canonical text of a binary CID, or None for one we can never hold (CIDv0, ...)."""
    try:
        return cid_from_binary(raw)
    except ValueError:  # CIDError, or multiformats' own for a digest longer than its hash's
        return None
