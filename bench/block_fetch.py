"""Block fetch throughput against a raw TCP copy on loopback, measured in the same run.

    python -m bench.block_fetch [--sizes 1,10,50] [--repeat 3] [--no-bitswap]

A provider process (this module with ``--serve``) publishes one random blob per size in
its block store, in py-libp2p's bitswap (``MerkleDag.add_bytes``), on a plain libp2p
stream and behind a plain TCP socket. This process then fetches each blob six ways and
prints MB/s (MB = 10^6 bytes, median of the repeats) with the ratio to tcp in brackets,
and the CPU both processes spent per MB (all repeats' CPU seconds over all their bytes:
on a machine whose cores are all busy, as in a localnet's round, CPU and not wall is what a
transfer costs the others):

- ``tcp``: a raw socket copy of the same bytes (the baseline: no libp2p, no hashing);
- ``libp2p stream``: the same bytes down one Noise + Yamux stream (what the transport
  allows before any block protocol);
- ``fl-node cold``: ``BlockExchange.fetch`` by a fresh exchange into a fresh on-disk block
  store (new streams; default limits, durable writes, every block verified, the blob
  assembled in memory): a node's first fetch from a provider;
- ``fl-node warm``: the same through one long-lived exchange whose pooled streams are
  reused (its store emptied before each fetch): later fetches from the same provider;
- ``upstream windows``: the warm fetch again with py-libp2p's own yamux window updates
  (one per read) instead of node.libp2p_compat's (once half a window is read), in this
  fetching process, which is the side that sends them;
- ``bitswap``: ``MerkleDag.fetch_file`` with a fresh in-memory bitswap store.

Store set-up and clean-up are outside the timings. Numbers swing with machine load;
compare the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from bench.hostile_load import cpu_seconds

MB = 1_000_000
RAW_STREAM = TProtocol("/fl-bench/raw-copy/1.0.0")
SEED = 20240601
# The provider exits on its own after this long even if its parent never closes stdin.
PROVIDER_LIFETIME_S = 20 * 60


def make_blob(size_mb: int) -> bytes:
    return random.Random(SEED + size_mb).randbytes(size_mb * MB)


# --- the provider process -------------------------------------------------------------------


async def serve(workdir: Path, sizes: list[int], bitswap: bool) -> None:
    from libp2p.bitswap import BitswapClient, MemoryBlockStore
    from libp2p.bitswap.dag import MerkleDag

    from node.blocks import BlockExchange, BlockStore
    from node.host import HostConfig, host_multiaddrs, open_host

    blobs = {size: make_blob(size) for size in sizes}
    async with open_host(HostConfig(workdir / "provider.key")) as host, trio.open_nursery() as nursery:
        store = BlockStore(workdir / "provider" / "blocks", max_bytes=2 * sum(sizes) * MB + MB)
        exchange = BlockExchange(host, store)
        exchange.start()
        roots = {size: await exchange.publish(blob) for size, blob in blobs.items()}
        bitswap_roots: dict[int, str] = {}
        if bitswap:
            client = BitswapClient(host, MemoryBlockStore())
            client.set_nursery(nursery)
            await client.start()
            dag = MerkleDag(client)
            for size, blob in blobs.items():
                bitswap_roots[size] = (await dag.add_bytes(blob)).hex()

        async def copy_blob(tcp: trio.SocketStream) -> None:
            index = await tcp.receive_some(1)
            if index:
                await tcp.send_all(blobs[sizes[index[0]]])
            await tcp.aclose()

        async def stream_blob(stream: INetStream) -> None:
            index = await stream.read(1)
            blob = blobs[sizes[index[0]]]
            for start in range(0, len(blob), 1 << 20):
                await stream.write(blob[start : start + (1 << 20)])
            await stream.close()

        host.set_stream_handler(RAW_STREAM, stream_blob)
        listeners = await nursery.start(partial(trio.serve_tcp, copy_blob, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"addr": host_multiaddrs(host)[0], "roots": roots,
                          "bitswap_roots": bitswap_roots, "tcp_port": port}), flush=True)
        # Stop when the parent closes our stdin (or dies), or after a lifetime at most.
        with trio.move_on_after(PROVIDER_LIFETIME_S):
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()
        store.close()


# --- the measuring process ------------------------------------------------------------------


Probe = Callable[[], Awaitable[tuple[float, bytes]]]


async def clock(fetch: Awaitable[bytes]) -> tuple[float, bytes]:
    start = time.perf_counter()
    data = await fetch
    return time.perf_counter() - start, data


def both_cpu(provider_pid: int) -> float:
    """CPU seconds of this process and the provider's, together."""
    return time.process_time() + cpu_seconds(provider_pid)


