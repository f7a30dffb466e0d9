"""Floods against a node's gossip: the flooder is graylisted, banned and disconnected, honest
gossip keeps flowing, and the node's CPU during the flood is measured (printed; see the
bench for ratios).

The flooder runs as its own process (tests.hostile.attacks flood), so this process's CPU time
is the target's and the honest member's only.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID as PeerID

from node.host import load_or_create_identity
from protocol.messages import encode_message
from tests.hostile.gossip_arena import HANG_GUARD_S, Arena, announcement, open_arena, wait_until

FLOOD_MESSAGES = 2000
REPO_ROOT = Path(__file__).resolve().parents[2]


def flood_command(arena: Arena, key_path: Path, identities: int = 1) -> list[str]:
    """The forged-signature flood, in the honest member's name, against the arena's target."""
    body = encode_message(announcement(arena.honest.address, tag=b"forged"))
    return [
        sys.executable, "-m", "tests.hostile.attacks", "flood",
        "--target", arena.target_addr,
        "--topic", arena.topic(),
        "--impersonate", arena.honest.peer_id.to_base58(),
        "--data", body.hex(),
        "--key", str(key_path),
        "--count", str(FLOOD_MESSAGES),
        "--identities", str(identities),
        "--linger-s", str(HANG_GUARD_S),
    ]  # fmt: skip


@pytest.mark.parametrize("identities", [1, 4], ids=["one flooder", "4 sybils"])
async def test_forged_signature_flood_bans_the_flooder_and_honest_gossip_flows(
    tmp_path: Path, identities: int
) -> None:
    """One identity sending 2,000 forged messages, and the cheapest way around a per-peer ban:
    4 fresh identities sending 500 each, one after the other."""
    async with open_arena(tmp_path) as arena:
        key_path = tmp_path / "flooder.key"
        flooders = [
            PeerID.from_pubkey(load_or_create_identity(path).public_key)
            for path in [key_path, *(Path(f"{key_path}.{i}") for i in range(1, identities))]
        ]
        target = arena.target
        guard = target.node.guard
        connections = target.host.get_network().connections
        result: dict[str, subprocess.CompletedProcess[bytes]] = {}
        published: list[bytes] = []

        async def run_flooder() -> None:
            result["flood"] = await trio.run_process(
                flood_command(arena, key_path, identities), capture_stdout=True, capture_stderr=True,
                check=False, cwd=REPO_ROOT,
            )  # fmt: skip

        async def publish_honestly(stop: trio.Event, prefix: bytes) -> None:
            index = 0
            while not stop.is_set() and index < 500:
                tag = b"%s %d" % (prefix, index)
                await arena.honest.gossip.publish(announcement(arena.honest.address, tag=tag))
                published.append(tag)
                index += 1
                await trio.sleep(0.02)

        # baseline: the same honest traffic for a second, no flood
        stop = trio.Event()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_honestly, stop, b"before")
            await trio.sleep(1.0)
            stop.set()
        quiet_cpu = time.process_time() - cpu_start
        quiet_wall = time.perf_counter() - wall_start

        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_flooder)
            await wait_until(lambda: flooders[0] in connections, "the flooder to connect")
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            nursery.start_soon(publish_honestly, stop, b"during")
            await wait_until(
                lambda: all(f in guard.banned_until and f not in connections for f in flooders),
                "the target to ban and disconnect every flooder",
            )
            cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
            stop.set()
        flood = result["flood"]
        assert flood.returncode == 0, flood.stderr.decode()[-2000:]

        pubsub = target.node.pubsub
        checked = pubsub.peer_faults["bad signature"]
        print(
            f"\nforged flood from {identities} identities, {FLOOD_MESSAGES} messages: the target "
            f"verified {checked} signatures before the bans; CPU of this process (target and "
            f"honest member) {cpu:.3f} s over {wall:.3f} s = {cpu / wall:.2f} core during the "
            f"flood, {quiet_cpu / quiet_wall:.2f} core with honest traffic only; "
            f"{len(published)} honest messages delivered; flooder: "
            f"{flood.stdout.decode().strip()!r}"
        )
        # once graylisted, the score gate and the ban drop its messages before any crypto
        assert 10 * identities <= checked <= 20 * identities
        assert b"identities still connected at exit: 0" in flood.stdout
        for tag in published:
            message = announcement(arena.honest.address, tag=tag)
            await wait_until(lambda m=message: m in target.received(), f"{tag!r} delivered")
        assert announcement(arena.honest.address, tag=b"forged") not in target.received()
        assert arena.target_alive()
