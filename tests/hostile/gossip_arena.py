"""A target node, an honest member and an attacker on 127.0.0.1, for the hostile gossip tests.

The target runs the full gossip stack (open_pubsub + open_task_gossip, strict signing, the
real validators); the honest member publishes through its own TaskGossip; the attacker is a
bare host that writes whatever bytes the attack needs. Every test asks the same three
questions afterwards: is the target alive, does honest gossip still reach it, and did the
attacker pay for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID as PeerID
from libp2p.pubsub.pb import rpc_pb2

from node.gossip import (
    GossipConfig,
    GossipNode,
    Received,
    TaskGossip,
    open_pubsub,
    open_task_gossip,
)
from node.host import HostConfig, connect, host_multiaddrs, load_or_create_identity, open_host
from protocol.cid import cid_of
from protocol.messages import TOPIC_KINDS, Message, ModelAnnouncement
from protocol.state.records import Role
from tests.hostile.attacks import message_rpc, open_raw_stream
from tests.network.conftest import HANG_GUARD_S, wait_until

__all__ = ["HANG_GUARD_S", "Arena", "Member", "announcement", "open_arena", "wait_until"]

CHAIN_ID = 31337
TASK = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
ROUND = 5


def address_of(peer_id: PeerID) -> bytes:
    return hashlib.sha256(peer_id.to_bytes()).digest()[:20]


def announcement(worker: bytes, tag: bytes = b"", round_: int = ROUND) -> ModelAnnouncement:
    return ModelAnnouncement(CHAIN_ID, TASK, round_, worker, cid_of(b"update " + worker + tag), 600)


@dataclass
class Member:
    host: IHost
    node: GossipNode
    gossip: TaskGossip
    inbox: dict[str, list[Received]] = field(default_factory=lambda: {k: [] for k in TOPIC_KINDS})

    @property
    def peer_id(self) -> PeerID:
        return self.host.get_id()

    @property
    def address(self) -> bytes:
        return address_of(self.peer_id)

    def received(self, kind: str = "models") -> list[Message]:
        return [r.message for r in self.inbox[kind]]


@dataclass
class Arena:
    stack: AsyncExitStack
    key_dir: Path
    registry: dict[PeerID, bytes]
    roles: dict[bytes, Role]
    """Task roles by address: the target and the honest member are workers."""
    target: Member
    honest: Member
    attacker: IHost
    count: int = 0

    @property
    def target_addr(self) -> str:
        return host_multiaddrs(self.target.host)[0]

    def topic(self, kind: str = "models") -> str:
        return self.target.gossip.topics[kind]

    async def honest_message_arrives(self, tag: bytes) -> None:
        """The honest member publishes a fresh announcement; the target must deliver it."""
        message = announcement(self.honest.address, tag=tag)
        await self.honest.gossip.publish(message)
        await wait_until(
            lambda: message in self.target.received(), f"honest message {tag!r} at the target"
        )

    def target_alive(self) -> bool:
        pubsub = self.target.node.pubsub
        return bool(pubsub.manager.is_running) and bool(self.target.host.get_transport_addrs())

    def attacker_penalised(self) -> bool:
        guard = self.target.node.guard
        attacker = self.attacker.get_id()
        return attacker in guard.banned_until or guard.score(attacker) < 0

    def register_attacker(self, role: Role) -> bytes:
        """Make the attacker a member of the task in ``role``; returns its address."""
        attacker = self.attacker.get_id()
        address = self.registry[attacker] = address_of(attacker)
        self.roles[address] = role
        return address

    def key_of(self, name: str) -> KeyPair:
        """The identity of ``target``, ``honest`` or ``attacker1``..."""
        return load_or_create_identity(self.key_dir / f"{name}.key")

    async def inject(self, messages: list[rpc_pb2.Message], attacker: IHost | None = None) -> None:
        """Write ``messages`` as one RPC on a raw pubsub stream from the attacker."""
        stream = await open_raw_stream(attacker or self.attacker, self.target.peer_id)
        await stream.write(message_rpc(messages))
        await stream.close()

    async def new_attacker(self) -> IHost:
        self.count += 1
        host = await self.stack.enter_async_context(
            open_host(HostConfig(key_path=self.key_dir / f"attacker{self.count}.key"))
        )
        await connect(host, self.target_addr)
        return host


async def _member(
    stack: AsyncExitStack,
    key_path: Path,
    registry: dict[PeerID, bytes],
    roles: dict[bytes, Role],
    config: GossipConfig,
) -> Member:
    host = await stack.enter_async_context(open_host(HostConfig(key_path=key_path)))
    node = await stack.enter_async_context(open_pubsub(host, config))
    registry[host.get_id()] = address_of(host.get_id())
    roles[address_of(host.get_id())] = Role.WORKER
    gossip = await stack.enter_async_context(
        open_task_gossip(node, CHAIN_ID, TASK, lambda: ROUND, registry.get, role_of=roles.get)
    )
    member = Member(host, node, gossip)
    await stack.enter_async_context(_collecting(member))
    return member


@asynccontextmanager
async def _collecting(member: Member) -> AsyncIterator[None]:
    async def collect(channel: trio.MemoryReceiveChannel[Received], into: list[Received]) -> None:
        async for received in channel:
            into.append(received)

    async with AsyncExitStack() as stack:
        channels = {
            kind: await stack.enter_async_context(member.gossip.messages(kind))
            for kind in TOPIC_KINDS
        }
        async with trio.open_nursery() as nursery:
            for kind, channel in channels.items():
                nursery.start_soon(collect, channel, member.inbox[kind])
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_arena(key_dir: Path, config: GossipConfig | None = None) -> AsyncIterator[Arena]:
    """Target and honest member in one mesh, the attacker connected to the target."""
    config = config or GossipConfig()
    async with AsyncExitStack() as stack:
        registry: dict[PeerID, bytes] = {}
        roles: dict[bytes, Role] = {}
        target = await _member(stack, key_dir / "target.key", registry, roles, config)
        honest = await _member(stack, key_dir / "honest.key", registry, roles, config)
        await connect(honest.host, host_multiaddrs(target.host)[0])
        topic = target.gossip.topics["models"]
        await wait_until(
            lambda: honest.peer_id in target.node.router.mesh.get(topic, set())
            and target.peer_id in honest.node.router.mesh.get(topic, set()),
            "the honest member and the target in each other's mesh",
        )
        arena = Arena(stack, key_dir, registry, roles, target, honest, attacker=None)  # type: ignore[arg-type]
        arena.attacker = await arena.new_attacker()
        yield arena
