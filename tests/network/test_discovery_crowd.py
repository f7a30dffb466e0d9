"""A task's nodes all look a blob up at once (a round's start), and the bootstrap peers are
where provider records are put and looked up first (node.discovery). Real hosts on
127.0.0.1; every seeker is connected to the bootstrap alone and its iterative lookup is made
to find nothing, so an answer can only come from the bootstrap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID as PeerID

from node.discovery import BOOTSTRAP_DISCOVERY, Discovery, DiscoveryConfig, task_namespace
from protocol.cid import cid_of
from tests.network.conftest import Peer, open_network, wait_until

SEEKERS = 24
BLOB = cid_of(b"a blob the whole task wants at once")
NAMESPACE = task_namespace(1, b"\x22" * 20)


async def no_walk(*args: object) -> list[PeerID]:
    return []


def walk_forbidden(*args: object) -> bool:
    raise AssertionError("the record reached no bootstrap peer: the provide walked the DHT")


async def crowd_lookup(seekers: Sequence[Peer], provider: PeerID) -> int:
    """How many seekers, all asking at once, find `provider` for BLOB."""
    found = 0

    async def seek(discovery: Discovery) -> None:
        nonlocal found
        providers = await discovery.find_providers(BLOB)
        found += any(info.peer_id == provider for info in providers)

    async with trio.open_nursery() as nursery:
        for seeker in seekers:
            assert seeker.discovery is not None
            nursery.start_soon(seek, seeker.discovery)
    return found


@pytest.mark.parametrize(
    ("streams", "all_found"), [(BOOTSTRAP_DISCOVERY.inbound_dht_streams, True), (1, False)]
)
async def test_a_crowd_finds_a_provider_through_the_bootstrap_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streams: int, all_found: bool
) -> None:
    async with open_network(tmp_path) as network:
        _, address = await network.bootstrap(
            DiscoveryConfig(dht_server=True, inbound_dht_streams=streams)
        )
        provider = await network.peer(address)
        seekers = [await network.peer(address) for _ in range(SEEKERS)]
        for peer in (provider, *seekers):
            assert peer.discovery is not None
            monkeypatch.setattr(
                peer.discovery.dht.peer_routing, "find_closest_peers_network", no_walk
            )
        assert provider.discovery is not None
        monkeypatch.setattr(provider.discovery.dht, "provide", walk_forbidden)
        await wait_until(
            lambda: all(s.discovery is not None and s.discovery.connectivity()[1] for s in seekers),
            "every seeker's bootstrap connection",
        )
        with trio.fail_after(30):
            assert await provider.discovery.provide(BLOB)
            found = await crowd_lookup(seekers, provider.host.get_id())
    # one request at a time, the bootstrap resets the crowd's others (py-libp2p's answer to
    # a full limiter), and they find nothing
    assert (found == SEEKERS) is all_found, f"{found} of {SEEKERS} found the provider"


async def test_a_member_is_located_from_its_rendezvous_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_network(tmp_path) as network:
        _, address = await network.bootstrap()
        member, seeker = [await network.peer(address, (NAMESPACE,)) for _ in range(2)]
        assert seeker.discovery is not None
        member_id = member.host.get_id()
        await wait_until(
            lambda: member_id in seeker.discovery.namespace_peers(NAMESPACE),
            "the seeker's rendezvous lookup to find the member",
        )
        seeker.host.get_peerstore().clear_addrs(member_id)
        monkeypatch.setattr(seeker.discovery, "_ask_bootstrap_for", walk_forbidden)
        monkeypatch.setattr(seeker.discovery.dht, "find_peer", walk_forbidden)
        with trio.fail_after(5):
            found = await seeker.discovery.locate(member_id)
        assert found is not None and set(found.addrs) & set(member.host.get_addrs())
