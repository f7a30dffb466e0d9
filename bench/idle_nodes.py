"""What idle nodes cost one event loop: N libp2p nodes in this process (real hosts on
127.0.0.1, each with its DHT, its rendezvous in one task namespace and gossipsub, as a
node of an in-process localnet has), doing nothing but staying connected, discovered and
gossiping heartbeats.

    python -m bench.idle_nodes [--sizes 5,20,40] [--warmup 60] [--window 20]

For each N (a fresh network each time) it prints the process's CPU seconds per wall second
over the start-up (building the N nodes and the first --warmup seconds) and over a later
--window of steady state, per node (% of a core), and the per-node ratio to the smallest N
measured in the same run. Every in-process node shares one thread for all of this, so N x
(steady % per node) above 100% is a loop that can no longer keep up with its own timeouts:
stream opens and requests fail although every peer is up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from node.discovery import BOOTSTRAP_DISCOVERY, DiscoveryConfig, open_discovery, task_namespace
from node.gossip import GossipConfig, open_pubsub
from node.host import HostConfig, host_multiaddrs, open_host

NAMESPACE = task_namespace(1, b"\x11" * 20)


async def measure(size: int, warmup: float, window: float, keys: Path) -> tuple[float, float]:
    """(start-up, steady) CPU seconds per wall second of `size` idle nodes and a bootstrap."""
    async with AsyncExitStack() as stack:
        start_wall, start_cpu = time.monotonic(), time.process_time()
        boot = await stack.enter_async_context(open_host(HostConfig(key_path=keys / "boot.key")))
        await stack.enter_async_context(open_discovery(boot, BOOTSTRAP_DISCOVERY))
        address = host_multiaddrs(boot)[0]
        for index in range(size):
            host = await stack.enter_async_context(
                open_host(HostConfig(key_path=keys / f"n{size}-{index}.key"))
            )
            config = DiscoveryConfig(bootstrap_addrs=(address,))
            await stack.enter_async_context(open_discovery(host, config, (NAMESPACE,)))
            await stack.enter_async_context(open_pubsub(host, GossipConfig()))
        await trio.sleep(warmup)
        startup = (time.process_time() - start_cpu) / (time.monotonic() - start_wall)
        steady_wall, steady_cpu = time.monotonic(), time.process_time()
        await trio.sleep(window)
        steady = (time.process_time() - steady_cpu) / (time.monotonic() - steady_wall)
    return startup, steady


async def main_async(sizes: list[int], warmup: float, window: float) -> None:
    print(f"idle in-process nodes: start-up = building them + {warmup:.0f} s, "
          f"steady = the {window:.0f} s after; % of one core per node")
    baseline: float | None = None
    with tempfile.TemporaryDirectory(prefix="idle-nodes-") as folder:
        for size in sizes:
            startup, steady = await measure(size, warmup, window, Path(folder))
            per_node = steady / (size + 1)
            baseline = baseline or per_node
            print(f"N={size:4d}  start-up {100 * startup / (size + 1):5.2f}%  "
                  f"steady {100 * per_node:5.2f}%  ({per_node / baseline:.2f}x the N={sizes[0]} "
                  f"per node; the loop busy {100 * steady:.0f}% of the time)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20,40")
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    trio.run(main_async, sizes, args.warmup, args.window)


if __name__ == "__main__":
    main()
