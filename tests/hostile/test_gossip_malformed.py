"""Malformed bytes at the gossip entry points: the node survives, the sender pays.

Each test writes one attack on a real connection to a target node (full gossip stack on
127.0.0.1), then checks the target is alive, still delivers an honest member's gossip, and
holds the attack against the attacker.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair as create_secp256k1_key_pair
from libp2p.custom_types import TProtocol
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12
from libp2p.pubsub.pb import rpc_pb2

from node.gossip import GossipConfig, open_pubsub
from node.host import HostConfig, connect, open_host
from node.libp2p_compat import MAX_TOPIC_LENGTH
from protocol.messages import encode_message
from tests.hostile.attacks import (
    MALFORMED_RPC,
    NON_IDENTITY_FROM,
    frame,
    open_raw_stream,
    publish_rpc,
    unsigned_message,
    varint,
)
from tests.hostile.gossip_arena import Arena, announcement, open_arena, wait_until


@pytest.mark.parametrize("protocol", [PROTOCOL_ID_V11, PROTOCOL_ID_V12], ids=["1.1", "1.2"])
async def test_seven_byte_rpc_closes_the_stream_not_the_node(
    tmp_path: Path, protocol: TProtocol
) -> None:
    async with open_arena(tmp_path, GossipConfig(versions=("1.2", "1.1"))) as arena:
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id, protocol)
        await stream.write(MALFORMED_RPC)
        await wait_until(arena.attacker_penalised, "the target to penalise the attacker")
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the malformed rpc")


async def test_message_from_a_non_identity_peer_id_with_a_garbage_key(tmp_path: Path) -> None:
    async with open_arena(tmp_path) as arena:
        body = encode_message(announcement(arena.honest.address, tag=b"forged"))
        message = unsigned_message(
            arena.topic(), body, NON_IDENTITY_FROM, b"\x00" * 8, key=b"garbage", signature=b"x"
        )
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id)
        await stream.write(publish_rpc(message))
        await wait_until(arena.attacker_penalised, "the target to penalise the attacker")
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the garbage key")


def _control_rpc() -> bytes:
    control = rpc_pb2.ControlMessage(
        ihave=[rpc_pb2.ControlIHave(topicID="/fl/nope", messageIDs=[b"\xff" * 300] * 50)],
        iwant=[rpc_pb2.ControlIWant(messageIDs=[b"\x00", b"\xfe" * 1000])],
        graft=[rpc_pb2.ControlGraft(topicID="\x00" * 200)],
        prune=[
            rpc_pb2.ControlPrune(
                topicID="/fl/nope",
                peers=[rpc_pb2.PeerInfo(peerID=b"\x01\x02", signedPeerRecord=b"\xff" * 40)],
                backoff=2**63,
            )
        ],
    )
    return frame(rpc_pb2.RPC(control=control).SerializeToString())


RPC_ATTACKS: dict[str, tuple[bytes, bool]] = {
    # name: (bytes written on a raw /meshsub/1.1.0 stream, whether the sender must pay)
    "overlong length varint": (b"\xff" * 11, True),
    "oversized frame": (varint(2 * 1024 * 1024) + b"\x00" * 64, True),
    "random protobuf": (frame(random.Random(7).randbytes(96)), True),
    "bad signed peer record": (frame(rpc_pb2.RPC(senderRecord=b"\xff" * 64).SerializeToString()), True),
    "control messages full of junk": (_control_rpc(), False),
    "frame cut short": (varint(500) + b"\x0a\x02", False),
}


@pytest.mark.parametrize("attack", list(RPC_ATTACKS))
async def test_malformed_rpc_frames(tmp_path: Path, attack: str) -> None:
    data, sender_pays = RPC_ATTACKS[attack]
    async with open_arena(tmp_path) as arena:
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id)
        await stream.write(data)
        await stream.close()
        if sender_pays:
            await wait_until(arena.attacker_penalised, f"the target to charge for {attack}")
        assert arena.target_alive()
        await arena.honest_message_arrives(attack.encode())


def _message_attacks(arena: Arena) -> dict[str, rpc_pb2.Message]:
    body = encode_message(announcement(arena.honest.address, tag=b"forged"))
    honest_from = arena.honest.peer_id.to_bytes()
    secp_key = create_secp256k1_key_pair().public_key.serialize()

    def message(from_id: bytes, key: bytes = b"", signature: bytes = b"") -> rpc_pb2.Message:
        return unsigned_message(arena.topic(), body, from_id, b"\x00" * 8, key, signature)

    return {
        "no signature": message(honest_from),
        "random signature": message(honest_from, signature=b"\x01" * 64),
        "key of another peer": message(NON_IDENTITY_FROM, key=secp_key, signature=b"\x02" * 64),
        "empty from": message(b"", signature=b"\x03" * 64),
        "three-byte from": message(b"\x00\x01\x02", key=b"\x08", signature=b"\x04"),
    }


MESSAGE_ATTACKS = ["no signature", "random signature", "key of another peer", "empty from", "three-byte from"]


@pytest.mark.parametrize("attack", MESSAGE_ATTACKS)
async def test_messages_with_broken_from_key_or_signature(tmp_path: Path, attack: str) -> None:
    async with open_arena(tmp_path) as arena:
        forged = _message_attacks(arena)[attack]
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id)
        await stream.write(publish_rpc(forged))
        await wait_until(arena.attacker_penalised, f"the target to charge for {attack}")
        assert arena.target_alive()
        await arena.honest_message_arrives(attack.encode())
        assert announcement(arena.honest.address, tag=b"forged") not in arena.target.received()


async def test_hostile_control_messages_from_a_mesh_peer(tmp_path: Path) -> None:
    """A peer in the target's mesh sends a PRUNE with a 2^64-1 s backoff and junk peer
    records, 50 GRAFTs, 5,000 IHAVE ids and 5,000 IWANTs; the router's heartbeats then run
    on that state."""
    async with open_arena(tmp_path) as arena:
        attacker = await arena.stack.enter_async_context(
            open_host(HostConfig(key_path=tmp_path / "mesh-attacker.key"))
        )
        node = await arena.stack.enter_async_context(open_pubsub(attacker))
        topic = arena.topic()
        await node.pubsub.subscribe(topic)
        await connect(attacker, arena.target_addr)
        router = arena.target.node.router
        await wait_until(
            lambda: attacker.get_id() in router.mesh.get(topic, set()), "the attacker in the mesh"
        )
        control = rpc_pb2.ControlMessage(
            prune=[
                rpc_pb2.ControlPrune(
                    topicID=topic,
                    backoff=2**64 - 1,
                    peers=[rpc_pb2.PeerInfo(peerID=b"\x00\x01", signedPeerRecord=b"\x01" * 10)],
                )
            ],
            graft=[rpc_pb2.ControlGraft(topicID=topic)] * 50,
            ihave=[rpc_pb2.ControlIHave(topicID=topic, messageIDs=[b"%d" % i for i in range(5000)])],
            iwant=[rpc_pb2.ControlIWant(messageIDs=[b"\xff" * 10] * 5000)],
        )
        stream = await open_raw_stream(attacker, arena.target.peer_id)
        await stream.write(frame(rpc_pb2.RPC(control=control).SerializeToString()))
        await trio.sleep(3 * arena.target.node.config.heartbeat_interval_s)  # heartbeats run
        assert router.manager.is_running
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the control messages")


async def test_a_peer_that_prunes_and_grafts_again_at_once_is_graylisted(tmp_path: Path) -> None:
    """GRAFT-flood protection still holds: a PRUNE then a GRAFT of the same topics (what an
    honest router no longer sends within its back-off) get the sender banned."""
    async with open_arena(tmp_path) as arena:
        topics = [arena.topic("models"), arena.topic("committee")]
        prune = rpc_pb2.ControlMessage(prune=[rpc_pb2.ControlPrune(topicID=t) for t in topics])
        graft = rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=t) for t in topics])
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id)
        # two RPCs: the router handles an RPC's GRAFTs before its PRUNEs
        for control in (prune, graft):
            await stream.write(frame(rpc_pb2.RPC(control=control).SerializeToString()))
        guard = arena.target.node.guard
        await wait_until(
            lambda: arena.attacker.get_id() in guard.banned_until, "the target to ban the attacker"
        )
        assert "GRAFT flood" in guard.penalties(arena.attacker.get_id())
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the GRAFT flood")


async def test_subscriptions_to_huge_topic_names_are_refused_and_charged(tmp_path: Path) -> None:
    """Upstream stores up to 100 topic names per peer whatever their length: 100 names of
    10,000 characters would be a megabyte per identity (100 MB with 1 MiB names)."""
    async with open_arena(tmp_path) as arena:
        subscriptions = [
            rpc_pb2.RPC.SubOpts(subscribe=True, topicid=f"/fl/{i}/" + "x" * 10_000)
            for i in range(100)
        ]
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id)
        await stream.write(frame(rpc_pb2.RPC(subscriptions=subscriptions).SerializeToString()))
        await wait_until(arena.attacker_penalised, "the target to charge for the topic names")
        stored = sum(len(topic) for topic in arena.target.node.pubsub.peer_topics)
        assert stored < 100 * MAX_TOPIC_LENGTH
        assert arena.attacker.get_id() in arena.target.node.guard.banned_until
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the topic names")
