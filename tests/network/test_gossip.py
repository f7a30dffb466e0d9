"""node.gossip: validated task gossip over real hosts (1 bootstrap + 6 peers on 127.0.0.1)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import trio
from libp2p.peer.id import ID as PeerID
from libp2p.pubsub.pb import rpc_pb2

from node.discovery import DiscoveryConfig, task_namespace
from node.gossip import (
    ExtraValidator,
    GossipConfig,
    GossipIgnored,
    GossipRejected,
    Received,
    TaskGossip,
    open_pubsub,
    open_task_gossip,
)
from node.host import HostConfig, open_host
from protocol.cid import cid_of
from protocol.messages import (
    MAX_MESSAGE_SIZE,
    TOPIC_KINDS,
    CommitteeProof,
    EvaluationScores,
    KeyRelease,
    Message,
    ModelAnnouncement,
    encode_message,
)
from tests.network.conftest import Network, Peer, open_network, wait_until

CHAIN_ID = 31337
TASK = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
OTHER_TASK = b"\x01" * 20
ROUND = 5


def address_of(peer_id: PeerID) -> bytes:
    return hashlib.sha256(peer_id.to_bytes()).digest()[:20]


def announcement(
    worker: bytes, round_: int = ROUND, tag: bytes = b"", **changes: object
) -> ModelAnnouncement:
    fields: dict[str, object] = {
        "chain_id": CHAIN_ID,
        "task": TASK,
        "round": round_,
        "worker": worker,
        "cid": cid_of(b"update of " + worker + tag),
        "n_samples": 600,
    }
    fields.update(changes)
    return ModelAnnouncement(**fields)  # type: ignore[arg-type]


def proof_for(validator: bytes) -> bytes:
    """What the test's stand-in for the VRF check accepts."""
    return hashlib.sha256(b"vrf" + validator).digest()


def committee_proof(validator: bytes, proof: bytes | None = None) -> CommitteeProof:
    return CommitteeProof(CHAIN_ID, TASK, ROUND, validator, proof or proof_for(validator))


def scores(validator: bytes, workers: list[bytes]) -> EvaluationScores:
    return EvaluationScores(
        CHAIN_ID,
        TASK,
        ROUND,
        validator,
        tuple(workers),
        tuple(10_000 * (i + 1) for i in range(len(workers))),
        tuple(True for _ in workers),
        910_000,
        b"\x07" * 32,
    )


def vrf_stand_in(message: Message, signer: PeerID) -> bool:
    if isinstance(message, CommitteeProof):
        return message.vrf_proof == proof_for(message.validator)
    return True


async def async_vrf_stand_in(message: Message, signer: PeerID) -> bool:
    """The same rule as a coroutine (the node's real hook reads the chain); it makes
    TaskGossip register async topic validators."""
    await trio.sleep(0)
    return vrf_stand_in(message, signer)


@dataclass
class LaggingView:
    """A member's view of the chain that lags the chain (the swarm's registry): it knows the
    members in ``known`` only, and thinks the task is in ``round``."""

    chain: dict[PeerID, bytes]
    known: dict[PeerID, bytes] = field(default_factory=dict)
    round: int = ROUND
    reloads: int = 0
    chain_slow: bool = False
    """While set, the extra validator's chain reads take longer than the validation timeout."""
    training_closed: bool = True
    """Whether the view has seen ``round``'s training phase close (key releases wait for it)."""

    def training_over(self, round_: int) -> bool:
        return round_ < self.round or self.training_closed

    async def reload_members(self) -> None:
        await trio.sleep(0.01)  # a chain read
        self.known.update(self.chain)
        self.reloads += 1

    async def chain_round(self) -> int:
        await trio.sleep(0.01)
        return ROUND

    async def hook(self, message: Message, signer: PeerID) -> bool:
        while self.chain_slow:
            await trio.sleep(0.05)
        return vrf_stand_in(message, signer)


