"""Validated gossip for a task: GossipSub v1.1 (v1.2 optional), strict signing, topic
validators, scoring.

Three topics per task (``protocol.messages.topic_name``): models, committee, scores. Every
message, ours included, passes :meth:`TaskGossip.check` before anyone sees it:

- at most ``MAX_MESSAGE_SIZE`` bytes, canonical msgpack of the topic's message type;
- this task's chain id and task address, a round within ``round_window`` of ours
  (a peer one phase ahead or behind is normal at round boundaries);
- the libp2p signer (strict signing proves it holds the key of ``from``) is registered for
  the task, and its registered address is the message's worker/validator address;
- the injected extra validator accepts it (the sortition helper checks VRF proofs there).

A rejected message is dropped, never forwarded, and costs the forwarder score (P4). Peers
whose score falls below ``graylist_threshold`` (about ten invalid messages, or two messages
over the rate limit, each of which adds a behaviour penalty of 5) are pruned from our meshes
and ignored for ``ban_s``.

py-libp2p details handled here (see /work/shared/LIBP2P-NOTES.md):
- the default rate limit (10 msg/s per topic per forwarder, own publishes included) is raised
  to ``max_messages_per_topic_per_second`` (pitfall 4);
- our own publishes run through our own validators, and a rejection would lower our own
  score until we could no longer publish: :meth:`TaskGossip.publish` checks first and
  raises instead (pitfall 6);
- a subscription queue holds only 32 messages and drops the rest silently: a pump task per
  topic drains it into bounded per-consumer channels and counts what it has to drop
  (pitfall 5);
- py-libp2p's heartbeat never prunes a low-score mesh peer unless the mesh is oversubscribed:
  :class:`ScoreGuard` does.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID as PeerID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.tools.anyio_service import background_trio_service

from protocol.errors import MessageError
from protocol.messages import (
    ADDRESS_SIZE,
    MAX_MESSAGE_SIZE,
    TOPIC_KINDS,
    CommitteeProof,
    EvaluationScores,
    Message,
    ModelAnnouncement,
    decode_message,
    encode_message,
    topic_name,
)

__all__ = [
    "AddressLookup",
    "ExtraValidator",
    "GossipConfig",
    "GossipRejected",
    "Received",
    "ScoreGuard",
    "TaskGossip",
    "gossip_score_params",
    "open_pubsub",
    "open_task_gossip",
    "signer_address_of",
]

logger = logging.getLogger(__name__)

_GOSSIPSUB_PROTOCOLS = {"1.2": PROTOCOL_ID_V12, "1.1": PROTOCOL_ID_V11}
_DEDUPE_WINDOW = 8192  # message ids remembered per topic to drop duplicate deliveries

AddressLookup = Callable[[PeerID], bytes | None]
"""Registered chain address (20 bytes) of a peer for the task, or None if not registered."""
ExtraValidator = Callable[[Message, PeerID], bool | Awaitable[bool]]
"""Extra acceptance rule (e.g. VRF proof check): True accepts; False or an exception rejects."""


class GossipRejected(ValueError):
    """A gossip message failed validation; the text names the rule it broke."""


@dataclass(frozen=True)
class GossipConfig:
    versions: tuple[str, ...] = ("1.1",)
    """GossipSub versions offered, preferred first: "1.2" and/or "1.1". 1.2 only adds
    IDONTWANT, which saves bandwidth on large messages; py-libp2p sends it for every
    message, which measured 2.5x the CPU per message (bench/gossip_latency.py) for our
    messages of a few hundred bytes (go-libp2p skips it below 1 KiB)."""
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval_s: int = 1
    """Mesh maintenance and score decay period (py-libp2p's default is 120 s)."""
    max_messages_per_topic_per_second: float = 300.0
    """Per forwarder and topic; above MAX_WORKERS so a round's announcements fit in a burst."""
    round_window: int = 1
    """Accept rounds current-window .. current+window."""
    invalid_message_weight: float = 1.0
    """Score lost per invalid message (P4), decaying by ``score_decay`` per heartbeat."""
    behaviour_penalty_weight: float = 1.0
    """Score lost per unit of behaviour penalty; each message over the rate limit adds 5."""
    score_decay: float = 0.95
    graylist_threshold: float = -10.0
    """Below this, a peer's messages are dropped unseen, we stop sending to it, and
    :class:`ScoreGuard` prunes it from our meshes and bans it. One threshold for all three:
    py-libp2p drops an incoming message at the *publish* threshold before validating or
    rate-limiting it, so no message-borne penalty can push a score past a lower one."""
    ban_s: float = 600.0
    """How long a graylisted peer stays ignored."""
    receive_buffer: int = 1024
    """Messages buffered per consumer of :meth:`TaskGossip.messages` before drops."""

    def __post_init__(self) -> None:
        unknown = [v for v in self.versions if v not in _GOSSIPSUB_PROTOCOLS]
        if not self.versions or unknown:
            raise ValueError(
                f"gossipsub versions must be some of {sorted(_GOSSIPSUB_PROTOCOLS)}, "
                f"got {list(self.versions)}"
            )
        if not 1 <= self.degree_low <= self.degree <= self.degree_high:
            raise ValueError(
                "gossip degrees must satisfy 1 <= degree_low <= degree <= degree_high, got "
                f"{self.degree_low}, {self.degree}, {self.degree_high}"
            )
        if self.heartbeat_interval_s < 1:
            raise ValueError(f"heartbeat_interval_s must be >= 1, got {self.heartbeat_interval_s}")
        if self.round_window < 0:
            raise ValueError(f"round_window must be >= 0, got {self.round_window}")
        if not self.graylist_threshold < 0:
            raise ValueError(f"graylist_threshold must be < 0, got {self.graylist_threshold}")
        if not 0 < self.score_decay <= 1:
            raise ValueError(f"score_decay must be in (0, 1], got {self.score_decay}")
        if self.max_messages_per_topic_per_second <= 0 or self.receive_buffer < 1:
            raise ValueError("max_messages_per_topic_per_second and receive_buffer must be > 0")


def gossip_score_params(config: GossipConfig) -> ScoreParams:
    """Scoring that only punishes: invalid messages (P4) and flooding (P5).

    Positive terms (time in mesh, first deliveries) are left at 0 so a quiet honest peer
    stays at score 0. IP colocation (P7) stays off: a local network puts every peer on
    127.0.0.1.
    """
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(
            weight=config.invalid_message_weight, cap=math.inf, decay=config.score_decay
        ),
        p5_behavior_penalty_weight=config.behaviour_penalty_weight,
        p5_behavior_penalty_decay=config.score_decay,
        p5_behavior_penalty_threshold=0.0,
        publish_threshold=config.graylist_threshold,
        gossip_threshold=config.graylist_threshold,
        graylist_threshold=config.graylist_threshold,
        accept_px_threshold=0.0,
    )