async def timed(probe: Probe, expected: bytes, provider_pid: int) -> tuple[float, float]:
    """Seconds one fetch took and the CPU seconds both ends spent on it; fails loudly if
    the bytes are wrong."""
    cpu = both_cpu(provider_pid)
    elapsed, got = await probe()
    cpu = both_cpu(provider_pid) - cpu
    if got != expected:
        raise SystemExit(f"fetched bytes differ from the published blob ({len(got)} bytes)")
    return elapsed, cpu


async def read_all(read: Callable[[int], Awaitable[bytes]], size: int) -> bytes:
    chunks, received = [], 0
    while received < size:
        chunk = await read(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


async def measure(info: dict[str, Any], sizes: list[int], repeat: int, workdir: Path,
                  bitswap: bool, provider_pid: int) -> list[dict[str, float]]:
    from libp2p.bitswap import BitswapClient, MemoryBlockStore
    from libp2p.bitswap.dag import MerkleDag

    from node.blocks import BlockExchange, BlockStore
    from node.host import HostConfig, connect, open_host
    from node.libp2p_compat import upstream_window_updates

    rows = []
    async with open_host(HostConfig(workdir / "fetcher.key")) as host, trio.open_nursery() as nursery:
        provider = await connect(host, info["addr"])
        # One long-lived exchange, as a node has: its pooled streams stay warm between
        # fetches; its store is emptied (gc) before each one so every block is fetched.
        warm_store = BlockStore(workdir / "warm" / "blocks", max_bytes=2 * max(sizes) * MB)
        warm = BlockExchange(host, warm_store)
        for index, size in enumerate(sizes):
            blob = make_blob(size)
            root = info["roots"][str(size)]

            async def tcp_copy(index: int = index, size: int = size) -> tuple[float, bytes]:
                async def copy() -> bytes:
                    stream = await trio.open_tcp_stream("127.0.0.1", info["tcp_port"])
                    await stream.send_all(bytes([index]))
                    data = await read_all(stream.receive_some, size * MB)
                    await stream.aclose()
                    return data

                return await clock(copy())

            async def stream_copy(index: int = index, size: int = size) -> tuple[float, bytes]:
                async def copy() -> bytes:
                    stream = await host.new_stream(provider, [RAW_STREAM])
                    await stream.write(bytes([index]))
                    data = await read_all(stream.read, size * MB)
                    await stream.close()
                    return data

                return await clock(copy())

            async def cold_fetch(size: int = size, root: str = root) -> tuple[float, bytes]:
                directory = workdir / f"fetch-{uuid.uuid4().hex}"
                store = BlockStore(directory / "blocks", max_bytes=2 * size * MB)
                try:
                    # A fresh exchange: new streams, the first fetch from a provider.
                    async with BlockExchange(host, store) as exchange:
                        return await clock(exchange.fetch(root, size * MB,
                                                          providers=[info["addr"]], timeout_s=600))
                finally:
                    store.close()
                    shutil.rmtree(directory)

            async def warm_fetch(size: int = size, root: str = root) -> tuple[float, bytes]:
                warm_store.gc()
                return await clock(warm.fetch(root, size * MB, providers=[info["addr"]],
                                              timeout_s=600))

            async def upstream_windows(size: int = size, root: str = root) -> tuple[float, bytes]:
                with upstream_window_updates():
                    return await warm_fetch(size, root)

            async def bitswap_fetch(size: int = size) -> tuple[float, bytes]:
                client = BitswapClient(host, MemoryBlockStore())
                client.set_nursery(nursery)
                await client.start()
                try:
                    elapsed, (data, _) = await clock(MerkleDag(client).fetch_file(
                        bytes.fromhex(info["bitswap_roots"][str(size)]), peer_id=provider,
                        timeout=60))
                    return elapsed, data
                finally:
                    await client.stop()

            probes: dict[str, Probe] = {"tcp": tcp_copy, "stream": stream_copy,
                                        "cold": cold_fetch, "warm": warm_fetch,
                                        "upstream": upstream_windows}
            if bitswap:
                probes["bitswap"] = bitswap_fetch
            await warm_fetch()  # first contact: opens the warm exchange's streams
            times: dict[str, list[float]] = {name: [] for name in probes}
            cpu = dict.fromkeys(probes, 0.0)
            for _ in range(repeat):  # interleaved, so load changes hit all alike
                for name, probe in probes.items():
                    elapsed, spent = await timed(probe, blob, provider_pid)
                    times[name].append(elapsed)
                    cpu[name] += spent
            row = {"size_mb": float(size)}
            row.update({name: size / statistics.median(samples) for name, samples in times.items()})
            row.update({f"{name}_cpu_ms_per_mb": 1000 * spent / (size * repeat)
                        for name, spent in cpu.items()})
            rows.append(row)
            print_row(row, bitswap)
        await warm.close_idle_streams()
        warm_store.close()
        nursery.cancel_scope.cancel()
    return rows


def print_row(row: dict[str, float], bitswap: bool) -> None:
    tcp = row["tcp"]
    line = (f"{row['size_mb']:>4.0f} MB | tcp {tcp:6.1f} | libp2p stream {row['stream']:5.1f} "
            f"({row['stream'] / tcp:.3f}) | fl-node cold {row['cold']:5.1f} ({row['cold'] / tcp:.3f})"
            f" warm {row['warm']:5.1f} ({row['warm'] / tcp:.3f})")
    if bitswap:
        line += (f" | bitswap {row['bitswap']:5.1f} ({row['bitswap'] / tcp:.3f})"
                 f" | fl-node/bitswap cold {row['cold'] / row['bitswap']:.2f}"
                 f" warm {row['warm'] / row['bitswap']:.2f}")
    stream_cpu = row["stream_cpu_ms_per_mb"]
    line += (f"\n       CPU ms per MB, both ends: tcp {row['tcp_cpu_ms_per_mb']:.2f} | libp2p stream "
             f"{stream_cpu:.2f} | fl-node cold {row['cold_cpu_ms_per_mb']:.2f} "
             f"({row['cold_cpu_ms_per_mb'] / stream_cpu:.2f}x the stream) warm "
             f"{row['warm_cpu_ms_per_mb']:.2f} ({row['warm_cpu_ms_per_mb'] / stream_cpu:.2f}x)")
    upstream = row["upstream_cpu_ms_per_mb"]
    line += (f"\n       warm with upstream's yamux window updates: {row['upstream']:5.1f} MB/s, "
             f"{upstream:.2f} CPU ms per MB; ours use {row['warm_cpu_ms_per_mb'] / upstream:.2f}x "
             "the CPU")
    if bitswap:
        line += f" | bitswap {row['bitswap_cpu_ms_per_mb']:.2f}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,50", help="blob sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-bitswap", action="store_true", help="skip the bitswap comparison")
    parser.add_argument("--serve", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 1 or len(sizes) > 255:
        parser.error("--sizes needs 1 to 255 whole numbers of MB, e.g. 1,10,50")
    bitswap = not args.no_bitswap
    from node.host import configure_libp2p_logging

    configure_libp2p_logging()
    if args.serve:
        trio.run(serve, Path(args.serve), sizes, bitswap)
        return
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp:
        workdir = Path(tmp)
        command = [sys.executable, "-m", "bench.block_fetch", "--serve", tmp, "--sizes", args.sizes]
        if not bitswap:
            command.append("--no-bitswap")
        provider = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
        try:
            assert provider.stdout is not None
            line = provider.stdout.readline()
            if not line:
                raise SystemExit("the provider process exited before it was ready")
            info = json.loads(line)
            print(f"provider ready; loopback, separate processes, median of {args.repeat}; "
                  "MB/s, (ratio to tcp)")
            trio.run(measure, info, sizes, args.repeat, workdir, bitswap, provider.pid)
        finally:
            assert provider.stdin is not None
            provider.stdin.close()
            try:
                provider.wait(timeout=30)
            except subprocess.TimeoutExpired:
                provider.kill()


if __name__ == "__main__":
    main()