@dataclass
class Member:
    peer: Peer
    gossip: TaskGossip
    inbox: dict[str, list[Received]] = field(default_factory=lambda: {k: [] for k in TOPIC_KINDS})

    @property
    def peer_id(self) -> PeerID:
        return self.peer.host.get_id()

    @property
    def address(self) -> bytes:
        return address_of(self.peer_id)

    def received(self, kind: str = "models") -> list[Message]:
        return [r.message for r in self.inbox[kind]]

    async def publish_raw(self, kind: str, data: bytes) -> None:
        """Publish bytes on a task topic through pubsub, around TaskGossip's checks."""
        assert self.peer.gossip is not None
        await self.peer.gossip.pubsub.publish(self.gossip.topics[kind], data)


@dataclass
class Swarm:
    network: Network
    stack: AsyncExitStack
    bootstrap_addr: str
    registry: dict[PeerID, bytes]
    members: list[Member] = field(default_factory=list)
    hook: ExtraValidator = vrf_stand_in

    async def join(
        self,
        registered: bool = True,
        config: GossipConfig | None = None,
        target_peers: int = 8,
        validating: bool = True,
        view: LaggingView | None = None,
    ) -> Member:
        """A member of the task; ``validating=False`` makes a rogue that subscribes without
        validators, so it can send what an honest node would refuse to publish; ``view``
        gives it a lagging view of the chain that it can refresh."""
        discovery = DiscoveryConfig(
            bootstrap_addrs=(self.bootstrap_addr,), target_peers=target_peers
        )
        peer = await self.network.peer(
            self.bootstrap_addr,
            (task_namespace(CHAIN_ID, TASK),),
            gossip=config,
            discovery=discovery,
        )
        if registered:
            self.registry[peer.host.get_id()] = address_of(peer.host.get_id())
        assert peer.gossip is not None
        if view is not None:
            gossip = await self.stack.enter_async_context(
                open_task_gossip(
                    peer.gossip,
                    CHAIN_ID,
                    TASK,
                    lambda: view.round,
                    view.known.get,
                    view.hook,
                    refresh_members=view.reload_members,
                    chain_round=view.chain_round,
                    training_over=view.training_over,
                )
            )
        elif validating:
            gossip = await self.stack.enter_async_context(
                open_task_gossip(
                    peer.gossip,
                    CHAIN_ID,
                    TASK,
                    lambda: ROUND,
                    self.registry.get,
                    self.hook,
                    training_over=lambda round_: True,
                )
            )
        else:
            gossip = TaskGossip(peer.gossip, CHAIN_ID, TASK, lambda: ROUND, self.registry.get)
            for topic in gossip.topics.values():
                await peer.gossip.pubsub.subscribe(topic)
        member = Member(peer, gossip)
        if validating:
            await self.stack.enter_async_context(collecting(gossip, member.inbox))
        self.members.append(member)
        return member

    async def wait_for_mesh(self) -> None:
        def ready() -> bool:
            for member in self.members:
                node = member.peer.gossip
                assert node is not None
                others = {m.peer_id for m in self.members} - {member.peer_id}
                for topic in member.gossip.topics.values():
                    if not others <= node.pubsub.peer_topics.get(topic, set()):
                        return False
                    if len(node.router.mesh.get(topic, ())) < min(len(others), 4):
                        return False
            return True

        await wait_until(ready, "every member to see the others subscribed and a full mesh")


@asynccontextmanager
async def collecting(gossip: TaskGossip, inbox: dict[str, list[Received]]) -> AsyncIterator[None]:
    """Append every received message to ``inbox`` while the block runs.

    The nursery is cancelled only in ``finally`` right before it exits: cancelling it earlier
    (say, from an exit-stack callback) would let the next checkpoint raise Cancelled in place
    of a failing assertion, and the nursery would then swallow the failure.
    """

    async def collect(channel: trio.MemoryReceiveChannel[Received], into: list[Received]) -> None:
        async for received in channel:
            into.append(received)

    async with AsyncExitStack() as stack:
        channels = {k: await stack.enter_async_context(gossip.messages(k)) for k in TOPIC_KINDS}
        async with trio.open_nursery() as nursery:
            for kind, channel in channels.items():
                nursery.start_soon(collect, channel, inbox[kind])
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_swarm(tmp_path: Path) -> AsyncIterator[Swarm]:
    async with open_network(tmp_path) as network:
        _, bootstrap_addr = await network.bootstrap()
        # One exit stack for hosts, gossip and collectors: trio needs them unwound in
        # exactly the reverse order they were entered.
        yield Swarm(network, network.stack, bootstrap_addr, {})