class ScoreGuard:
    """Prunes and bans peers whose score fell below the graylist threshold.

    py-libp2p computes scores but acts on them only partly: its publish gate drops a
    low-score peer's messages, yet its heartbeat keeps the peer in the mesh. Every heartbeat
    this guard sends PRUNE for each of the peer's meshes, drops it from them and blacklists it
    in pubsub (its pubsub stream is reset; its messages and new streams are refused) for
    ``ban_s``. The connection stays: the peer may still serve blocks.
    """

    def __init__(self, pubsub: Pubsub, router: GossipSub, config: GossipConfig) -> None:
        self.pubsub = pubsub
        self.router = router
        self.config = config
        self.banned_until: dict[PeerID, float] = {}
        self.ban_count = 0

    def score(self, peer_id: PeerID) -> float:
        scorer = self.router.scorer
        if scorer is None:
            return 0.0
        return float(scorer.score(peer_id, list(self.pubsub.topic_ids)))

    async def check_once(self) -> list[PeerID]:
        """Ban every peer now below the graylist threshold; returns the newly banned."""
        now = trio.current_time()
        for peer_id, until in list(self.banned_until.items()):
            if now >= until:
                del self.banned_until[peer_id]
                self.pubsub.remove_from_blacklist(peer_id)
        newly_banned = []
        for peer_id in list(self.router.peer_protocol):
            if peer_id in self.banned_until:
                continue
            if self.score(peer_id) >= self.config.graylist_threshold:
                continue
            for topic, mesh in list(self.router.mesh.items()):
                if peer_id in mesh:
                    mesh.discard(peer_id)
                    try:
                        await self.router.emit_prune(topic, peer_id, False, False)
                    except Exception as exc:  # the peer may be gone already
                        logger.debug("PRUNE to %s failed: %s", peer_id, exc)
            await self._blacklist(peer_id)
            self.banned_until[peer_id] = now + self.config.ban_s
            self.ban_count += 1
            newly_banned.append(peer_id)
            logger.warning(
                "gossip peer %s graylisted (score below %s); banned for %.0f s",
                peer_id,
                self.config.graylist_threshold,
                self.config.ban_s,
            )
        return newly_banned

    async def _blacklist(self, peer_id: PeerID) -> None:
        # Not Pubsub.add_to_blacklist: its teardown task deletes peers[peer_id] after an await
        # during which the dead-peer handler already deleted it, and the KeyError stops the
        # whole Pubsub service (py-libp2p 0.8.1). The blacklist set drops the peer's messages
        # and refuses its new pubsub streams; resetting its stream lets the dead-peer handler
        # clean up on its own.
        self.pubsub.blacklisted_peers.add(peer_id)
        stream = self.pubsub.peers.get(peer_id)
        if stream is not None:
            try:
                await stream.reset()
            except Exception as exc:  # already broken: the dead-peer handler cleans up
                logger.debug("resetting the pubsub stream of %s raised %s", peer_id, exc)

    async def run(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat_interval_s)
            await self.check_once()


