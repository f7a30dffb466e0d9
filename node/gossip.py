"""Validated gossip for a task: GossipSub v1.1 (v1.2 optional), strict signing, topic
validators, scoring.

Three topics per task (``protocol.messages.topic_name``): models, committee, scores. Every
message, ours included, passes :meth:`TaskGossip.check` before anyone sees it: the pure rules
of ``protocol.gossip_rules.validate`` (size, schema, chain/task/round, registration, signer
binding, the sender's role on the topic), then the injected extra validator (the runtime
checks committee VRF proofs there).

A rejected message is dropped, never forwarded, and costs the forwarder score (P4); so does
a message with a bad signature or signing key, and bytes no honest implementation sends
(node.libp2p_compat). A peer whose score falls below ``graylist_threshold`` (about ten
invalid messages, two messages over the rate limit, or one undecodable RPC) is banned at
once by :class:`ScoreGuard`: pruned from our meshes, refused by pubsub for ``ban_s`` and
disconnected.

Rejecting is only right when the message is wrong. When it is only *our* view that cannot
judge it yet (a signer whose membership we have not loaded, a round our chain follower has
not reached, a chain read that failed or took too long), rejecting would penalize honest
forwarders and, since py-libp2p caches the verdict per message id, lose the message for
good. Those messages get gossipsub's third verdict, IGNORE (:class:`GossipIgnored`): dropped
without penalty, neither cached nor marked seen, and parked to be validated again once our
view moved on (:class:`GossipPubsub` adds the verdict py-libp2p 0.8.1 lacks). Before ignoring,
the async path asks the source of truth: ``refresh_members`` reloads the task's members on a
lookup miss (a signer still unknown afterwards is rejected), ``chain_round`` says whether a
round ahead of ours is real (one beyond the chain's round is rejected). Messages of a round
already behind our window are ignored, not rejected: an honest forwarder a round behind us
still relays them.

py-libp2p behaviour handled here:
- the default rate limit (10 msg/s per topic per forwarder, own publishes included) is raised
  to ``max_messages_per_topic_per_second``;
- our own publishes run through our own validators, and a rejection would lower our own
  score until we could no longer publish: :meth:`TaskGossip.publish` checks first and
  raises instead;
- a subscription queue holds only 32 messages and drops the rest silently: a pump task per
  topic drains it into bounded per-consumer channels and counts what it has to drop;
- py-libp2p's heartbeat never prunes a low-score mesh peer unless the mesh is oversubscribed:
  :class:`ScoreGuard` does.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID as PeerID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.tools.anyio_service import background_trio_service

from node.libp2p_compat import (
    BackingOffGossipSub,
    GossipPubsub,
    blacklist_without_teardown,
    ignore_current_message,
    message_seen,
)
from protocol.errors import MessageError
from protocol.gossip_rules import (
    UNREGISTERED,
    WRONG_ROUND,
    Accept,
    GossipView,
    Ignore,
    Incoming,
    Member,
    signer_address_of,
    validate,
)
from protocol.messages import (
    ADDRESS_SIZE,
    TOPIC_KINDS,
    Message,
    decode_message,
    encode_message,
    topic_name,
)
from protocol.state.records import Role

__all__ = [
    "AddressLookup",
    "ExtraValidator",
    "GossipConfig",
    "GossipIgnored",
    "GossipPubsub",
    "GossipRejected",
    "Received",
    "RoleLookup",
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
_VALIDATOR_SLOTS = 64  # concurrent async validations per host
_OWN_APPROVED_LIMIT = 64  # own messages checked by publish() whose validation is still due

AddressLookup = Callable[[PeerID], bytes | None]
"""Registered chain address (20 bytes) of a peer for the task, or None if not registered."""
ExtraValidator = Callable[[Message, PeerID], bool | Awaitable[bool]]
"""Extra acceptance rule (e.g. VRF proof check): True accepts; False or an exception rejects,
except :class:`GossipIgnored`, which says it cannot judge the message yet."""
RoleLookup = Callable[[bytes], Role | None]
"""The task role of a registered address; None when unknown (the role rule is skipped)."""
MembersRefresh = Callable[[], Awaitable[None]]
"""Reload the task's members from the chain, so that ``lookup`` sees late joiners."""
ChainRound = Callable[[], Awaitable[int]]
"""The task's current round as the chain says now (our round view may lag it)."""