@pytest.mark.parametrize("hook", [vrf_stand_in, async_vrf_stand_in], ids=["sync", "async"])
async def test_every_peer_receives_every_valid_message(
    tmp_path: Path, hook: ExtraValidator
) -> None:
    async with open_swarm(tmp_path) as swarm:
        swarm.hook = hook
        members = [await swarm.join() for _ in range(6)]
        await swarm.wait_for_mesh()

        for member in members:
            await member.gossip.publish(announcement(member.address))
        await members[0].gossip.publish(committee_proof(members[0].address))
        await members[0].gossip.publish(
            scores(members[0].address, [m.address for m in members[1:]])
        )

        workers = {m.address for m in members}
        for member in members:
            await wait_until(
                lambda m=member: {a.worker for a in m.received("models")} == workers,  # type: ignore[union-attr, misc]
                "all six announcements at every peer",
            )
            await wait_until(
                lambda m=member: m.received("committee") and m.received("scores"),  # type: ignore[misc]
                "the committee proof and the scores at every peer",
            )
            assert len(member.received("models")) == 6  # each exactly once
            (received,) = member.inbox["committee"]
            assert received.signer == members[0].peer_id
            assert received.signer_address == members[0].address
            assert not member.gossip.rejections


async def test_invalid_and_unregistered_messages_reach_nobody(tmp_path: Path) -> None:
    async with open_swarm(tmp_path) as swarm:
        honest = [await swarm.join() for _ in range(5)]
        rogue = await swarm.join(validating=False)  # registered, sends anything
        stranger = await swarm.join(registered=False, validating=False)
        await swarm.wait_for_mesh()
        bad_messages = {
            "malformed": ("models", b"\x93not a message"),
            "oversized": ("models", b"\x00" * (MAX_MESSAGE_SIZE + 1)),
            "wrong chain": ("models", encode_message(announcement(rogue.address, chain_id=1))),
            "wrong task": ("models", encode_message(announcement(rogue.address, task=OTHER_TASK))),
            "wrong round": (
                "models",
                encode_message(announcement(rogue.address, round_=ROUND + 2)),
            ),
            "wrong topic": ("models", encode_message(committee_proof(rogue.address))),
            "address mismatch": ("models", encode_message(announcement(honest[0].address))),
            "extra validator refused the message": (
                "committee",
                encode_message(committee_proof(rogue.address, proof=b"forged")),
            ),
        }
        for kind, data in bad_messages.values():
            await rogue.publish_raw(kind, data)
        await stranger.publish_raw("models", encode_message(announcement(stranger.address)))
        # A valid message from the same sender, published last, marks the end.
        marker = announcement(rogue.address, tag=b"marker")
        await rogue.publish_raw("models", encode_message(marker))

        for member in honest:
            await wait_until(lambda m=member: marker in m.received(), "the marker everywhere")  # type: ignore[misc]
        await trio.sleep(0.5)  # grace for stragglers before the negative check
        for member in honest:
            assert member.received("models") == [marker]
            assert member.received("committee") == []
        rejected = sum(
            (m.gossip.rejections for m in honest), start=type(honest[0].gossip.rejections)()
        )
        for reason in [*bad_messages, "unregistered signer"]:
            assert rejected[reason] >= 1, f"no honest peer rejected a '{reason}' message"


async def test_own_invalid_messages_are_refused_before_publishing(tmp_path: Path) -> None:
    async with open_swarm(tmp_path) as swarm:
        sender, receiver = await swarm.join(), await swarm.join()
        outsider = await swarm.join(registered=False)
        await swarm.wait_for_mesh()

        with pytest.raises(GossipRejected, match="wrong round"):
            await sender.gossip.publish(announcement(sender.address, round_=ROUND + 3))
        with pytest.raises(GossipRejected, match="address mismatch"):
            await sender.gossip.publish(announcement(receiver.address))
        with pytest.raises(GossipRejected, match="unregistered signer"):
            await outsider.gossip.publish(announcement(outsider.address))
        marker = announcement(sender.address, tag=b"marker")
        await sender.gossip.publish(marker)
        await wait_until(lambda: marker in receiver.received(), "the valid message")
        assert receiver.received() == [marker]
        assert not receiver.gossip.rejections  # nothing invalid went out
        node = sender.peer.gossip
        assert node is not None
        assert node.guard.score(sender.peer_id) == 0  # no self-penalty