@dataclass
class GossipNode:
    """A running pubsub stack on a host: Pubsub, its GossipSub router and the score guard."""

    host: IHost
    pubsub: Pubsub
    router: GossipSub
    guard: ScoreGuard
    config: GossipConfig


@asynccontextmanager
async def open_pubsub(host: IHost, config: GossipConfig | None = None) -> AsyncIterator[GossipNode]:
    """Run GossipSub (v1.2, v1.1) with strict signing and scoring on ``host``."""
    config = config or GossipConfig()
    router = GossipSub(
        protocols=[_GOSSIPSUB_PROTOCOLS[v] for v in config.versions],
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_interval_s,
        heartbeat_initial_delay=0.1,
        score_params=gossip_score_params(config),
        spam_protection_enabled=True,
        max_messages_per_topic_per_second=config.max_messages_per_topic_per_second,
    )
    pubsub = Pubsub(host, router, strict_signing=True)
    guard = ScoreGuard(pubsub, router, config)
    pubsub_service: Any = pubsub
    router_service: Any = router
    async with background_trio_service(pubsub_service):
        async with background_trio_service(router_service):
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(guard.run)
                try:
                    yield GossipNode(host, pubsub, router, guard, config)
                finally:
                    nursery.cancel_scope.cancel()


def _message_id(msg: rpc_pb2.Message) -> bytes:
    return bytes(msg.from_id) + bytes(msg.seqno)


def _require_acceptance(verdict: object) -> None:
    if verdict is not True:
        raise GossipRejected("extra validator refused the message")


