"""Discovery.locate asks the connected bootstrap peers for a peer before the iterative DHT
lookup: every node connects to them, so they hold every node's addresses, while at a
hundred nodes the lookup walks routing tables (20 peers per k-bucket) that most nodes are in
nobody's, and a task's node could not reach its requester. Real hosts on 127.0.0.1; the
iterative lookup is made to find nothing, as it does then."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError

from node.discovery import Discovery
from tests.network.conftest import Peer, open_network, wait_until


async def lookup_finds_nothing(peer: object) -> PeerInfo | None:
    return None


async def test_a_peer_in_no_routing_table_is_located_through_the_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_network(tmp_path) as network:
        bootstrap, bootstrap_addr = await network.bootstrap()
        target, seeker = [await network.peer(bootstrap_addr) for _ in range(2)]
        assert isinstance(seeker.discovery, Discovery)
        target_id, boot_id = target.host.get_id(), bootstrap.host.get_id()

        def knows(peer: Peer) -> bool:
            try:
                return bool(peer.host.get_peerstore().addrs(target_id))
            except PeerStoreError:  # never heard of it
                return False

        await wait_until(lambda: knows(bootstrap), "the bootstrap to know the target's addresses")
        await wait_until(
            lambda: boot_id in seeker.host.get_connected_peers(), "the seeker's bootstrap connection"
        )
        # the seeker's own DHT start-up may have taught it the target's addresses through
        # the bootstrap's answers already: forget them, so only the locate can find them
        seeker.host.get_peerstore().clear_addrs(target_id)
        assert not knows(seeker)
        monkeypatch.setattr(seeker.discovery.dht, "find_peer", lookup_finds_nothing)
        with trio.fail_after(30):
            found = await seeker.discovery.locate(target_id)
        assert found is not None and found.peer_id == target_id
        assert set(found.addrs) & set(target.host.get_addrs())
