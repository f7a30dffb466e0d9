"""Every PRUNE a node sends starts its back-off from that peer (node.libp2p_compat's
BackingOffGossipSub.emit_prune): a peer pruned on the GRAFT-flood path is not grafted back
by the next heartbeat, which the peer's own GRAFT-flood check would count against us (real
hosts on 127.0.0.1, py-libp2p's own GossipSub heartbeats)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from multiaddr import Multiaddr

from node.gossip import GossipConfig, open_pubsub
from node.host import host_multiaddrs
from tests.network.conftest import open_network, wait_until

TOPIC = "fl/test/models"
HEARTBEATS = 4  # the flood window is 10 s after the PRUNE; heartbeats come each second


async def test_a_peer_pruned_for_a_graft_flood_is_not_grafted_back_by_the_next_heartbeats(
    tmp_path: Path,
) -> None:
    async with open_network(tmp_path) as network:
        a_host, b_host = await network.host(), await network.host()
        a = await network.stack.enter_async_context(
            open_pubsub(a_host, GossipConfig(degree=2, degree_low=1, degree_high=3))
        )
        b = await network.stack.enter_async_context(open_pubsub(b_host))
        await b_host.connect(info_from_p2p_addr(Multiaddr(host_multiaddrs(a_host)[0])))
        a_id, b_id = a_host.get_id(), b_host.get_id()
        for node in (a, b):
            await node.pubsub.subscribe(TOPIC)
        await wait_until(
            lambda: b_id in a.router.mesh.get(TOPIC, ()) and a_id in b.router.mesh.get(TOPIC, ()),
            "the two peers to mesh",
        )
        # B left A's mesh, and A takes B's next GRAFT for a flood (a GRAFT within 10 s of a
        # PRUNE from B, as crossing joins and prunes can make it): A answers it with PRUNE
        a.router.mesh[TOPIC].discard(b_id)
        a.router.graft_flood_tracking[b_id][TOPIC] = time.time()
        await a.router.handle_graft(rpc_pb2.ControlGraft(topicID=TOPIC), b_id)
        await wait_until(
            lambda: TOPIC in b.router.graft_flood_tracking.get(a_id, {}), "B to get A's PRUNE"
        )
        # A's mesh is now empty, under degree_low: its heartbeats look for a peer to graft,
        # and B is the only one
        beats = [0]
        heartbeat = a.router.mesh_heartbeat

        def counted() -> Any:
            beats[0] += 1
            return heartbeat()

        a.router.mesh_heartbeat = counted  # type: ignore[method-assign]
        await wait_until(lambda: beats[0] >= HEARTBEATS, f"{HEARTBEATS} heartbeats of A")
        assert b_id not in a.router.mesh.get(TOPIC, ())
        scorer = b.router.scorer
        penalty = scorer.graft_flood_penalties.get(a_id, 0.0) if scorer is not None else 0.0
    assert penalty == 0.0, f"A grafted B back inside B's GRAFT-flood window ({penalty})"