def _discard(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # a coroutine never awaited would warn


def signer_address_of(message: Message) -> bytes:
    """The address that must have signed ``message``: its worker's or validator's."""
    if isinstance(message, ModelAnnouncement):
        return message.worker
    if isinstance(message, CommitteeProof | EvaluationScores):
        return message.validator
    raise MessageError(f"not a gossip message: {type(message).__name__}")


@dataclass(frozen=True)
class Received:
    """A validated message, with the peer that signed it and the address it is registered as."""

    message: Message
    signer: PeerID
    signer_address: bytes
    kind: str


@dataclass
class _Consumer:
    send: trio.MemorySendChannel[Received]
    dropped: int = 0


@dataclass
class TaskGossip:
    """The three gossip topics of one task, validated as the module doc describes.

    Build it with :func:`open_task_gossip`.
    """

    node: GossipNode
    chain_id: int
    task: bytes
    current_round: Callable[[], int]
    lookup: AddressLookup
    extra_validator: ExtraValidator | None = None
    rejections: Counter[str] = field(default_factory=Counter)
    """Rejected messages by reason, ours and peers' (observability; tests read it)."""
    _consumers: dict[str, list[_Consumer]] = field(default_factory=dict)
    _decoded: OrderedDict[bytes, Message] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if not isinstance(self.task, bytes) or len(self.task) != ADDRESS_SIZE:
            raise ValueError(f"task must be a {ADDRESS_SIZE}-byte contract address")
        self.topics = {kind: topic_name(self.chain_id, self.task, kind) for kind in TOPIC_KINDS}
        self._kind_of_topic = {topic: kind for kind, topic in self.topics.items()}
        self._consumers = {kind: [] for kind in TOPIC_KINDS}

    # --- validation ---

    def check_static(self, data: bytes, kind: str, signer: PeerID) -> tuple[Message, bytes]:
        """Every rule but the extra validator; returns the message and the signer's address."""
        if kind not in self.topics:
            raise GossipRejected(f"unknown topic kind {kind!r}")
        if len(data) > MAX_MESSAGE_SIZE:
            raise GossipRejected(f"oversized: {len(data)} bytes > {MAX_MESSAGE_SIZE}")
        try:
            message = decode_message(data)
        except MessageError as exc:
            raise GossipRejected(f"malformed: {exc}") from exc
        if message.TOPIC_KIND != kind:
            raise GossipRejected(
                f"wrong topic: a {type(message).__name__} belongs on {message.TOPIC_KIND}, not {kind}"
            )
        if message.chain_id != self.chain_id:
            raise GossipRejected(
                f"wrong chain: {message.chain_id}, this task is on {self.chain_id}"
            )
        if message.task != self.task:
            raise GossipRejected(
                f"wrong task: 0x{message.task.hex()}, expected 0x{self.task.hex()}"
            )
        current = self.current_round()
        if abs(message.round - current) > self.node.config.round_window:
            raise GossipRejected(
                f"wrong round: {message.round}, ours is {current} "
                f"(window ±{self.node.config.round_window})"
            )
        registered = self.lookup(signer)
        if registered is None:
            raise GossipRejected(
                f"unregistered signer: peer {signer} is not registered for the task"
            )
        claimed = signer_address_of(message)
        if registered != claimed:
            raise GossipRejected(
                f"address mismatch: peer {signer} is registered as 0x{registered.hex()}, "
                f"the message claims 0x{claimed.hex()}"
            )
        return message, registered

    def check_sync(self, data: bytes, kind: str, signer: PeerID) -> tuple[Message, bytes]:
        """All rules, for a synchronous extra validator; raises GossipRejected naming the one
        broken."""
        message, registered = self.check_static(data, kind, signer)
        if self.extra_validator is not None:
            verdict = self._call_extra_validator(message, signer)
            if inspect.isawaitable(verdict):
                _discard(verdict)
                raise TypeError("the extra validator is async; use check()")
            _require_acceptance(verdict)
        return message, registered

    async def check(self, data: bytes, kind: str, signer: PeerID) -> tuple[Message, bytes]:
        """All rules; raises GossipRejected naming the one broken."""
        message, registered = self.check_static(data, kind, signer)
        if self.extra_validator is not None:
            verdict = self._call_extra_validator(message, signer)
            if inspect.isawaitable(verdict):
                try:
                    verdict = await verdict
                except Exception as exc:
                    raise GossipRejected(f"extra validator: {exc}") from exc
            _require_acceptance(verdict)
        return message, registered

    def _call_extra_validator(self, message: Message, signer: PeerID) -> object:
        assert self.extra_validator is not None
        try:
            return self.extra_validator(message, signer)
        except Exception as exc:
            raise GossipRejected(f"extra validator: {exc}") from exc

    @property
    def _extra_validator_is_async(self) -> bool:
        hook = self.extra_validator
        return hook is not None and (
            inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)
        )

    def _reject(self, kind: str, forwarder: PeerID, exc: Exception) -> bool:
        if isinstance(exc, GossipRejected):
            self.rejections[str(exc).split(":", 1)[0]] += 1
            logger.debug("rejected gossip on %s forwarded by %s: %s", kind, forwarder, exc)
        else:  # a broken callback must not take the router down
            self.rejections["validator error"] += 1
            logger.error("gossip validation raised unexpectedly: %r", exc)
        return False

    def _kind_of(self, msg: rpc_pb2.Message) -> str | None:
        if len(msg.topicIDs) != 1:
            return None
        return self._kind_of_topic.get(msg.topicIDs[0])

    def _sync_topic_validator(self, forwarder: PeerID, msg: rpc_pb2.Message) -> bool:
        # Synchronous on purpose: py-libp2p checks "seen" before validating and marks it
        # after, so an awaiting validator lets two copies of a message through at once.
        kind = self._kind_of(msg)
        if kind is None:
            self.rejections["not one of the task's topics"] += 1
            return False
        try:
            message, _ = self.check_sync(msg.data, kind, PeerID(msg.from_id))
        except Exception as exc:
            return self._reject(kind, forwarder, exc)
        self._remember_decoded(msg, message)
        return True

    async def _async_topic_validator(self, forwarder: PeerID, msg: rpc_pb2.Message) -> bool:
        kind = self._kind_of(msg)
        if kind is None:
            self.rejections["not one of the task's topics"] += 1
            return False
        try:
            message, _ = await self.check(msg.data, kind, PeerID(msg.from_id))
        except Exception as exc:
            return self._reject(kind, forwarder, exc)
        self._remember_decoded(msg, message)
        return True

    def _remember_decoded(self, msg: rpc_pb2.Message, message: Message) -> None:
        # Decoding costs about a millisecond (CID parsing); the pump reuses this result.
        self._decoded[_message_id(msg)] = message
        if len(self._decoded) > _DEDUPE_WINDOW:
            self._decoded.popitem(last=False)

    # --- publishing and receiving ---

    async def publish(self, message: Message) -> None:
        """Check ``message`` as a peer would, then publish it on its topic.

        Raises GossipRejected (and publishes nothing) if a peer would reject it; publishing
        it anyway would only lower our own score.
        """
        data = encode_message(message)
        kind = message.TOPIC_KIND
        try:
            await self.check(data, kind, self.node.host.get_id())
        except GossipRejected as exc:
            self.rejections[f"own: {str(exc).split(':', 1)[0]}"] += 1
            raise GossipRejected(f"not publishing our own {type(message).__name__}: {exc}") from exc
        await self.node.pubsub.publish(self.topics[kind], data)

    @asynccontextmanager
    async def messages(self, kind: str) -> AsyncIterator[trio.MemoryReceiveChannel[Received]]:
        """A channel of validated messages of ``kind`` for as long as the block runs.

        Each consumer gets every message; if it falls ``receive_buffer`` messages behind,
        new ones are dropped for it (counted in ``dropped``, logged).
        """
        if kind not in self._consumers:
            raise ValueError(f"unknown topic kind {kind!r}; expected one of {TOPIC_KINDS}")
        send, receive = trio.open_memory_channel[Received](self.node.config.receive_buffer)
        consumer = _Consumer(send)
        self._consumers[kind].append(consumer)
        try:
            yield receive
        finally:
            # close(), not aclose(): no checkpoint that could turn an unwinding error into
            # Cancelled in a cancelled scope.
            self._consumers[kind].remove(consumer)
            send.close()
            receive.close()

    async def _pump(self, kind: str, subscription: Any) -> None:
        recent: OrderedDict[bytes, None] = OrderedDict()
        async for msg in subscription:
            # Exactly once per consumer, even when an async validator lets py-libp2p deliver
            # two concurrently arriving copies.
            message_id = _message_id(msg)
            if message_id in recent:
                continue
            recent[message_id] = None
            if len(recent) > _DEDUPE_WINDOW:
                recent.popitem(last=False)
            message = self._decoded.pop(message_id, None)
            if message is None:
                try:
                    message = decode_message(msg.data)  # validated already; cannot fail
                except MessageError:
                    continue
            signer = PeerID(msg.from_id)
            received = Received(message, signer, signer_address_of(message), kind)
            for consumer in self._consumers[kind]:
                try:
                    consumer.send.send_nowait(received)
                except trio.WouldBlock:
                    consumer.dropped += 1
                    logger.warning(
                        "a %s consumer is %d messages behind; dropped one",
                        kind,
                        self.node.config.receive_buffer,
                    )


@asynccontextmanager
async def open_task_gossip(
    node: GossipNode,
    chain_id: int,
    task: bytes,
    current_round: Callable[[], int],
    lookup: AddressLookup,
    extra_validator: ExtraValidator | None = None,
) -> AsyncIterator[TaskGossip]:
    """Subscribe to the task's three topics with validators; unsubscribe on exit."""
    gossip = TaskGossip(node, chain_id, task, current_round, lookup, extra_validator)
    pubsub = node.pubsub
    async with trio.open_nursery() as nursery:
        try:
            for kind, topic in gossip.topics.items():
                if gossip._extra_validator_is_async:
                    pubsub.set_topic_validator(topic, gossip._async_topic_validator, True)
                else:
                    pubsub.set_topic_validator(topic, gossip._sync_topic_validator, False)
                subscription = await pubsub.subscribe(topic)
                nursery.start_soon(gossip._pump, kind, subscription)
            yield gossip
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                for topic in gossip.topics.values():
                    pubsub.remove_topic_validator(topic)
                    try:
                        await pubsub.unsubscribe(topic)
                    except Exception as exc:  # stopping anyway
                        logger.debug("unsubscribing %s failed: %s", topic, exc)
