"""Bitswap fetch throughput against the block exchange, measured in the same run.

    python -m bench.bitswap_fetch [--sizes 6.65,20] [--repeat 3]

Two hosts on 127.0.0.1 in this one process (both ends share one trio loop and the GIL,
so absolute numbers are lower than between processes). The provider stores one random
blob per size; the fetcher gets it with ``BlockExchange.fetch`` and with
``Bitswap.fetch``, each time into an emptied on-disk store (durable writes, every block
verified, the blob assembled in memory). Prints MB/s (10^6 bytes, median of the repeats)
and the bitswap / exchange ratio. Numbers swing with machine load; compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from node.blocks import BlockExchange, BlockStore
from node.blocks.bitswap import Bitswap
from node.host import HostConfig, host_multiaddrs, open_host

MB = 1_000_000


async def _timed(store: BlockStore, fetch: Callable[[], Awaitable[bytes]], blob: bytes) -> float:
    for cid in store.cids():  # a cold fetch every time
        store.delete(cid)
    start = time.perf_counter()
    got = await fetch()
    elapsed = time.perf_counter() - start
    if got != blob:
        raise AssertionError("fetched bytes differ from the published blob")
    return len(blob) / MB / elapsed


async def _bench(sizes: list[float], repeat: int, tmp: Path) -> None:
    with BlockStore(tmp / "provider") as provider_store, BlockStore(tmp / "fetcher") as store:
        async with open_host(HostConfig(key_path=tmp / "p.key")) as provider_host, \
                open_host(HostConfig(key_path=tmp / "f.key")) as host, \
                BlockExchange(provider_host, provider_store) as provider, \
                Bitswap(provider_host, provider_store), \
                BlockExchange(host, store) as exchange, Bitswap(host, store) as bitswap:
            addr = host_multiaddrs(provider_host)[0]
            print(f"{'size MB':>8} {'exchange MB/s':>14} {'bitswap MB/s':>13} {'ratio':>6}")
            for size in sizes:
                blob = os.urandom(int(size * MB))
                root = await provider.publish(blob)
                fetchers: dict[str, Callable[[], Awaitable[bytes]]] = {
                    "exchange": partial(exchange.fetch, root, max_size=len(blob), providers=[addr]),
                    "bitswap": partial(bitswap.fetch, root, max_size=len(blob), providers=[addr]),
                }
                rates: dict[str, list[float]] = {name: [] for name in fetchers}
                for _ in range(repeat):
                    for name, fetch in fetchers.items():
                        rates[name].append(await _timed(store, fetch, blob))
                ex, bs = (statistics.median(rates[k]) for k in ("exchange", "bitswap"))
                print(f"{size:>8.2f} {ex:>14.1f} {bs:>13.1f} {bs / ex:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6.65,20", help="blob sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(_bench, sizes, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
