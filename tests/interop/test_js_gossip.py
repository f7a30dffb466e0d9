"""Gossip interop: a js-libp2p 3 peer running @libp2p/gossipsub (strict signing) joins an
fl-node host's task gossip on 127.0.0.1, receives and checks what fl-node publishes, and
what it publishes reaches fl-node's validators (which reject it: it is not a task member)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID as PeerID

from node.gossip import open_pubsub, open_task_gossip
from node.host import HostConfig, host_multiaddrs, open_host
from protocol.cid import cid_of
from protocol.messages import ModelAnnouncement, decode_message, encode_message
from tests.network.conftest import wait_until

from .helia import REPO, helia_missing, helia_peer

SCRIPT = REPO / "tests" / "interop" / "js" / "gossip_peer.mjs"
PACKAGES = ("libp2p", "@libp2p/gossipsub", "@libp2p/tcp", "@libp2p/noise", "@libp2p/yamux",
            "@libp2p/identify", "@multiformats/multiaddr")
CHAIN_ID = 31337
TASK = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
ROUND = 3
RECEIVE_TIMEOUT_MS = 30_000


_MISSING = helia_missing(PACKAGES, "js-libp2p gossip")
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


def address_of(peer_id: PeerID) -> bytes:
    return hashlib.sha256(peer_id.to_bytes()).digest()[:20]


def announcement(worker: bytes, n: int) -> ModelAnnouncement:
    return ModelAnnouncement(
        chain_id=CHAIN_ID, task=TASK, round=ROUND, worker=worker,
        cid=cid_of(b"update %d of " % n + worker), n_samples=600 + n,
    )


async def test_js_gossipsub_peer_receives_and_sends_task_gossip(tmp_path: Path) -> None:
    async with open_host(HostConfig(key_path=tmp_path / "node.key")) as host, \
            open_pubsub(host) as node:
        ours = host.get_id()
        registry = {ours: address_of(ours)}
        async with open_task_gossip(node, CHAIN_ID, TASK, lambda: ROUND, registry.get) as gossip, \
                helia_peer(SCRIPT) as js:
            topic = gossip.topics["models"]
            js_id = PeerID.from_base58(js.peer_id)
            await js.call("subscribe", topic=topic)
            await js.call("dial", addr=host_multiaddrs(host)[0])

            def meshed() -> bool:
                return js_id in node.router.mesh.get(topic, set())

            await wait_until(meshed, "our gossipsub router to graft the js peer into the mesh")

            sent = [announcement(registry[ours], n) for n in range(3)]
            for message in sent:
                await gossip.publish(message)
            reply = await js.call("received", topic=topic, count=len(sent),
                                  timeout_ms=RECEIVE_TIMEOUT_MS)
            got = reply["messages"]
            # js-libp2p verified each signature (StrictSign) before handing it over
            assert [m["from"] for m in got] == [ours.to_base58()] * len(sent)
            assert [bytes.fromhex(m["data"]) for m in got] == [encode_message(m) for m in sent]
            assert [decode_message(bytes.fromhex(m["data"])) for m in got] == sent
            assert len({m["seqno"] for m in got}) == len(sent)

            # The other way: a signed message from a peer the task does not know reaches
            # our validators, which reject it and deliver nothing.
            rejected_before = gossip.rejections["unregistered signer"]
            stranger = announcement(address_of(js_id), 99)
            async with gossip.messages("models") as inbox:
                published = await js.call("publish", topic=topic,
                                          data=encode_message(stranger).hex())
                assert published["recipients"] == [ours.to_base58()]
                await wait_until(
                    lambda: gossip.rejections["unregistered signer"] > rejected_before,
                    "our validators to reject the js peer's message as from an unregistered signer",
                )
                with pytest.raises(trio.WouldBlock):
                    inbox.receive_nowait()
