"""A blob's hinted provider (the worker or requester named by the announcement or the
chain) is fetched from even when this node never connected to it and no DHT provider
record names it: its addresses are looked up by peer id through the DHT. Real hosts on
127.0.0.1, a bootstrap DHT server between them; waits are hang guards only."""

from __future__ import annotations

import logging
from pathlib import Path

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID as PeerID

from node.blocks import BlockExchange, BlockStore
from node.config import BehaviourConfig
from node.discovery import Discovery, DiscoveryConfig
from node.runtime.effects_network import TaskNetwork
from protocol.cid import cid_of
from protocol.state import events as ev
from protocol.state.actions import Fetch
from protocol.state.records import BlobKind
from tests.network.conftest import HANG_GUARD_S, Network, open_network, wait_until

PROVIDER = b"\x0a" * 20  # the provider's chain address, as the hint names it
FETCHER = b"\x0b" * 20
LOG = logging.LoggerAdapter(logging.getLogger("tests.runtime"), {})


class NoChain:
    client = None  # members are set by hand below; nothing reads the chain


async def exchange_for(network: Network, discovery: Discovery, data_dir: Path,
                       announce: bool) -> BlockExchange:
    store = BlockStore(data_dir / "blocks")
    network.stack.callback(store.close)
    exchange = BlockExchange(
        discovery.host, store, find_providers=discovery.find_providers,
        provide=discovery.provide if announce else None,
    )
    await network.stack.enter_async_context(exchange)
    return exchange


def knows_addresses(discovery: Discovery, peer: PeerID) -> bool:
    try:
        return bool(discovery.host.get_peerstore().addrs(peer))
    except Exception:  # the peerstore raises for a peer it never heard of
        return False


async def test_a_hinted_provider_never_connected_to_is_found_by_peer_id(tmp_path: Path) -> None:
    async with open_network(tmp_path) as network:
        bootstrap, bootstrap_addr = await network.bootstrap()
        provider = await network.peer(bootstrap_addr)
        fetcher = await network.peer(bootstrap_addr)
        assert bootstrap.discovery and provider.discovery and fetcher.discovery
        provider_id = provider.host.get_id()
        await wait_until(
            lambda: bootstrap.discovery.dht.routing_table.peer_in_table(provider_id),
            "the provider in the bootstrap's routing table",
        )
        await wait_until(
            lambda: fetcher.discovery.dht.get_routing_table_size() > 0,
            "the bootstrap in the fetcher's routing table",
        )
        # The provider's announcement never reached the DHT (announcing is best effort: a
        # provide that times out under load is dropped), so only the hint names it.
        served = await exchange_for(network, provider.discovery, tmp_path / "p", announce=False)
        blob = b"the task's initial model" * 5000
        cid = await served.publish(blob)
        # As most members are to a node that keeps target_peers connections out of many:
        # a DHT query may have connected the two or told the fetcher the provider's
        # addresses; undo both.
        if fetcher.host.get_network().get_connections(provider_id):
            await fetcher.host.disconnect(provider_id)
        fetcher.host.get_peerstore().clear_addrs(provider_id)
        fetcher.discovery.dht.routing_table.remove_peer(provider_id)
        assert not knows_addresses(fetcher.discovery, provider_id)

        exchange = await exchange_for(network, fetcher.discovery, tmp_path / "f", announce=True)
        net = TaskNetwork(
            NoChain(), fetcher.host.get_id(), FETCHER, exchange, fetcher.discovery,  # type: ignore[arg-type]
            fetcher.gossip, BehaviourConfig(), LOG,  # type: ignore[arg-type]
        )
        net.peers[provider_id] = PROVIDER
        net.peer_of[PROVIDER] = provider_id
        net.bounds[BlobKind.MODEL] = 1 << 20

        with trio.fail_after(HANG_GUARD_S):
            answer = await net.fetch(Fetch(cid, (PROVIDER,), BlobKind.MODEL))
        assert answer == ev.BlobFetched(cid), answer
        assert await exchange.fetch(cid, 1 << 20) == blob  # from the local store now


async def test_a_hinted_provider_nobody_can_locate_fails_the_fetch_with_a_reason(
    tmp_path: Path,
) -> None:
    async with open_network(tmp_path) as network:
        _, bootstrap_addr = await network.bootstrap()
        quick = DiscoveryConfig(bootstrap_addrs=(bootstrap_addr,), query_timeout_s=3.0)
        fetcher = await network.peer(bootstrap_addr, discovery=quick)
        assert fetcher.discovery
        await wait_until(
            lambda: fetcher.discovery.dht.get_routing_table_size() > 0,
            "the bootstrap in the fetcher's routing table",
        )
        exchange = await exchange_for(network, fetcher.discovery, tmp_path / "f", announce=True)
        net = TaskNetwork(
            NoChain(), fetcher.host.get_id(), FETCHER, exchange, fetcher.discovery,  # type: ignore[arg-type]
            fetcher.gossip, BehaviourConfig(), LOG,  # type: ignore[arg-type]
        )
        absent = PeerID.from_pubkey(create_new_key_pair().public_key)  # never online
        net.peers[absent] = PROVIDER
        net.peer_of[PROVIDER] = absent
        net.bounds[BlobKind.MODEL] = 1 << 20
        cid = cid_of(b"a blob nobody holds")
        with trio.fail_after(HANG_GUARD_S):
            answer = await net.fetch(Fetch(cid, (PROVIDER,), BlobKind.MODEL))
        assert isinstance(answer, ev.FetchFailed)
        assert "no providers known" in answer.reason, answer