async def test_a_peer_flooding_invalid_messages_is_graylisted(tmp_path: Path) -> None:
    async with open_swarm(tmp_path) as swarm:
        honest = [await swarm.join() for _ in range(3)]
        flooder = await swarm.join(validating=False)
        await swarm.wait_for_mesh()
        for index in range(40):
            await flooder.publish_raw("models", b"junk %d" % index)

        def banned_everywhere() -> bool:
            return all(
                m.peer.gossip is not None and flooder.peer_id in m.peer.gossip.guard.banned_until
                for m in honest
            )

        await wait_until(banned_everywhere, "every honest peer to graylist the flooder")
        for member in honest:
            node = member.peer.gossip
            assert node is not None
            assert node.pubsub.is_peer_blacklisted(flooder.peer_id)
            assert all(flooder.peer_id not in mesh for mesh in node.router.mesh.values())

        # Its valid messages reach nobody any more; honest traffic still flows.
        late = announcement(flooder.address, tag=b"after the ban")
        await flooder.publish_raw("models", encode_message(late))
        marker = announcement(honest[0].address, tag=b"marker")
        await honest[0].gossip.publish(marker)
        for member in honest[1:]:
            await wait_until(lambda m=member: marker in m.received(), "honest traffic")  # type: ignore[misc]
        await trio.sleep(0.5)  # grace for stragglers before the negative check
        for member in honest:
            assert member.received() == [marker]


async def test_a_peer_flooding_valid_messages_over_the_rate_limit_is_graylisted(
    tmp_path: Path,
) -> None:
    strict = GossipConfig(max_messages_per_topic_per_second=5)
    unlimited = GossipConfig(max_messages_per_topic_per_second=1e9)
    async with open_swarm(tmp_path) as swarm:
        # Two members only: the flooder reaches the receiver directly, not through a relay
        # that the rate limit would blame instead.
        receiver = await swarm.join(config=strict)
        flooder = await swarm.join(config=unlimited, validating=False)
        await swarm.wait_for_mesh()
        for index in range(30):
            message = announcement(flooder.address, tag=b"%d" % index)
            await flooder.publish_raw("models", encode_message(message))
        node = receiver.peer.gossip
        assert node is not None
        await wait_until(
            lambda: flooder.peer_id in node.guard.banned_until,
            "the receiver to graylist the flooder",
        )
        assert len(receiver.received()) < 30  # the gate dropped the rest


async def test_validation_rules_one_by_one(tmp_path: Path) -> None:
    """TaskGossip.check on its own: each rule, and the round window either side."""
    rounds = iter(range(10**6))
    current = {"round": ROUND}
    async with open_host(HostConfig(key_path=tmp_path / "node.key")) as host:
        async with open_pubsub(host) as node:
            me = host.get_id()
            registry = {me: address_of(me)}
            async with open_task_gossip(
                node, CHAIN_ID, TASK, lambda: current["round"], registry.get, vrf_stand_in
            ) as gossip:
                mine = address_of(me)
                for round_ in (ROUND - 1, ROUND, ROUND + 1):
                    message, address = await gossip.check(
                        encode_message(announcement(mine, round_=round_)), "models", me
                    )
                    assert message.round == round_ and address == mine
                for round_ in (ROUND - 2, ROUND + 2, 0):
                    with pytest.raises(GossipRejected, match="wrong round") as refused:
                        await gossip.check(
                            encode_message(announcement(mine, round_=round_)), "models", me
                        )
                    # behind the window: no penalty (honest forwarders a round behind relay
                    # it), nothing to retry; ahead of it with no chain to ask: rejected
                    stale = round_ < ROUND
                    assert isinstance(refused.value, GossipIgnored) == stale
                    assert not stale or not cast(GossipIgnored, refused.value).retry
                current["round"] = 0
                await gossip.check(encode_message(announcement(mine, round_=0)), "models", me)
                current["round"] = ROUND

                stranger = PeerID(b"\x00\x24" + b"\x08\x01\x12\x20" + bytes(32))
                with pytest.raises(GossipRejected, match="unregistered signer"):
                    await gossip.check(encode_message(announcement(mine)), "models", stranger)
                with pytest.raises(GossipRejected, match="wrong topic"):
                    await gossip.check(encode_message(announcement(mine)), "scores", me)
                with pytest.raises(GossipRejected, match="unknown topic kind"):
                    await gossip.check(encode_message(announcement(mine)), "weights", me)
                with pytest.raises(GossipRejected, match="malformed: .*trailing"):
                    await gossip.check(encode_message(announcement(mine)) + b"\x00", "models", me)

                async def slow_refusal(message: Message, signer: PeerID) -> bool:
                    await trio.sleep(0)
                    return next(rounds) < 0

                gossip.extra_validator = slow_refusal
                with pytest.raises(GossipRejected, match="extra validator refused"):
                    await gossip.check(encode_message(announcement(mine)), "models", me)

                def broken(message: Message, signer: PeerID) -> bool:
                    raise RuntimeError("VRF key unknown")

                gossip.extra_validator = broken
                with pytest.raises(GossipRejected, match="VRF key unknown"):
                    await gossip.check(encode_message(announcement(mine)), "models", me)