class GossipRejected(ValueError):
    """A gossip message failed validation; the text names the rule it broke."""


class GossipIgnored(GossipRejected):
    """We cannot judge the message (yet): dropped without penalizing the forwarder.

    ``retry``: our view may catch up (park it and validate it again later); False for
    messages that will never be of use (a stale round).
    """

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


class _UnknownSigner(GossipRejected):
    """A lookup miss: the async path refreshes the members before rejecting."""


class _RoundAhead(GossipRejected):
    """A round beyond our window: the async path asks the chain before rejecting."""

    def __init__(self, reason: str, round_: int) -> None:
        super().__init__(reason)
        self.round = round_


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
    disconnect_banned: bool = True
    """Close a graylisted peer's connection as well (it may dial again; pubsub still refuses
    it until the ban ends)."""
    protocol_violation_penalty: float = 20.0
    """Behaviour penalty for bytes no honest implementation sends (an undecodable RPC, an
    oversized frame); above -graylist_threshold, so one graylists the peer."""
    receive_buffer: int = 1024
    """Messages buffered per consumer of :meth:`TaskGossip.messages` before drops."""
    validation_timeout_s: float = 4.0
    """Bound on one async validation (chain reads included). Past it the message is ignored
    and retried later, not rejected: a slow chain or a busy loop is our lag, not the
    sender's fault. py-libp2p's own timeout, which would reject, is set far above it."""
    refresh_interval_s: float = 1.0
    """Least time between two member reloads or chain round reads triggered by messages, so
    unknown signers cannot make us hammer the chain."""
    pending_limit: int = 1024
    """Ignored messages kept for another validation; beyond it the oldest are dropped."""
    pending_bytes: int = 16 * 1024 * 1024
    """The same bound in message bytes (a message may be up to MAX_MESSAGE_SIZE)."""
    pending_per_signer: int = 32
    """The same bound per signer (an honest one has a few messages a round)."""
    pending_retry_s: float = 2.0
    """A parked message is validated again when our round changed or after this long,
    doubling with each attempt (up to 64 times this)."""
    pending_ttl_s: float = 120.0
    """A parked message still unjudgeable after this long is dropped."""

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
        if not self.protocol_violation_penalty > 0:
            raise ValueError(
                f"protocol_violation_penalty must be > 0, got {self.protocol_violation_penalty}"
            )
        if not 0 < self.score_decay <= 1:
            raise ValueError(f"score_decay must be in (0, 1], got {self.score_decay}")
        if self.max_messages_per_topic_per_second <= 0 or self.receive_buffer < 1:
            raise ValueError("max_messages_per_topic_per_second and receive_buffer must be > 0")
        timings = {
            "validation_timeout_s": self.validation_timeout_s,
            "refresh_interval_s": self.refresh_interval_s,
            "pending_retry_s": self.pending_retry_s,
            "pending_ttl_s": self.pending_ttl_s,
        }
        for name, value in timings.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if min(self.pending_limit, self.pending_bytes, self.pending_per_signer) < 0:
            raise ValueError(
                "pending_limit, pending_bytes and pending_per_signer must be >= 0, got "
                f"{self.pending_limit}, {self.pending_bytes}, {self.pending_per_signer}"
            )


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
    """Bans peers whose score fell below the graylist threshold.

    py-libp2p computes scores but acts on them only partly: its publish gate drops a
    low-score peer's messages, yet its heartbeat keeps the peer in the mesh and its
    connection open. A peer is banned as soon as a charged fault takes it below the threshold
    (GossipPubsub calls :meth:`on_fault`), or at the next heartbeat for other penalties: for
    ``ban_s`` pubsub refuses its messages and streams; we send PRUNE for each of its meshes,
    drop it from them and, with ``disconnect_banned``, close its connection.

    Peers that never completed a pubsub handshake with us (a bare host writing raw RPCs) are
    checked too: the candidates are the router's peers and every peer with a penalty.
    """

    def __init__(self, pubsub: Pubsub, router: GossipSub, config: GossipConfig) -> None:
        self.pubsub = pubsub
        self.router = router
        self.config = config
        self.banned_until: dict[PeerID, float] = {}
        self.ban_count = 0
        self._to_tear_down: list[PeerID] = []
        self._wake = trio.Event()

    def score(self, peer_id: PeerID) -> float:
        scorer = self.router.scorer
        if scorer is None:
            return 0.0
        return float(scorer.score(peer_id, list(self.pubsub.topic_ids)))

    def on_fault(self, peer_id: PeerID) -> None:
        """A fault was just charged to ``peer_id``: ban it now if it fell below the line,
        before any more of its messages are handled."""
        if peer_id not in self.banned_until and self.score(peer_id) < self.config.graylist_threshold:
            self._ban(peer_id, trio.current_time())

    def _ban(self, peer_id: PeerID, now: float) -> None:
        self.pubsub.blacklisted_peers.add(peer_id)  # refuses its messages from here on
        self.banned_until[peer_id] = now + self.config.ban_s
        self.ban_count += 1
        self._to_tear_down.append(peer_id)
        self._wake.set()
        logger.warning(
            "gossip peer %s graylisted (score %.1f, below %s: %s); banned for %.0f s",
            peer_id,
            self.score(peer_id),
            self.config.graylist_threshold,
            self.penalties(peer_id) or "no penalty recorded",
            self.config.ban_s,
        )

    def penalties(self, peer_id: PeerID) -> str:
        """The peer's score terms that are not zero, by name (what got it banned)."""
        scorer = self.router.scorer
        if scorer is None:
            return ""
        # .get: these are defaultdicts, and a lookup must not add the peer to them
        terms = {
            "invalid messages": sum(scorer.invalid_messages.get(peer_id, {}).values()),
            "behaviour": scorer.behavior_penalty.get(peer_id, 0.0),
            "GRAFT flood": scorer.graft_flood_penalties.get(peer_id, 0.0),
            "IWANT spam": scorer.iwant_spam_penalties.get(peer_id, 0.0),
            "IHAVE spam": scorer.ihave_spam_penalties.get(peer_id, 0.0),
            "equivocation": scorer.equivocation_penalties.get(peer_id, 0.0),
        }
        return ", ".join(f"{name} {value:.1f}" for name, value in terms.items() if value)

    def _candidates(self) -> set[PeerID]:
        peers = set(self.router.peer_protocol)
        scorer = self.router.scorer
        if scorer is not None:
            peers.update(scorer.behavior_penalty, scorer.invalid_messages)
            peers.update(scorer.graft_flood_penalties, scorer.iwant_spam_penalties)
            peers.update(scorer.ihave_spam_penalties, scorer.equivocation_penalties)
        return peers

    async def check_once(self) -> list[PeerID]:
        """Ban every peer now below the graylist threshold; returns the newly banned."""
        now = trio.current_time()
        for peer_id, until in list(self.banned_until.items()):
            if now >= until:
                del self.banned_until[peer_id]
                self.pubsub.remove_from_blacklist(peer_id)
        newly_banned = []
        for peer_id in self._candidates():
            if peer_id in self.banned_until:
                continue
            if self.score(peer_id) >= self.config.graylist_threshold:
                continue
            self._ban(peer_id, now)
            newly_banned.append(peer_id)
        await self._tear_down()
        return newly_banned

    async def _tear_down(self) -> None:
        while self._to_tear_down:
            peer_id = self._to_tear_down.pop(0)
            for topic, mesh in list(self.router.mesh.items()):
                if peer_id in mesh:
                    mesh.discard(peer_id)
                    try:
                        await self.router.emit_prune(topic, peer_id, False, False)
                    except Exception as exc:  # the peer may be gone already
                        logger.debug("PRUNE to %s failed: %s", peer_id, exc)
            await blacklist_without_teardown(self.pubsub, peer_id)
            if self.config.disconnect_banned:
                try:
                    await self.pubsub.host.disconnect(peer_id)
                except Exception as exc:  # gone already
                    logger.debug("disconnecting banned peer %s raised %s", peer_id, exc)

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.config.heartbeat_interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.check_once()


