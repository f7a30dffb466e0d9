"""node.discovery and the bootstrap peer: real hosts on 127.0.0.1, one bootstrap in its own
OS process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from bootstrap.config import ConfigError, load_bootstrap_config
from node.discovery import Discovery, DiscoveryConfig, task_namespace
from node.host import host_multiaddrs
from protocol.cid import cid_of
from protocol.errors import CIDError
from tests.network.conftest import HANG_GUARD_S, Peer, open_network, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TASK_A = task_namespace(31337, b"\xaa" * 20)
TASK_B = task_namespace(31337, b"\xbb" * 20)


def all_connected(peers: list[Peer], namespace: str) -> bool:
    expected = len(peers) - 1
    return all(
        p.discovery is not None
        and len(p.discovery.connected_namespace_peers(namespace)) == expected
        for p in peers
    )


async def test_six_peers_find_each_other_through_a_bootstrap(tmp_path: Path) -> None:
    async with open_network(tmp_path) as network:
        bootstrap, bootstrap_addr = await network.bootstrap()
        peers = [await network.peer(bootstrap_addr, (TASK_A,)) for _ in range(6)]
        await wait_until(lambda: all_connected(peers, TASK_A), "6 peers to connect to each other")

        ids = {p.host.get_id() for p in peers}
        for peer in peers:
            assert peer.discovery is not None
            assert peer.discovery.namespace_peers(TASK_A) == ids - {peer.host.get_id()}
        # Pitfall 9: connected peers are in the routing tables, the bootstrap's included.
        assert bootstrap.discovery is not None
        await wait_until(
            lambda: all(bootstrap.discovery.dht.routing_table.peer_in_table(i) for i in ids),  # type: ignore[union-attr]
            "the bootstrap's routing table to hold every peer",
        )


async def test_peers_of_different_tasks_stay_apart(tmp_path: Path) -> None:
    async with open_network(tmp_path) as network:
        _, bootstrap_addr = await network.bootstrap()
        task_a = [await network.peer(bootstrap_addr, (TASK_A,)) for _ in range(2)]
        task_b = [await network.peer(bootstrap_addr, (TASK_B,)) for _ in range(2)]
        await wait_until(lambda: all_connected(task_a, TASK_A), "task A peers to meet")
        await wait_until(lambda: all_connected(task_b, TASK_B), "task B peers to meet")
        b_ids = {p.host.get_id() for p in task_b}
        for peer in task_a:
            assert peer.discovery is not None
            assert not peer.discovery.namespace_peers(TASK_A) & b_ids


async def test_maintenance_reconnects_a_dropped_task_peer(tmp_path: Path) -> None:
    async with open_network(tmp_path) as network:
        _, bootstrap_addr = await network.bootstrap()
        first, second = [await network.peer(bootstrap_addr, (TASK_A,)) for _ in range(2)]
        await wait_until(lambda: all_connected([first, second], TASK_A), "the two peers to meet")
        await first.host.disconnect(second.host.get_id())
        await wait_until(
            lambda: second.host.get_id() in first.host.get_connected_peers(),
            "maintenance to reconnect the dropped peer",
        )


async def test_provider_records_are_found_even_when_one_is_known_locally(tmp_path: Path) -> None:
    async with open_network(tmp_path) as network:
        _, bootstrap_addr = await network.bootstrap()
        config = DiscoveryConfig(bootstrap_addrs=(bootstrap_addr,), query_timeout_s=3.0)
        first, second, seeker = [
            await network.peer(bootstrap_addr, discovery=config) for _ in range(3)
        ]
        for peer in (first, second, seeker):
            assert peer.discovery is not None
            await wait_until(
                lambda p=peer: p.discovery.dht.get_routing_table_size() > 0,  # type: ignore[misc]
                "the bootstrap in the routing table",
            )
        assert first.discovery and second.discovery and seeker.discovery
        blob_cid = cid_of(b"an encrypted model blob")

        assert await first.discovery.provide(blob_cid)
        found = await seeker.discovery.find_providers(blob_cid)
        assert [info.peer_id for info in found] == [first.host.get_id()]
        assert found[0].addrs  # dialable: the block exchange connects with these

        # seeker now holds first's record locally; a later provider must still be found.
        assert await second.discovery.provide(blob_cid)
        found = await seeker.discovery.find_providers(blob_cid)
        assert {info.peer_id for info in found} == {first.host.get_id(), second.host.get_id()}

        with trio.fail_after(HANG_GUARD_S):
            assert await seeker.discovery.find_providers(cid_of(b"nobody has this")) == []
        with pytest.raises(CIDError, match="DHT key"):
            await seeker.discovery.find_providers("not-a-cid")


# --- the bootstrap peer: config file and separate process ---


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, names",
    [
        ("[network\n", "not valid TOML"),
        ('[other]\nkey_file = "k"\n', "unknown section"),
        ('listen = ["/ip4/127.0.0.1/tcp/0"]\n', "put them under [network]"),
        ("", "missing section [network]"),
        ('[network]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n', "key_file"),
        ("[network]\nkey_file = 3\n", "key_file"),
        ('[network]\nkey_file = "k"\nlisten = "/ip4/127.0.0.1/tcp/0"\n', "listen"),
        ('[network]\nkey_file = "k"\nlisten = ["/dns/x/udp/1"]\n', "listen"),
        ('[network]\nkey_file = "k"\nport = 4001\n', "port"),
    ],
)
def test_bootstrap_config_errors_name_the_file_and_key(
    tmp_path: Path, text: str, names: str
) -> None:
    path = write(tmp_path / "bootstrap.toml", text)
    with pytest.raises(ConfigError) as error:
        load_bootstrap_config(path)
    assert str(path) in str(error.value)
    assert names in str(error.value)


def test_bootstrap_config_resolves_the_key_next_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "b.toml", '[network]\nkey_file = "keys/b.key"\n')
    config = load_bootstrap_config(path)
    assert config.host.key_path == tmp_path / "keys" / "b.key"
    assert config.host.listen_addrs == ("/ip4/127.0.0.1/tcp/4001",)
    with pytest.raises(ConfigError, match="config file not found"):
        load_bootstrap_config(tmp_path / "missing.toml")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_bootstrap_command_reports_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "b.toml", '[network]\nkey_fil = "b.key"\n')
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "bootstrap", "--config", str(path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 2
    assert "key_fil" in result.stderr and str(path) in result.stderr


async def test_peers_discover_each_other_through_a_bootstrap_process(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bootstrap.toml",
        '[network]\nkey_file = "bootstrap.key"\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n',
    )
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "node.cli",
            "--log-level",
            "WARNING",
            "bootstrap",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        env=cli_env(),
    )
    try:
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(HANG_GUARD_S):
            while b"\n" not in printed:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the bootstrap process exited before printing its address"
                printed += chunk
        bootstrap_addr = printed.split(b"\n", 1)[0].decode()
        assert "/p2p/12D3KooW" in bootstrap_addr
        assert (tmp_path / "bootstrap.key").exists()

        async with open_network(tmp_path) as network:
            peers = [await network.peer(bootstrap_addr, (TASK_A,)) for _ in range(3)]
            await wait_until(lambda: all_connected(peers, TASK_A), "peers to meet via the process")
            assert all(host_multiaddrs(p.host) for p in peers)

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(HANG_GUARD_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_failed_dials_are_retried_at_jittered_times(tmp_path: Path) -> None:
    """Nodes started together fail together (a bootstrap evicts handshakes beyond its pending
    limit), so their retries must not all come in one instant again: each comes after half
    to all of its doubling pause, at a time of its own."""
    async with open_network(tmp_path) as network:
        config = DiscoveryConfig(lookup_interval_s=2.0, max_lookup_interval_s=60.0)
        discovery = Discovery(await network.host(), config)
        nobody = Multiaddr("/ip4/127.0.0.1/tcp/1")  # nobody listens there
        offsets = []
        for _ in range(12):
            dead = PeerInfo(ID.from_pubkey(create_new_key_pair().public_key), [nobody])
            start = trio.current_time()
            assert not await discovery._connect_with_backoff(dead)
            pause = discovery._dial_pause[dead.peer_id]
            assert pause == 2.0  # the first pause: lookup_interval_s / 2, doubled
            offsets.append(discovery._dial_retry_at[dead.peer_id] - start)
            assert not await discovery._connect_with_backoff(dead)  # not before its time
        assert all(1.0 <= offset <= 2.01 for offset in offsets)  # the dial itself: microseconds
        assert max(offsets) - min(offsets) > 0.1  # spread, not one instant