def penalties(members: list[Member], honest: list[Member]) -> dict[str, object]:
    """What ``members`` hold against the ``honest`` peers: bans and negative scores."""
    honest_ids = {m.peer_id for m in honest}
    found: dict[str, object] = {}
    for index, member in enumerate(members):
        node = member.peer.gossip
        assert node is not None
        banned = honest_ids & set(node.guard.banned_until)
        negative = {str(p): node.guard.score(p) for p in honest_ids if node.guard.score(p) < 0}
        if banned or negative:
            found[f"member {index}"] = {"banned": banned, "negative scores": negative}
    return found


async def publish_announcements(senders: list[Member], count: int) -> set[str]:
    """``count`` distinct announcements from each sender; returns their CIDs."""
    cids = set()
    for index in range(count):
        for sender in senders:
            message = announcement(sender.address, tag=b"%d" % index)
            await sender.gossip.publish(message)
            cids.add(message.cid)
    return cids


def received_cids(member: Member, senders: list[Member] | None = None) -> set[str]:
    """CIDs of the announcements ``member`` received (from ``senders`` only, if given)."""
    workers = None if senders is None else {s.address for s in senders}
    return {
        m.cid
        for m in member.received("models")
        if isinstance(m, ModelAnnouncement) and (workers is None or m.worker in workers)
    }


# Each test below sends more messages than the ~10 invalid ones that graylist a forwarder:
# before IGNORE existed, each of them got the lagging member to ban its honest neighbours.
LAG_MESSAGES_PER_SENDER = 8
FAST_RETRY = GossipConfig(pending_retry_s=0.3, validation_timeout_s=0.5)


async def test_a_member_that_has_not_loaded_the_senders_yet_reloads_instead_of_rejecting(
    tmp_path: Path,
) -> None:
    """The requester that missed announcements: it had not yet seen the workers join."""
    async with open_swarm(tmp_path) as swarm:
        view = LaggingView(swarm.registry)  # knows nobody yet
        lagging = await swarm.join(view=view)
        senders = [await swarm.join() for _ in range(3)]
        stranger = await swarm.join(registered=False, validating=False)
        await swarm.wait_for_mesh()

        sent = await publish_announcements(senders, LAG_MESSAGES_PER_SENDER)
        await stranger.publish_raw("models", encode_message(announcement(stranger.address)))
        marker = announcement(senders[0].address, tag=b"marker")
        await senders[0].gossip.publish(marker)

        everyone = [lagging, *senders]
        for member in everyone:
            await wait_until(
                lambda m=member: received_cids(m) == sent | {marker.cid},  # type: ignore[misc]
                "every announcement at every member, the lagging one included",
            )
        await wait_until(
            lambda: lagging.gossip.rejections["unregistered signer"] >= 1,
            "the lagging member to reject the stranger after reloading",
        )
        assert stranger.address not in {a.worker for a in lagging.received("models")}
        assert 1 <= view.reloads < LAG_MESSAGES_PER_SENDER  # shared, not one per message
        assert lagging.gossip.rejections == {"unregistered signer": 1}
        assert penalties(everyone, everyone) == {}


