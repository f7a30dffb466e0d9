"""Long-running host: many inbound connect/disconnect cycles leave no tasks, fds or memory behind.

py-libp2p 0.8.1 keeps a task and an inbound-limiter slot per inbound connection for the
swarm's lifetime and refuses every inbound connection after 250 (node.host.LongRunningSwarm
fixes it). FL_SOAK_CYCLES sets the number of cycles (default 300: past the lockout).
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.network.swarm import Swarm

from node.host import connect, host_multiaddrs
from tests.network.conftest import HANG_GUARD_S, echo_roundtrip, open_network, soak_cycles

CLIENTS = 10  # cycles run on this many client hosts at once (one connection per peer pair)
LOCKOUT = 250  # py-libp2p's default lifetime inbound limit the fix removes
TASK_SLACK = 5  # timers and short-lived handler tasks may be mid-flight at a sample
FD_SLACK = 3
RSS_SLACK_MB = 48  # allocator and cache warm-up; the leak this guards against is per cycle


def trio_task_count() -> int:
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def sample() -> tuple[int, int, float]:
    return trio_task_count(), open_fd_count(), rss_mb()


async def run_cycles(target: IHost, clients: list[IHost], cycles: int) -> None:
    """``cycles`` inbound connections to ``target``, each closed again, spread over clients."""
    addr = host_multiaddrs(target)[0]

    async def client_cycles(client: IHost, count: int) -> None:
        for _ in range(count):
            with trio.fail_after(HANG_GUARD_S):
                await connect(client, addr)
                await client.disconnect(target.get_id())

    per_client, extra = divmod(cycles, len(clients))
    async with trio.open_nursery() as nursery:
        for index, client in enumerate(clients):
            nursery.start_soon(client_cycles, client, per_client + (index < extra))


async def settle(target: IHost) -> None:
    """Wait until the target has seen every client disconnect (a hang guard, not a timing)."""
    with trio.fail_after(HANG_GUARD_S):
        while target.get_connected_peers():
            await trio.sleep(0.05)
    await trio.sleep(0.5)  # let closing handlers and timers finish before sampling


async def test_host_survives_inbound_churn_past_the_lockout(tmp_path: Path) -> None:
    cycles = soak_cycles()
    assert cycles > LOCKOUT, f"FL_SOAK_CYCLES={cycles} must exceed the {LOCKOUT} lockout"
    async with open_network(tmp_path) as network:
        target = await network.host()
        clients = [await network.host() for _ in range(CLIENTS)]
        await run_cycles(target, clients, len(clients))  # warm-up: first-time allocations
        await settle(target)
        tasks_before, fds_before, rss_before = sample()

        await run_cycles(target, clients, cycles)
        await settle(target)
        tasks_after, fds_after, rss_after = sample()
        print(
            f"\nsoak {cycles} cycles: tasks {tasks_before} -> {tasks_after}, "
            f"fds {fds_before} -> {fds_after}, RSS {rss_before:.1f} -> {rss_after:.1f} MB"
        )
        assert tasks_after <= tasks_before + TASK_SLACK
        assert fds_after <= fds_before + FD_SLACK
        assert rss_after <= rss_before + RSS_SLACK_MB

        # Still accepting: a peer it has never seen connects and gets an answer.
        newcomer = await network.host()
        await connect(newcomer, host_multiaddrs(target)[0])
        assert await echo_roundtrip(newcomer, target, b"still here") == b"still here"


async def test_task_count_detects_the_stock_swarm_leak(tmp_path: Path) -> None:
    """The measurement above can fail: the unfixed swarm keeps one task per inbound connection."""
    cycles = 20
    async with open_network(tmp_path) as network:
        target = await network.host()
        target.get_network().__class__ = Swarm  # undo the fix on this host only
        clients = [await network.host() for _ in range(CLIENTS)]
        await run_cycles(target, clients, len(clients))
        await settle(target)
        tasks_before = trio_task_count()
        await run_cycles(target, clients, cycles)
        await settle(target)
        assert trio_task_count() >= tasks_before + cycles
