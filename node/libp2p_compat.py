"""Every change fl-node makes to py-libp2p 0.8.1's private methods and behaviour, in one place.

Each override names the upstream function it changes (``file:function`` under
``libp2p/``) and why. The rest of node/ reaches py-libp2p internals only through here, so a
libp2p upgrade means reviewing this module against the new sources.

| override | upstream | why |
|---|---|---|
| :class:`LongRunningSwarm` | network/swarm.py:Swarm._do_handle_inbound_connection | inbound handler tasks and limiter slots leaked until the swarm stopped; idle sockets held every inbound slot through the handshake timeout |
| :func:`contain_stream_handler` | network/connection/swarm_connection.py:SwarmConn._handle_muxed_stream | one protocol handler's exception closed the whole connection's task group and stopped the swarm |
| :class:`IdleAutoConnector` | network/auto_connector.py:AutoConnector | it dials every peer in the peerstore |
| :func:`install_pubsub_patches` | pubsub/pubsub.py: module globals ``signature_validator``, ``maybe_consume_signed_record``, ``read_varint_prefixed_bytes_limited`` | a garbage key raised out of the message task; bad signatures, bad signed records and oversized frames cost the sender nothing |
| :meth:`GossipPubsub.stream_handler` | pubsub/pubsub.py:Pubsub.stream_handler | an undecodable RPC (protobuf DecodeError) escaped it and stopped the host |
| :meth:`GossipPubsub.push_msg` | pubsub/pubsub.py:Pubsub.push_msg | any exception in a message task stopped the Pubsub service |
| :meth:`GossipPubsub.handle_subscription` | pubsub/pubsub.py:Pubsub.handle_subscription | topic names of any length were stored, about 100 MB per identity |
| :meth:`GossipPubsub.validate_msg` | pubsub/pubsub.py:Pubsub.validate_msg | gossipsub's IGNORE verdict is missing |
| :func:`blacklist_without_teardown` | pubsub/pubsub.py:Pubsub.add_to_blacklist | its teardown task raises KeyError and stops the Pubsub service |
| :func:`message_seen` | pubsub/pubsub.py:Pubsub._is_msg_seen | private; parked messages need it |
| :class:`BackingOffGossipSub` | pubsub/gossipsub.py:GossipSub.mesh_heartbeat, handle_graft, emit_prune | a peer it pruned could be grafted again at once, and the peer's GRAFT-flood check graylists us for it |
| :func:`install_record_cache` | peer/envelope.py:consume_envelope, imported by name into pubsub/utils.py, pubsub/gossipsub.py, kad_dht/utils.py, identity/update.py | every RPC a peer sends carries the same signed peer record, and its signature was checked again on each one: with a hundred nodes in one process, a large share of a core |
| ``node/discovery.py`` (reaches these itself, each use commented there) | kad_dht/kad_dht.py: ``KadDHT._inbound_limiter``, ``refresh_routing_table``; kad_dht/provider_store.py: ``_send_add_provider``, ``_get_providers_from_peer_with_closers``; kad_dht/peer_routing.py: ``_query_peer_for_closest`` | a bootstrap's 12 DHT slots reset a task's simultaneous lookups; the routing-table refresh and the iterative provide made a hundred idle nodes a full mesh that saturated one event loop; single RPCs without the library's local-store shortcut |
| :class:`WindowWaitingYamuxStream` | stream_muxer/yamux/yamux.py:YamuxStream.write; module global ``YamuxStream`` | a write to a shut window polled every 10 ms; many slow readers made those timers most of an event loop's work |
| :class:`ReadingYamux`, :func:`install_yamux_patch` | stream_muxer/yamux/yamux.py:Yamux.handle_incoming; stream_muxer/muxer_multistream.py: module global ``Yamux`` | its read loop answers SYNs and PINGs inline under the write lock a data write holds on a full socket; two peers sending each other data at once wedge until a 60 s timeout |
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, cast

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IMuxedConn, INetStream
from libp2p.exceptions import ValidationError
from libp2p.io.abc import ReadWriteCloser
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.swarm import Swarm
from libp2p.peer import envelope as upstream_envelope
from libp2p.peer.id import ID as PeerID
from libp2p.pubsub import pubsub as upstream_pubsub
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer import muxer_multistream as upstream_muxer_multistream
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux import yamux as upstream_yamux
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

__all__ = [
    "MAX_PENDING_CONTROL_FRAMES",
    "MAX_TOPIC_LENGTH",
    "BackingOffGossipSub",
    "GossipPubsub",
    "IdleAutoConnector",
    "LongRunningSwarm",
    "ReadingYamux",
    "adopt_swarm",
    "blacklist_without_teardown",
    "contain_stream_handler",
    "ignore_current_message",
    "install_pubsub_patches",
    "install_record_cache",
    "install_yamux_patch",
    "WindowWaitingYamuxStream",
    "message_seen",
    "verify_message_signature",
]

logger = logging.getLogger(__name__)

StreamHandler = Callable[[INetStream], Awaitable[None]]


# --- swarm ------------------------------------------------------------------------------------


class LongRunningSwarm(Swarm):
    """A swarm whose inbound connections release their handler task when they close.

    Changes network/swarm.py:Swarm._do_handle_inbound_connection. Upstream ends it with
    ``await self.manager.wait_finished()``: the handler task of every inbound connection (and
    the inbound-limiter slot ``_handle_inbound_connection`` holds around it) lives until the
    swarm stops, long after the connection is gone. After ``max_connections -
    min_connections`` (250 by default) lifetime inbound connections every new one is closed
    before the handshake. Here the handler waits for *its* connection to close instead, so the
    limiter counts live inbound connections, as the library intends. A failed Noise or Yamux
    handshake (garbage from a stranger) is logged and the raw connection closed, and pending
    handshakes are bounded (:meth:`_upgrade_evicting_stale`).

    Only the TCP path (raw stream → Noise → Yamux) is replaced; pre-multiplexed transports
    (QUIC, which fl-node does not enable) keep the library's behaviour.
    """

    stream_faults: Counter[PeerID]
    """Protocol handler failures by peer (see :func:`contain_stream_handler`)."""
    max_pending_handshakes: int
    handshake_timeout_s: float
    evicted_handshakes: int
    _pending_handshakes: OrderedDict[int, trio.CancelScope]

    async def _do_handle_inbound_connection(
        self, read_write_closer: Any, maddr: multiaddr.Multiaddr, failure_event: Any
    ) -> None:
        if isinstance(read_write_closer, IMuxedConn):
            await super()._do_handle_inbound_connection(
                cast(ReadWriteCloser, read_write_closer), maddr, failure_event
            )
            return
        remote_maddr = self._build_remote_multiaddr(read_write_closer)
        if remote_maddr is not None and not await self.connection_gate.is_allowed(remote_maddr):
            await _close_quietly(read_write_closer)
            return
        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed_conn = await self._upgrade_evicting_stale(raw_conn, maddr)
        except Exception as exc:  # a failed handshake is routine churn, not our failure
            logger.debug("inbound connection on %s failed to upgrade: %s", maddr, exc)
            muxed_conn = None
        if muxed_conn is None:
            await _close_quietly(raw_conn)
            return
        for swarm_conn in list(self.connections.get(muxed_conn.peer_id, ())):
            if swarm_conn.muxed_conn is muxed_conn:
                await swarm_conn.event_closed.wait()  # type: ignore[attr-defined]
                return
        # Not registered: it was trimmed (one connection per peer) or closed already.

    async def _upgrade_evicting_stale(
        self, raw_conn: RawConnection, maddr: multiaddr.Multiaddr
    ) -> IMuxedConn | None:
        """The Noise + Yamux upgrade, within ``handshake_timeout_s``, as one of at most
        ``max_pending_handshakes``: a new connection evicts the oldest pending one.

        Each inbound connection holds one of the swarm's inbound slots from accept on, so
        sockets that connect and send nothing (or trickle a handshake) would otherwise hold
        every slot for the whole timeout, again and again, and no honest peer could connect.
        An honest handshake takes milliseconds, so it is never the oldest for long. None when
        evicted or timed out.
        """
        pending = self._pending_handshakes
        while len(pending) >= self.max_pending_handshakes:
            _, oldest = pending.popitem(last=False)
            oldest.cancel()
            self.evicted_handshakes += 1
        key = id(raw_conn)
        with trio.move_on_after(self.handshake_timeout_s) as scope:
            pending[key] = scope
            try:
                return await self.upgrade_inbound_raw_conn(raw_conn, maddr)
            finally:
                pending.pop(key, None)
        logger.debug("inbound handshake on %s evicted or timed out", maddr)
        return None

    def set_stream_handler(self, stream_handler: StreamHandler) -> None:
        super().set_stream_handler(contain_stream_handler(self, stream_handler))


def adopt_swarm(
    swarm: Swarm, max_pending_handshakes: int = 32, handshake_timeout_s: float = 10.0
) -> LongRunningSwarm:
    """Turn the Swarm that ``libp2p.new_host`` built into a :class:`LongRunningSwarm`.

    new_host() offers no way to choose the swarm class; LongRunningSwarm's own state is
    initialised here, so swapping the class of the freshly built swarm is equivalent to
    constructing one. The host registered its stream handler before the swap: it is wrapped
    here.
    """
    if type(swarm) is not Swarm:
        raise RuntimeError(
            f"libp2p built a {type(swarm).__name__}, not the Swarm LongRunningSwarm fixes; "
            "check the installed libp2p version (fl-node needs 0.8.x)"
        )
    swarm.__class__ = LongRunningSwarm
    adopted = cast(LongRunningSwarm, swarm)
    adopted.stream_faults = Counter()
    adopted.max_pending_handshakes = max_pending_handshakes
    adopted.handshake_timeout_s = handshake_timeout_s
    adopted.evicted_handshakes = 0
    adopted._pending_handshakes = OrderedDict()
    adopted.common_stream_handler = contain_stream_handler(adopted, swarm.common_stream_handler)
    adopted.auto_connector = IdleAutoConnector(swarm)
    return adopted


def contain_stream_handler(swarm: Swarm, handler: StreamHandler) -> StreamHandler:
    """The swarm's handler for every inbound stream, with its failures kept to that stream.

    Changes what network/connection/swarm_connection.py:SwarmConn._handle_muxed_stream lets
    through: it runs the handler in the connection's task group, so an exception from any
    protocol handler (a decoder meeting a peer's malformed bytes) cancels the connection and
    then stops the swarm service, taking the process down. Here it is logged with the peer
    and the protocol, counted against the peer (``stream_faults``) and the stream is reset.
    """
    if getattr(handler, "_fl_contained", False):
        return handler

    async def contained(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            peer = stream.muxed_conn.peer_id
            faults = getattr(swarm, "stream_faults", None)
            if faults is not None:
                faults[peer] += 1
            logger.warning(
                "a %s stream from peer %s failed: %r; stream reset",
                stream.get_protocol(),
                peer,
                exc,
            )
            await _reset_quietly(stream)

    contained._fl_contained = True  # type: ignore[attr-defined]
    return contained


class IdleAutoConnector(AutoConnector):
    """The library's auto-connector, switched off (network/auto_connector.py:AutoConnector).

    It dials every peer in the peerstore while the swarm has fewer than ``low_watermark``
    connections; a DHT node's peerstore holds every peer it ever heard of, so that would dial
    the whole network. node.discovery keeps our connections instead.
    """

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return None

    async def maybe_connect(self) -> None:
        return None


async def _close_quietly(closer: Any) -> None:
    try:
        await closer.close()
    except Exception as exc:  # closing a broken socket may raise; it is closed either way
        logger.debug("closing a failed inbound connection raised %s", exc)


async def _reset_quietly(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception as exc:  # already broken
            logger.debug("resetting a stream raised %s", exc)


# --- yamux ----------------------------------------------------------------------------------------

MAX_PENDING_CONTROL_FRAMES = 64
"""Control frames (SYN answers, pings) the read loop may leave to side tasks at once; past
this it writes inline again, so a peer flooding pings gets back-pressure, not memory."""


class ReadingYamux(Yamux):
    """Yamux whose read loop never waits on the connection's write lock.

    Upstream ``handle_incoming`` answers a SYN (ACK or RST) and a PING inline with
    ``_write_frame``, under the write lock that a stream's data write holds while the
    socket is full. When two peers send each other data at once, each socket fills
    because the other's read loop is parked behind its own writer, and the connection
    wedges until a timeout cancels one of the writers (seen as block fetches both ways
    going silent together for 60 s). Here the read loop hands those frames to a task and
    reads on; the write lock is FIFO, so they still go out before anything the new
    stream's handler writes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader: trio.lowlevel.Task | None = None
        self._pending_control = 0

    async def handle_incoming(self) -> None:
        self._reader = trio.lowlevel.current_task()
        await super().handle_incoming()

    async def _write_frame(self, data: bytes) -> None:
        if (
            trio.lowlevel.current_task() is not self._reader
            or self._nursery is None
            or self._pending_control >= MAX_PENDING_CONTROL_FRAMES
        ):
            await super()._write_frame(data)
            return
        self._pending_control += 1
        try:
            self._nursery.start_soon(self._write_control_frame, data)
        except RuntimeError:  # the connection's nursery has closed: nothing more goes out
            self._pending_control -= 1

    async def _write_control_frame(self, data: bytes) -> None:
        try:
            await super()._write_frame(data)
        except Exception as exc:  # a broken connection: the read loop sees it and closes
            logger.debug("yamux control frame to %s not sent: %s", self.peer_id, exc)
        finally:
            self._pending_control -= 1


ZERO_WINDOW_TIMEOUT_S = 5.0
"""How long a write waits for the peer to open a shut send window (upstream's bound)."""


class WindowWaitingYamuxStream(YamuxStream):
    """A yamux stream whose writer sleeps until the peer opens its send window.

    Upstream ``YamuxStream.write`` polls a shut window every 10 ms for up to 5 s. Every
    poll is a timer, and a peer that reads slowly (a loaded event loop) shuts windows on
    many streams at once: at a hundred nodes in one process the loop then spent ~50% of its
    time expiring those timers, which slowed every reader further. Here a write sends at
    most what the window allows and, when it is shut, waits on an event that the window
    update sets, with the same 5 s bound.
    """

    _window_opened: trio.Event | None = None
    # False: upstream's window updates, one per read (bench.block_fetch compares the two)
    hysteresis_only: ClassVar[bool] = True

    @property
    def send_window(self) -> int:
        return self._send_window

    @send_window.setter
    def send_window(self, value: int) -> None:
        self._send_window = value
        if value > 0 and self._window_opened is not None:
            self._window_opened.set()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            if self.send_window <= 0 and not self.closed and not self.send_closed:
                self._window_opened = trio.Event()
                with trio.move_on_after(ZERO_WINDOW_TIMEOUT_S):
                    await self._window_opened.wait()
                if self.send_window <= 0 and not self.closed and not self.send_closed:
                    raise MuxedStreamError(
                        f"Timed out waiting for window update after {ZERO_WINDOW_TIMEOUT_S:g} s."
                    )
            # at most what the window allows, so upstream's write never polls (another
            # writer of this stream may still take the window first; then it does)
            size = min(len(view) - sent, max(self.send_window, 1))
            await super().write(bytes(view[sent : sent + size]))
            sent += size

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        """Open the peer's send window once half of it has been read (go-yamux's hysteresis,
        upstream's first two cases), not on every read. Upstream also sends an update for
        every read that leaves less than that: a Noise frame and a syscall on each side
        per read, and gossipsub reads each RPC's length byte by byte, so a node sent three
        window updates per gossip message and one or more per block read. A peer is never
        left waiting on bytes we have read: at most half a window goes unannounced."""
        if not self.hysteresis_only:
            await super()._auto_tune_and_send_window_update(bytes_read=bytes_read)
            return
        total_delta = 0
        async with self.window_lock:
            if bytes_read > 0:
                self._pending_recv_release += bytes_read
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            delta = self.target_recv_window - (self.recv_window + buffered)
            threshold = self._grow_threshold()
            if delta >= threshold and delta > 0:
                total_delta = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
                self._pending_recv_release = 0
            elif self._pending_recv_release >= threshold:
                total_delta = self._pending_recv_release
                self.recv_window += total_delta
                self._pending_recv_release = 0
                total_delta += self._apply_autotune_epoch(buffered)
        if total_delta > 0:  # sent outside the lock, as upstream does
            await self.send_window_update(total_delta, skip_lock=True)


@contextmanager
def upstream_window_updates() -> Iterator[None]:
    """py-libp2p's own window updates (one per read) in this process while inside, for
    benchmarks to compare with :class:`WindowWaitingYamuxStream`'s."""
    WindowWaitingYamuxStream.hysteresis_only = False
    try:
        yield
    finally:
        WindowWaitingYamuxStream.hysteresis_only = True


def install_yamux_patch() -> None:
    """Have every yamux connection of this process be a :class:`ReadingYamux` and every
    stream a :class:`WindowWaitingYamuxStream` (idempotent): MuxerMultistream.new_conn builds
    ``Yamux``, and Yamux its streams, by their module-global names."""
    upstream_muxer_multistream.Yamux = ReadingYamux  # type: ignore[misc]
    upstream_yamux.YamuxStream = WindowWaitingYamuxStream  # type: ignore[misc]


# --- pubsub: faults reported by the patched module globals ---------------------------------------

FaultReport = Callable[[str, bool], None]
"""``(reason, severe)``: charge the peer whose bytes are being handled; ``severe`` for a
protocol violation no honest implementation commits (graylists at once)."""
_STREAM_FAULT: ContextVar[FaultReport | None] = ContextVar("pubsub_stream_fault", default=None)
_SIGNATURE_FAULTS: ContextVar[list[str] | None] = ContextVar("pubsub_bad_sig", default=None)

_upstream_signature_validator = upstream_pubsub.signature_validator
_upstream_consume_signed_record = upstream_pubsub.maybe_consume_signed_record
_upstream_read_rpc = upstream_pubsub.read_varint_prefixed_bytes_limited


def verify_message_signature(msg: rpc_pb2.Message) -> bool:
    """pubsub/validators.py:signature_validator that never raises, and says why it failed.

    Upstream re-raises when ``msg.key`` is not a public key (a ``from`` that is not an
    identity multihash makes it read the key), out of the message task.
    """
    try:
        valid = bool(_upstream_signature_validator(msg))
        reason = "" if valid else "bad signature"
    except Exception as exc:
        valid, reason = False, f"undecodable signing key: {type(exc).__name__}"
    if not valid:
        faults = _SIGNATURE_FAULTS.get()
        if faults is not None:
            faults.append(reason)
    return valid


def _checked_signed_record(rpc: rpc_pb2.RPC, host: Any, peer_id: PeerID) -> bool:
    """pubsub/utils.py:maybe_consume_signed_record, charging the sender for a bad record
    (upstream drops the RPC after a signature check and forgets it)."""
    consumed = bool(_upstream_consume_signed_record(rpc, host, peer_id))
    if not consumed:
        report = _STREAM_FAULT.get()
        if report is not None:
            report("invalid signed peer record", False)
    return consumed


async def _checked_read_rpc(stream: Any, max_length: int) -> bytes:
    """utils/varint.py:read_varint_prefixed_bytes_limited as Pubsub calls it, charging the
    sender for an oversized frame or an overlong length varint (upstream resets the stream
    and forgets it). A frame cut short is not charged: an honest peer that disconnects
    mid-write looks the same."""
    try:
        return await _upstream_read_rpc(stream, max_length)
    except (upstream_pubsub.MessageTooLarge, upstream_pubsub.ParseError) as exc:
        report = _STREAM_FAULT.get()
        if report is not None:
            too_large = isinstance(exc, upstream_pubsub.MessageTooLarge)
            report(f"RPC frame over {max_length} bytes" if too_large else "bad varint length", True)
        raise


def install_pubsub_patches() -> None:
    """Point pubsub/pubsub.py's module globals at the checked versions above (idempotent).

    They are module functions Pubsub calls by name inside
    ``continuously_read_stream`` and ``push_msg``; wrapping them is smaller and safer than
    re-implementing those two long methods. Without a :class:`GossipPubsub` around the call
    they behave as upstream does, except that a bad key fails the check instead of raising.
    """
    upstream_pubsub.signature_validator = verify_message_signature
    upstream_pubsub.maybe_consume_signed_record = _checked_signed_record  # type: ignore[assignment]
    upstream_pubsub.read_varint_prefixed_bytes_limited = _checked_read_rpc  # type: ignore[assignment]


# --- signed peer records ------------------------------------------------------------------------

RECORD_CACHE_SIZE = 4096
"""Verified signed-record envelopes kept (a few hundred bytes each): one per peer and domain
is what a node sees, until a peer changes its addresses."""
_ENVELOPE_USERS = (
    "libp2p.pubsub.utils",
    "libp2p.pubsub.gossipsub",
    "libp2p.kad_dht.utils",
    "libp2p.identity.update",
)
_upstream_consume_envelope = upstream_envelope.consume_envelope
_verified_envelopes: OrderedDict[tuple[str, bytes], tuple[Any, Any]] = OrderedDict()


def consume_envelope_once(data: bytes, domain: str) -> tuple[Any, Any]:
    """peer/envelope.py:consume_envelope, whose result for the same bytes and domain is kept
    once the signature verified: the bytes are the whole signed envelope, so equal bytes
    verify equally. What fails verification is not kept (it raises every time, as
    upstream); the table is bounded, least recently used first out."""
    key = (domain, bytes(data))
    found = _verified_envelopes.get(key)
    if found is not None:
        _verified_envelopes.move_to_end(key)
        return found
    found = _upstream_consume_envelope(data, domain)
    _verified_envelopes[key] = found
    while len(_verified_envelopes) > RECORD_CACHE_SIZE:
        _verified_envelopes.popitem(last=False)
    return found


def install_record_cache() -> None:
    """Point the modules that verify signed peer records at :func:`consume_envelope_once`
    (idempotent)."""
    for name in _ENVELOPE_USERS:
        module = importlib.import_module(name)
        if getattr(module, "consume_envelope", None) is not None:
            module.consume_envelope = consume_envelope_once  # type: ignore[attr-defined]


# --- pubsub ---------------------------------------------------------------------------------------


class _MessageIgnored(Exception):
    """Raised out of :meth:`GossipPubsub.validate_msg` for an ignored message; deliberately
    not a ValidationError, which upstream push_msg would count against the forwarder."""


_PUBSUB_TIMEOUT = "Validation timeout"  # py-libp2p 0.8.1's cached error for its timeout
MAX_TOPIC_LENGTH = 256
"""Longest topic name a peer may subscribe to; a task topic is under 80 characters."""
_IGNORE_REASONS: ContextVar[list[str] | None] = ContextVar("gossip_ignore_reasons", default=None)


def ignore_current_message(reason: str) -> None:
    """Called by a topic validator about to return False: make the verdict IGNORE.

    A context variable, because py-libp2p runs async validators in child tasks of the
    validate_msg call and turns whatever they raise into a plain ValidationError.
    """
    reasons = _IGNORE_REASONS.get()
    if reasons is not None:
        reasons.append(reason)


class GossipPubsub(Pubsub):
    """py-libp2p's Pubsub that survives any bytes from a peer, charges the peer for them, and
    has gossipsub's IGNORE verdict.

    Peer faults (:meth:`charge`) lower the peer's gossip score: a message with a bad
    signature or an undecodable signing key counts as an invalid message on its topics (P4),
    like a validator's rejection; an RPC that cannot be decoded or an oversized frame is a
    protocol violation worth ``protocol_violation_penalty`` behaviour penalty (P5), enough to
    graylist at once; anything else a peer's bytes make fail costs 1. ``fault_listener`` (the
    ScoreGuard) hears of each, so a graylisted peer is banned without waiting for a heartbeat.

    A validator that calls :func:`ignore_current_message` before returning False gets the
    message dropped with no score penalty for the forwarder, its cached verdict removed, and
    it is not marked seen, so a later copy (or our own replay) is validated afresh. py-libp2p's
    own validation timeout gets the same treatment: it also counts the wait for a validator
    slot, so it measures our load, never the sender's fault; the message goes to its topic's
    ``timed_out`` handler (TaskGossip parks it), since no validator saw it.
    """

    def __init__(self, *args: Any, protocol_violation_penalty: float = 20.0, **kwargs: Any) -> None:
        install_pubsub_patches()
        super().__init__(*args, **kwargs)
        self.timed_out: dict[str, Callable[[PeerID, rpc_pb2.Message], None]] = {}
        self.protocol_violation_penalty = protocol_violation_penalty
        self.peer_faults: Counter[str] = Counter()
        """Faults charged to peers, by reason (observability; tests read it)."""
        self.fault_listener: Callable[[PeerID], None] | None = None

    def charge(
        self, peer: PeerID, reason: str, severe: bool = False, topics: tuple[str, ...] = ()
    ) -> None:
        """Lower ``peer``'s score for a fault in the bytes it sent (see the class doc)."""
        if peer == self.my_id:
            return
        self.peer_faults[reason] += 1
        scorer = getattr(self.router, "scorer", None)
        if scorer is not None:
            if topics:
                for topic in topics:
                    scorer.on_invalid_message(peer, topic)
            else:
                scorer.penalize_behavior(peer, self.protocol_violation_penalty if severe else 1.0)
        logger.debug("gossip peer %s charged: %s", peer, reason)
        if self.fault_listener is not None:
            self.fault_listener(peer)

    async def stream_handler(self, stream: INetStream) -> None:
        """Changes pubsub/pubsub.py:Pubsub.stream_handler, which lets every exception but a
        few stream errors out (an undecodable RPC's protobuf DecodeError, a router bug hit by
        a crafted control message): here the stream is reset and the sender charged. A
        banned peer's streams are reset before a byte is parsed."""
        peer = stream.muxed_conn.peer_id
        if peer in self.blacklisted_peers:
            await _reset_quietly(stream)
            return

        def report(reason: str, severe: bool) -> None:
            self.charge(peer, reason, severe)

        token = _STREAM_FAULT.set(report)
        try:
            await super().stream_handler(stream)
        except RuntimeError as exc:
            # py-libp2p 0.8.1 checks manager.is_running, which stays True while the service
            # stops, then schedules push_msg on its closed nursery: the service is going away.
            if "closed to new arrivals" not in str(exc):
                await self._stream_failed(stream, exc)
                return
            logger.debug("pubsub stopping; dropped a stream from %s", peer)
            await _reset_quietly(stream)
        except Exception as exc:
            await self._stream_failed(stream, exc)
        finally:
            _STREAM_FAULT.reset(token)

    async def _stream_failed(self, stream: INetStream, exc: Exception) -> None:
        peer = stream.muxed_conn.peer_id
        undecodable = isinstance(exc, DecodeError)  # ParseFromString on a peer's bytes
        reason = "undecodable RPC" if undecodable else f"RPC handling raised {type(exc).__name__}"
        logger.warning("pubsub stream from %s closed: %s (%r)", peer, reason, exc)
        self.charge(peer, reason, severe=undecodable)
        await _reset_quietly(stream)

    def handle_subscription(self, origin_id: PeerID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        """Changes pubsub/pubsub.py:Pubsub.handle_subscription, which stores any topic name a
        peer subscribes to (up to 100 per peer, each as long as an RPC frame: about 100 MB per
        identity). A name longer than :data:`MAX_TOPIC_LENGTH` is refused and charged."""
        if sub_message.subscribe and len(sub_message.topicid) > MAX_TOPIC_LENGTH:
            self.charge(origin_id, f"topic name over {MAX_TOPIC_LENGTH} characters")
            return
        super().handle_subscription(origin_id, sub_message)

    async def push_msg(self, msg_forwarder: PeerID, msg: rpc_pb2.Message) -> None:
        """Changes pubsub/pubsub.py:Pubsub.push_msg: a bad signature or signing key costs
        the forwarder (P4), and an exception from a peer's message is logged and charged
        instead of stopping the Pubsub service, whose task runs it."""
        bad_signatures: list[str] = []
        token = _SIGNATURE_FAULTS.set(bad_signatures)
        try:
            await super().push_msg(msg_forwarder, msg)
        except _MessageIgnored as ignored:
            logger.debug("ignored gossip forwarded by %s: %s", msg_forwarder, ignored)
        except Exception as exc:
            if msg_forwarder == self.my_id:
                raise  # our own publish: the caller sees it
            logger.warning("a message forwarded by %s failed in pubsub: %r", msg_forwarder, exc)
            self.charge(msg_forwarder, f"message handling raised {type(exc).__name__}")
        finally:
            _SIGNATURE_FAULTS.reset(token)
        if bad_signatures:
            self.charge(msg_forwarder, bad_signatures[0], topics=tuple(msg.topicIDs))

    async def validate_msg(self, msg_forwarder: PeerID, msg: rpc_pb2.Message) -> None:
        """Changes pubsub/pubsub.py:Pubsub.validate_msg to add the IGNORE verdict."""
        reasons: list[str] = []
        token = _IGNORE_REASONS.set(reasons)
        try:
            await super().validate_msg(msg_forwarder, msg)
        except ValidationError:
            message_id = self._msg_id_constructor(msg)
            cached = self.validation_cache.cache.get(message_id)
            if not reasons and cached is not None and cached.error_message == _PUBSUB_TIMEOUT:
                reasons.append(f"slow validation: over py-libp2p's {self.validation_timeout} s")
                for topic in msg.topicIDs:
                    handler = self.timed_out.get(topic)
                    if handler is not None:
                        handler(msg_forwarder, msg)
            if not reasons:
                raise
            # no checkpoint since validate_msg cached the failure, so no copy saw it
            self.validation_cache._remove(message_id)
            raise _MessageIgnored(reasons[0]) from None
        finally:
            _IGNORE_REASONS.reset(token)


def message_seen(pubsub: Pubsub, msg: rpc_pb2.Message) -> bool:
    """pubsub/pubsub.py:Pubsub._is_msg_seen, which has no public form."""
    return bool(pubsub._is_msg_seen(msg))


async def blacklist_without_teardown(pubsub: Pubsub, peer_id: PeerID) -> None:
    """pubsub/pubsub.py:Pubsub.add_to_blacklist without its teardown task.

    That task deletes ``peers[peer_id]`` after an await during which the dead-peer handler
    already deleted it, and the KeyError stops the whole Pubsub service. The blacklist set
    drops the peer's messages and refuses its new pubsub streams; resetting its stream lets
    the dead-peer handler clean up on its own.
    """
    pubsub.blacklisted_peers.add(peer_id)
    stream = pubsub.peers.get(peer_id)
    if stream is not None:
        await _reset_quietly(stream)


# --- gossipsub router -----------------------------------------------------------------------------


class BackingOffGossipSub(GossipSub):
    """py-libp2p's GossipSub router that backs off from the peers its heartbeat prunes.

    Changes pubsub/gossipsub.py:GossipSub.mesh_heartbeat, which sends PRUNE to the excess
    peers of an oversubscribed mesh without recording a back-off for them, unlike every
    other prune path and the GossipSub v1.1 spec. When the mesh later falls under
    ``degree_low`` (peers leave), the next heartbeat may graft a peer it pruned seconds ago;
    that peer's GRAFT-flood check (a GRAFT within 10 s of the sender's PRUNE) adds a
    behaviour penalty of 10 per topic, so two topics graylist an honest node. A node that
    many peers connect to (the requester) overflows its meshes and loses peers the most.
    """

    def mesh_heartbeat(self) -> tuple[Any, Any]:
        peers_to_graft, peers_to_prune = super().mesh_heartbeat()
        for peer, topics in peers_to_prune.items():
            for topic in topics:
                self._add_back_off(peer, topic, False)
        return peers_to_graft, peers_to_prune

    async def emit_prune(self, topic: str, to_peer: PeerID, do_px: bool, is_unsubscribe: bool) -> None:
        """Changes pubsub/gossipsub.py:GossipSub.emit_prune: every PRUNE we send starts our
        back-off from that peer, as the GossipSub v1.1 spec asks. Upstream, handle_graft's
        GRAFT-flood and score-gate answers prune without one, so our next heartbeat can
        graft the peer seconds later, which its GRAFT-flood check counts against us (10
        points a time; the peer then prunes us the same way, and the two honest peers
        graylist each other)."""
        self._add_back_off(to_peer, topic, is_unsubscribe)
        await super().emit_prune(topic, to_peer, do_px, is_unsubscribe)

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: PeerID) -> None:
        """Changes pubsub/gossipsub.py:GossipSub.handle_graft, which answers a GRAFT for a
        topic we have no mesh for with PRUNE. Pubsub.subscribe announces the subscription
        to every peer before the router joins the topic, so a peer's heartbeat can GRAFT us
        in between; our join then grafts that peer seconds after our PRUNE, and its
        GRAFT-flood check graylists us. Such a GRAFT is ignored, as go-libp2p does."""
        if graft_msg.topicID not in self.mesh:
            return
        await super().handle_graft(graft_msg, sender_peer_id)