async def test_a_member_whose_round_lags_keeps_messages_until_it_catches_up(
    tmp_path: Path,
) -> None:
    async with open_swarm(tmp_path) as swarm:
        view = LaggingView(swarm.registry, round=ROUND - 2)  # two rounds behind the chain
        lagging = await swarm.join(config=FAST_RETRY, view=view)
        senders = [await swarm.join() for _ in range(3)]
        rogue = await swarm.join(validating=False)
        view.known.update(swarm.registry)
        await swarm.wait_for_mesh()

        sent = await publish_announcements(senders, LAG_MESSAGES_PER_SENDER)
        # beyond even the chain's round: invalid, whatever our lag
        await rogue.publish_raw("models", encode_message(announcement(rogue.address, round_=ROUND + 2)))
        await wait_until(
            lambda: lagging.gossip.pending >= len(sent), "the lagging member to park them"
        )
        assert lagging.received("models") == []
        # Past gossipsub's gossip window (3 heartbeats) no peer offers these messages again,
        # so only our parked copies can deliver them; sooner, an IHAVE/IWANT round trip can
        # deliver them first, and the replay then finds them already seen.
        await trio.sleep(4 * GossipConfig().heartbeat_interval_s + 1)
        assert lagging.received("models") == []
        replays_while_lagging = lagging.gossip.replays
        view.round = ROUND - 1  # our chain follower caught up

        await wait_until(
            lambda: received_cids(lagging, senders) == sent, "the parked messages delivered"
        )
        assert lagging.gossip.replays > replays_while_lagging
        await wait_until(
            lambda: lagging.gossip.rejections["wrong round"] >= 1, "the far-future one rejected"
        )
        assert lagging.gossip.rejections == {"wrong round": 1}
        honest = [m for m in swarm.members if m is not rogue]
        assert penalties(honest, honest) == {}


async def lagging_member_and_senders(
    swarm: Swarm, view: LaggingView, config: GossipConfig, senders: int
) -> tuple[Member, list[Member]]:
    """A member with `view` and `senders` members up to date, in one mesh."""
    lagging = await swarm.join(config=config, view=view)
    others = [await swarm.join() for _ in range(senders)]
    view.known.update(swarm.registry)
    await swarm.wait_for_mesh()
    return lagging, others


async def test_a_key_release_parked_before_training_closed_is_taken_once_it_closes(
    tmp_path: Path,
) -> None:
    """Every update is in, so training closes early: a worker's key release can reach a
    member whose chain follower has not seen that yet. It is parked and taken as soon as
    the follower sees the phase closed, not at the parked message's next back-off (by then
    the round may have been averaged without it)."""
    slow_back_off = GossipConfig(pending_retry_s=120.0, validation_timeout_s=0.5)
    async with open_swarm(tmp_path) as swarm:
        view = LaggingView(swarm.registry, training_closed=False)
        lagging, senders = await lagging_member_and_senders(swarm, view, slow_back_off, 2)

        for sender in senders:
            update = cid_of(b"update of " + sender.address)
            await sender.gossip.publish(
                KeyRelease(CHAIN_ID, TASK, ROUND, sender.address, update, b"\x42" * 300)
            )
        await wait_until(lambda: lagging.gossip.pending >= len(senders), "the releases parked")
        # past gossipsub's gossip window no peer offers them again: only a replay delivers
        await trio.sleep(4 * GossipConfig().heartbeat_interval_s + 1)
        assert lagging.received("models") == []
        view.training_closed = True

        def released() -> set[bytes]:
            return {m.worker for m in lagging.received("models") if isinstance(m, KeyRelease)}

        await wait_until(
            lambda: released() == {s.address for s in senders},
            "the parked releases taken",
            timeout=30,
        )
        assert not lagging.gossip.rejections