@dataclass
class GossipNode:
    """A running pubsub stack on a host: Pubsub, its GossipSub router and the score guard."""

    host: IHost
    pubsub: GossipPubsub
    router: GossipSub
    guard: ScoreGuard
    config: GossipConfig


@asynccontextmanager
async def open_pubsub(host: IHost, config: GossipConfig | None = None) -> AsyncIterator[GossipNode]:
    """Run GossipSub (v1.2, v1.1) with strict signing, scoring and IGNORE on ``host``."""
    config = config or GossipConfig()
    router = BackingOffGossipSub(
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
    pubsub = GossipPubsub(
        host,
        router,
        strict_signing=True,
        # a backstop only: TaskGossip bounds its validations itself and ignores on timeout
        validation_timeout=4 * config.validation_timeout_s,
        # async validators waiting on the chain hold a slot each; 10 (the default) made
        # every other message queue behind a few slow ones
        max_concurrent_validator_count=_VALIDATOR_SLOTS,
        protocol_violation_penalty=config.protocol_violation_penalty,
    )
    guard = ScoreGuard(pubsub, router, config)
    pubsub.fault_listener = guard.on_fault
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
class _Parked:
    """An ignored message kept for another validation."""

    forwarder: PeerID
    msg: rpc_pb2.Message
    expires_at: float
    round_view: tuple[int, bool] = (0, False)
    retry_at: float = 0.0
    attempts: int = 0


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
    refresh_members: MembersRefresh | None = None
    chain_round: ChainRound | None = None
    role_of: RoleLookup | None = None
    training_over: Callable[[int], bool] | None = None
    """Whether a round's training phase has closed (key releases wait for it)."""
    rejections: Counter[str] = field(default_factory=Counter)
    """Rejected messages by reason, ours and peers' (observability; tests read it)."""
    ignored: Counter[str] = field(default_factory=Counter)
    """Messages dropped without penalty by reason (a message retried counts each time)."""
    member_refreshes: int = 0
    replays: int = 0
    """Parked messages handed back to pubsub for another validation."""
    _consumers: dict[str, list[_Consumer]] = field(default_factory=dict)
    _decoded: OrderedDict[bytes, Message] = field(default_factory=OrderedDict)
    _pending: OrderedDict[bytes, _Parked] = field(default_factory=OrderedDict)
    _pending_bytes: int = 0
    _pending_by_signer: Counter[bytes] = field(default_factory=Counter)
    _own_approved: OrderedDict[tuple[str, bytes], None] = field(default_factory=OrderedDict)
    _members_fresh_from: float = -math.inf
    _members_last_start: float = -math.inf
    _members_refreshing: trio.Event | None = None
    _chain_round_cache: tuple[float, int] = (-math.inf, 0)

    def __post_init__(self) -> None:
        if not isinstance(self.task, bytes) or len(self.task) != ADDRESS_SIZE:
            raise ValueError(f"task must be a {ADDRESS_SIZE}-byte contract address")
        self.topics = {kind: topic_name(self.chain_id, self.task, kind) for kind in TOPIC_KINDS}
        self._kind_of_topic = {topic: kind for kind, topic in self.topics.items()}
        self._consumers = {kind: [] for kind in TOPIC_KINDS}

    # --- validation ---

    def view(self) -> GossipView:
        """Our view of the task, as the pure rules (protocol.gossip_rules) read it."""
        return GossipView(
            self.chain_id,
            self.task,
            self.current_round(),
            self.node.config.round_window,
            self._member,
            self.training_over,
        )

    def _member(self, signer: Hashable) -> Member | None:
        address = self.lookup(cast(PeerID, signer))
        if address is None:
            return None
        return Member(address, None if self.role_of is None else self.role_of(address))

    def check_static(self, data: bytes, kind: str, signer: PeerID) -> tuple[Message, bytes]:
        """Every rule but the extra validator, against our current view only; returns the
        message and the signer's address."""
        verdict = validate(Incoming(data, kind, signer), self.view())
        if isinstance(verdict, Accept):
            return verdict.message, verdict.signer_address
        if isinstance(verdict, Ignore):
            raise GossipIgnored(str(verdict), retry=verdict.retry)
        if verdict.rule == UNREGISTERED:
            raise _UnknownSigner(str(verdict))
        if verdict.rule == WRONG_ROUND and verdict.message is not None:
            raise _RoundAhead(str(verdict), verdict.message.round)
        raise GossipRejected(str(verdict))

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
        """All rules; raises GossipRejected naming the one broken, or GossipIgnored when our
        view cannot judge the message even after asking the chain (``refresh_members``,
        ``chain_round``) within ``validation_timeout_s``."""
        timeout = self.node.config.validation_timeout_s
        with trio.move_on_after(timeout):
            return await self._check_refreshing(data, kind, signer)
        raise GossipIgnored(
            f"slow validation: not judged within {timeout} s (chain reads or our event loop "
            "are slow); retrying later"
        )

    async def _check_refreshing(
        self, data: bytes, kind: str, signer: PeerID
    ) -> tuple[Message, bytes]:
        arrived = trio.current_time()
        reloaded = False
        while True:
            try:
                message, registered = self.check_static(data, kind, signer)
                break
            except _UnknownSigner:
                if self.refresh_members is None or reloaded:
                    raise  # still unknown after a reload: really not a member
                await self._members_loaded_since(arrived)
                reloaded = True
            except _RoundAhead as ahead:
                if self.chain_round is None:
                    raise
                chain_round = await self._chain_round_since(arrived)
                if ahead.round > chain_round + self.node.config.round_window:
                    raise
                raise GossipIgnored(
                    f"round ahead of our view: {ahead.round}, ours is {self.current_round()}, "
                    f"the chain's {chain_round}; kept until we catch up"
                ) from None
        if self.extra_validator is not None:
            verdict = self._call_extra_validator(message, signer)
            if inspect.isawaitable(verdict):
                try:
                    verdict = await verdict
                except GossipRejected:
                    raise
                except Exception as exc:
                    raise GossipRejected(f"extra validator: {exc}") from exc
            _require_acceptance(verdict)
        return message, registered

    async def _members_loaded_since(self, moment: float) -> None:
        """Return once a member reload that started at or after ``moment`` has finished.

        One reload at a time, at most one per ``refresh_interval_s``; messages waiting for
        one share it. A failed reload makes the message unjudgeable, not invalid.
        """
        refresh = self.refresh_members
        assert refresh is not None
        interval = self.node.config.refresh_interval_s
        while self._members_fresh_from < moment:
            running = self._members_refreshing
            if running is not None:
                await running.wait()
                continue
            wait = self._members_last_start + interval - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
                continue
            started = self._members_last_start = trio.current_time()
            done = self._members_refreshing = trio.Event()
            try:
                await refresh()
                self.member_refreshes += 1
            except Exception as exc:
                raise GossipIgnored(f"member reload failed: {exc}") from exc
            finally:
                self._members_refreshing = None
                done.set()
            self._members_fresh_from = started

    async def _chain_round_since(self, moment: float) -> int:
        """The chain's round, read at most once per ``refresh_interval_s`` (a reading older
        than ``moment`` is fine then: rounds last far longer)."""
        chain_round = self.chain_round
        assert chain_round is not None
        interval = self.node.config.refresh_interval_s
        read_at, value = self._chain_round_cache
        if read_at < moment - interval:
            try:
                value = await chain_round()
            except Exception as exc:
                raise GossipIgnored(f"reading the chain's round failed: {exc}") from exc
            self._chain_round_cache = (moment, value)
        return value

    def _call_extra_validator(self, message: Message, signer: PeerID) -> object:
        assert self.extra_validator is not None
        try:
            return self.extra_validator(message, signer)
        except GossipRejected:
            raise
        except Exception as exc:
            raise GossipRejected(f"extra validator: {exc}") from exc

    @property
    def _validates_async(self) -> bool:
        hook = self.extra_validator
        async_hook = hook is not None and (
            inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)
        )
        return async_hook or self.refresh_members is not None or self.chain_round is not None

    def _refuse(self, kind: str, forwarder: PeerID, msg: rpc_pb2.Message, exc: Exception) -> bool:
        message_id = _message_id(msg)
        if isinstance(exc, GossipIgnored):
            reason = str(exc).split(":", 1)[0]
            self.ignored[reason] += 1
            ignore_current_message(str(exc))
            logger.debug("ignored gossip on %s forwarded by %s: %s", kind, forwarder, exc)
            if exc.retry:
                self._park(message_id, forwarder, msg)
            else:
                self._unpark(message_id)
            return False
        self._unpark(message_id)
        if isinstance(exc, GossipRejected):
            self.rejections[str(exc).split(":", 1)[0]] += 1
            logger.debug("rejected gossip on %s forwarded by %s: %s", kind, forwarder, exc)
        else:  # a broken callback must not take the router down
            self.rejections["validator error"] += 1
            logger.error("gossip validation raised unexpectedly: %r", exc)
        return False

    def _timed_out_in_pubsub(self, forwarder: PeerID, msg: rpc_pb2.Message) -> None:
        self.ignored["slow validation"] += 1
        self._park(_message_id(msg), forwarder, msg)

    def _park(self, message_id: bytes, forwarder: PeerID, msg: rpc_pb2.Message) -> None:
        """Keep an ignored message for another validation: bounded in count and bytes, and
        per signer, so one member's unjudgeable messages cannot push out everybody else's."""
        config = self.node.config
        now = trio.current_time()
        parked = self._pending.get(message_id)
        if parked is None:
            size = len(msg.data)
            signer = bytes(msg.from_id)
            if (
                config.pending_limit < 1
                or size > config.pending_bytes
                or self._pending_by_signer[signer] >= config.pending_per_signer
            ):
                self.ignored["pending overflow"] += 1
                return
            while (
                len(self._pending) >= config.pending_limit
                or self._pending_bytes + size > config.pending_bytes
            ):
                self._unpark(next(iter(self._pending)))
                self.ignored["pending overflow"] += 1
            parked = self._pending[message_id] = _Parked(forwarder, msg, now + config.pending_ttl_s)
            self._pending_bytes += size
            self._pending_by_signer[signer] += 1
        parked.round_view = self._round_view()
        # backing off: a message that stays unjudgeable costs fewer and fewer chain reads
        parked.retry_at = now + config.pending_retry_s * 2 ** min(parked.attempts, 6)
        parked.attempts += 1

    def _round_view(self) -> tuple[int, bool]:
        """What a parked message waits for to change: our round, and whether its training
        phase has closed (a key release that came a moment early is taken then, not at
        the next back-off, which may be after the round has been averaged without it)."""
        current = self.current_round()
        return current, self.training_over is not None and self.training_over(current)

    def _unpark(self, message_id: bytes) -> None:
        parked = self._pending.pop(message_id, None)
        if parked is not None:
            self._pending_bytes -= len(parked.msg.data)
            signer = bytes(parked.msg.from_id)
            self._pending_by_signer[signer] -= 1
            if self._pending_by_signer[signer] <= 0:
                del self._pending_by_signer[signer]

    async def _replay(self, parked: _Parked) -> None:
        try:
            await self.node.pubsub.push_msg(parked.forwarder, parked.msg)
        except Exception as exc:  # e.g. the forwarder went away meanwhile
            logger.debug("replaying a parked message failed: %r", exc)

    async def _replay_pending(self) -> None:
        """Validate parked messages again once our round moved or its training closed, or
        ``pending_retry_s`` passed, through pubsub, so an accepted one is delivered and
        forwarded as usual."""
        pubsub = self.node.pubsub
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(min(1.0, self.node.config.pending_retry_s))
                now = trio.current_time()
                current = self._round_view()
                for message_id, parked in list(self._pending.items()):
                    if now >= parked.expires_at or message_seen(pubsub, parked.msg):
                        self._unpark(message_id)
                        if now >= parked.expires_at:
                            self.ignored["expired unjudged"] += 1
                        continue
                    if parked.round_view == current and now < parked.retry_at:
                        continue
                    parked.retry_at = math.inf  # until its validation parks it again
                    self.replays += 1
                    nursery.start_soon(self._replay, parked)

    @property
    def pending(self) -> int:
        """Messages parked for another validation."""
        return len(self._pending)

    def _kind_of(self, msg: rpc_pb2.Message) -> str | None:
        if len(msg.topicIDs) != 1:
            return None
        return self._kind_of_topic.get(msg.topicIDs[0])

    def _own_checked(self, forwarder: PeerID, msg: rpc_pb2.Message) -> bool:
        """Our own publish, checked by :meth:`publish` a moment ago: no second check (it
        could come out IGNORE under load and the message would silently not go out)."""
        if forwarder != self.node.host.get_id() or PeerID(msg.from_id) != forwarder:
            return False
        key = (msg.topicIDs[0], bytes(msg.data))
        if key not in self._own_approved:
            return False
        del self._own_approved[key]
        return True

    def _sync_topic_validator(self, forwarder: PeerID, msg: rpc_pb2.Message) -> bool:
        # Synchronous on purpose: py-libp2p checks "seen" before validating and marks it
        # after, so an awaiting validator lets two copies of a message through at once.
        kind = self._kind_of(msg)
        if kind is None:
            self.rejections["not one of the task's topics"] += 1
            return False
        if self._own_checked(forwarder, msg):
            return True
        try:
            message, _ = self.check_sync(msg.data, kind, PeerID(msg.from_id))
        except Exception as exc:
            return self._refuse(kind, forwarder, msg, exc)
        self._accepted(msg, message)
        return True

    async def _async_topic_validator(self, forwarder: PeerID, msg: rpc_pb2.Message) -> bool:
        kind = self._kind_of(msg)
        if kind is None:
            self.rejections["not one of the task's topics"] += 1
            return False
        if self._own_checked(forwarder, msg):
            return True
        try:
            message, _ = await self.check(msg.data, kind, PeerID(msg.from_id))
        except Exception as exc:
            return self._refuse(kind, forwarder, msg, exc)
        self._accepted(msg, message)
        return True

    def _accepted(self, msg: rpc_pb2.Message, message: Message) -> None:
        # Decoding costs about a millisecond (CID parsing); the pump reuses this result.
        message_id = _message_id(msg)
        self._unpark(message_id)
        self._decoded[message_id] = message
        if len(self._decoded) > _DEDUPE_WINDOW:
            self._decoded.popitem(last=False)

    # --- publishing and receiving ---

    async def publish(self, message: Message) -> None:
        """Check ``message`` as a peer would, then publish it on its topic.

        Raises GossipRejected (and publishes nothing) if a peer would reject it; publishing
        it anyway would only lower our own score. While our own view cannot judge it
        (GossipIgnored), it checks again every ``pending_retry_s`` up to ``pending_ttl_s``.
        """
        data = encode_message(message)
        kind = message.TOPIC_KIND
        config = self.node.config
        give_up_at = trio.current_time() + config.pending_ttl_s
        while True:
            try:
                await self.check(data, kind, self.node.host.get_id())
                break
            except GossipIgnored as exc:
                if exc.retry and trio.current_time() + config.pending_retry_s < give_up_at:
                    await trio.sleep(config.pending_retry_s)
                    continue
                self.ignored[f"own: {str(exc).split(':', 1)[0]}"] += 1
                raise GossipIgnored(
                    f"not publishing our own {type(message).__name__}: {exc}", retry=False
                ) from exc
            except GossipRejected as exc:
                self.rejections[f"own: {str(exc).split(':', 1)[0]}"] += 1
                raise GossipRejected(
                    f"not publishing our own {type(message).__name__}: {exc}"
                ) from exc
        self._own_approved[(self.topics[kind], data)] = None
        if len(self._own_approved) > _OWN_APPROVED_LIMIT:  # left by a publish that failed
            self._own_approved.popitem(last=False)
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
    refresh_members: MembersRefresh | None = None,
    chain_round: ChainRound | None = None,
    role_of: RoleLookup | None = None,
    training_over: Callable[[int], bool] | None = None,
) -> AsyncIterator[TaskGossip]:
    """Subscribe to the task's three topics with validators; unsubscribe on exit.

    ``refresh_members`` and ``chain_round`` let validation tell "our view lags" from
    "invalid" (see the module doc); without them a lookup miss or a round beyond the window
    is rejected.
    """
    gossip = TaskGossip(
        node,
        chain_id,
        task,
        current_round,
        lookup,
        extra_validator,
        refresh_members,
        chain_round,
        role_of,
        training_over,
    )
    pubsub = node.pubsub
    async with trio.open_nursery() as nursery:
        try:
            nursery.start_soon(gossip._replay_pending)
            for kind, topic in gossip.topics.items():
                if isinstance(pubsub, GossipPubsub):
                    pubsub.timed_out[topic] = gossip._timed_out_in_pubsub
                if gossip._validates_async:
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
                    if isinstance(pubsub, GossipPubsub):
                        pubsub.timed_out.pop(topic, None)
                    try:
                        await pubsub.unsubscribe(topic)
                    except Exception as exc:  # stopping anyway
                        logger.debug("unsubscribing %s failed: %s", topic, exc)
