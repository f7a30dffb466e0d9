"""node.host: identity file, host config errors, Noise + Yamux + TCP connections."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from libp2p.abc import IHost
from libp2p.crypto.secp256k1 import create_new_key_pair as create_secp256k1_key_pair
from libp2p.peer.id import ID as PeerID
from multiaddr import Multiaddr

import node.host
from node.host import (
    HostConfig,
    HostConfigError,
    IdentityError,
    LongRunningSwarm,
    _announced_addrs,
    connect,
    host_multiaddrs,
    load_or_create_identity,
    open_host,
)
from tests.network.conftest import echo_roundtrip, open_network


def test_identity_is_created_private_and_reloaded(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "node.key"
    created = load_or_create_identity(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    reloaded = load_or_create_identity(key_path)
    assert PeerID.from_pubkey(reloaded.public_key) == PeerID.from_pubkey(created.public_key)
    assert reloaded.private_key.to_bytes() == created.private_key.to_bytes()
    assert [p.name for p in key_path.parent.iterdir()] == ["node.key"]  # no temp file left


def test_identity_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_path = tmp_path / "node.key"
    load_or_create_identity(key_path)
    os.chmod(key_path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(key_path)


@pytest.mark.parametrize("content", [b"", b"not a key at all", b"\x08\x01" + b"\xff" * 5000])
def test_identity_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    key_path = tmp_path / "node.key"
    key_path.write_bytes(content)
    os.chmod(key_path, 0o600)
    with pytest.raises(IdentityError, match=str(key_path)):
        load_or_create_identity(key_path)


def test_identity_of_another_key_type_is_refused(tmp_path: Path) -> None:
    key_path = tmp_path / "node.key"
    key_path.write_bytes(create_secp256k1_key_pair().private_key.serialize())
    os.chmod(key_path, 0o600)
    with pytest.raises(IdentityError, match="Secp256k1"):
        load_or_create_identity(key_path)


@pytest.mark.parametrize(
    "listen, problem",
    [
        ((), "empty"),
        (("not-a-multiaddr",), "not a multiaddr"),
        (("/ip4/127.0.0.1/udp/4001",), "TCP only"),
        (("/ip4/127.0.0.1/tcp/4001/ws",), "TCP only"),
    ],
)
def test_host_config_rejects_bad_listen_addresses(
    tmp_path: Path, listen: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(HostConfigError, match=problem):
        HostConfig(key_path=tmp_path / "k", listen_addrs=listen)


def test_host_config_rejects_bad_limits(tmp_path: Path) -> None:
    with pytest.raises(HostConfigError, match="max_inbound"):
        HostConfig(key_path=tmp_path / "k", max_connections=10, max_inbound=11)


async def test_host_listens_and_connects_over_noise_and_yamux(tmp_path: Path) -> None:
    async with open_network(tmp_path) as network:
        await _check_connection(await network.host(), await network.host())


async def _check_connection(server: IHost, client: IHost) -> None:
    addrs = host_multiaddrs(server)
    assert addrs and all(a.endswith(f"/p2p/{server.get_id()}") for a in addrs)
    assert isinstance(server.get_network(), LongRunningSwarm)

    assert await connect(client, addrs[0]) == server.get_id()
    assert await echo_roundtrip(client, server, b"hello fl-node") == b"hello fl-node"

    (conn,) = client.get_network().get_connections(server.get_id())
    assert conn.get_negotiated_security_protocol() == "/noise"
    assert conn.get_negotiated_muxer_protocol() == "/yamux/1.0.0"


async def test_host_keeps_its_identity_across_restarts(tmp_path: Path) -> None:
    config = HostConfig(key_path=tmp_path / "node.key")
    async with open_host(config) as first:
        first_id = first.get_id()
    async with open_host(config) as second:
        assert second.get_id() == first_id


async def test_connect_rejects_bad_peer_addresses(tmp_path: Path) -> None:
    async with open_host(HostConfig(key_path=tmp_path / "node.key")) as host:
        with pytest.raises(HostConfigError, match="/p2p/<peer id>"):
            await connect(host, "/ip4/127.0.0.1/tcp/4001")
        with pytest.raises(HostConfigError, match="own address"):
            await connect(host, host_multiaddrs(host)[0])


async def test_listening_on_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    async with open_host(HostConfig(key_path=tmp_path / "first.key")) as first:
        port = first.get_transport_addrs()[0].value_for_protocol("tcp")
        config = HostConfig(
            key_path=tmp_path / "other.key", listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",)
        )
        with pytest.raises(HostConfigError, match="another node using port"):
            async with open_host(config):
                pass


def test_a_wildcard_listen_address_is_announced_as_addresses_peers_can_dial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wildcard, fixed = Multiaddr("/ip4/0.0.0.0/tcp/4001"), Multiaddr("/ip4/127.0.0.1/tcp/4002")
    announced = _announced_addrs([wildcard, fixed])
    assert fixed in announced
    for addr in announced:
        assert not ipaddress.ip_address(addr.value_for_protocol("ip4")).is_unspecified, announced
    assert {a.value_for_protocol("tcp") for a in announced} == {"4001", "4002"}, announced
    # A machine whose only interface is loopback: interface enumeration finds nothing.
    monkeypatch.setattr(node.host, "expand_wildcard_address", lambda addr: [addr])
    assert _announced_addrs([wildcard, Multiaddr("/ip6/::/tcp/4003")]) == [
        Multiaddr("/ip4/127.0.0.1/tcp/4001"),
        Multiaddr("/ip6/::1/tcp/4003"),
    ]