async def test_validation_slower_than_its_timeout_is_retried_not_rejected(
    tmp_path: Path,
) -> None:
    """A busy loop or a slow chain endpoint is our lag, not the sender's fault."""
    async with open_swarm(tmp_path) as swarm:
        view = LaggingView(swarm.registry, chain_slow=True)
        lagging, senders = await lagging_member_and_senders(swarm, view, FAST_RETRY, 3)

        sent = await publish_announcements(senders, LAG_MESSAGES_PER_SENDER)
        await wait_until(
            lambda: lagging.gossip.ignored["slow validation"] >= len(sent),
            "the lagging member to time out on each message",
        )
        view.chain_slow = False
        await wait_until(lambda: received_cids(lagging) == sent, "the parked messages delivered")
        assert not lagging.gossip.rejections
        assert penalties(swarm.members, swarm.members) == {}


async def test_member_reloads_are_shared_and_a_real_stranger_stays_rejected(
    tmp_path: Path,
) -> None:
    """TaskGossip.check with a lagging lookup: one reload serves the messages waiting for it,
    a signer still unknown after it is rejected, a failed reload only ignores."""
    async with open_host(HostConfig(key_path=tmp_path / "node.key")) as host:
        async with open_pubsub(host, GossipConfig(refresh_interval_s=0.2)) as node:
            me = host.get_id()
            chain = {me: address_of(me)}
            view = LaggingView(chain)
            async with open_task_gossip(
                node,
                CHAIN_ID,
                TASK,
                lambda: view.round,
                view.known.get,
                refresh_members=view.reload_members,
                chain_round=view.chain_round,
            ) as gossip:
                mine = address_of(me)
                accepted: list[Message] = []

                async def check_one(tag: bytes) -> None:
                    message, _ = await gossip.check(
                        encode_message(announcement(mine, tag=tag)), "models", me
                    )
                    accepted.append(message)

                async with trio.open_nursery() as nursery:
                    for index in range(10):
                        nursery.start_soon(check_one, b"%d" % index)
                # one reload, plus one for those that arrived after it had started
                assert len(accepted) == 10 and 1 <= view.reloads <= 2
                reloads = view.reloads

                stranger = PeerID(b"\x00\x24" + b"\x08\x01\x12\x20" + bytes(32))
                with pytest.raises(GossipRejected, match="unregistered signer") as refused:
                    await gossip.check(encode_message(announcement(mine)), "models", stranger)
                assert not isinstance(refused.value, GossipIgnored)
                assert view.reloads == reloads + 1  # it did look before rejecting

                async def broken_reload() -> None:
                    raise OSError("connection refused")

                gossip.refresh_members = broken_reload
                with pytest.raises(GossipIgnored, match="member reload failed"):
                    await gossip.check(encode_message(announcement(mine)), "models", stranger)

                # a round ahead of ours that the chain has reached: ignored to retry; one
                # beyond the chain's round: rejected
                view.round = ROUND - 2
                with pytest.raises(GossipIgnored, match="round ahead of our view") as ahead:
                    await gossip.check(encode_message(announcement(mine)), "models", me)
                assert ahead.value.retry
                with pytest.raises(GossipRejected, match="wrong round") as beyond:
                    await gossip.check(
                        encode_message(announcement(mine, round_=ROUND + 2)), "models", me
                    )
                assert not isinstance(beyond.value, GossipIgnored)


async def test_parked_messages_are_bounded_per_signer_and_in_total(tmp_path: Path) -> None:
    config = GossipConfig(pending_limit=6, pending_per_signer=4)
    async with open_host(HostConfig(key_path=tmp_path / "node.key")) as host:
        async with open_pubsub(host, config) as node:
            async with open_task_gossip(
                node, CHAIN_ID, TASK, lambda: ROUND, {}.get
            ) as gossip:
                forwarder = host.get_id()

                def park(signer: bytes, index: int) -> None:
                    msg = rpc_pb2.Message(from_id=signer, seqno=b"%08d" % index, data=b"x")
                    gossip._park(msg.from_id + msg.seqno, forwarder, msg)

                for index in range(6):
                    park(b"signer a", index)
                assert gossip.pending == 4  # a's share
                assert gossip.ignored["pending overflow"] == 2
                for index in range(3):
                    park(b"signer b", index)
                assert gossip.pending == 6  # the total: a's oldest made room
                assert gossip.ignored["pending overflow"] == 3
                assert dict(gossip._pending_by_signer) == {b"signer a": 3, b"signer b": 3}
