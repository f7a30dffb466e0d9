"""Block fetch throughput against a raw TCP copy on loopback, measured in the same run.

    python -m bench.block_fetch [--sizes 1,10,50] [--repeat 3] [--no-bitswap]

A provider process (this module with ``--serve``) publishes one random blob per size in
its block store, in py-libp2p's bitswap (``MerkleDag.add_bytes``), and behind a plain TCP
socket. This process then fetches each blob three ways and prints MB/s (MB = 10^6 bytes,
median of the repeats) with ratios:

- ``tcp``: a raw socket copy of the same bytes (the baseline: no libp2p, no hashing);
- ``fl-node``: ``BlockExchange.fetch`` into a fresh on-disk block store (default limits,
  durable writes, every block verified, the blob assembled in memory);
- ``bitswap``: ``MerkleDag.fetch_file`` with a fresh in-memory bitswap store.

Numbers vary with machine load; compare the ratios, which come from the same run.
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

MB = 1_000_000
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


async def timed(action: Callable[[], Awaitable[bytes]], expected: bytes) -> float:
    """Seconds one fetch took; fails loudly if the bytes are wrong."""
    start = time.perf_counter()
    got = await action()
    elapsed = time.perf_counter() - start
    if got != expected:
        raise SystemExit(f"fetched bytes differ from the published blob ({len(got)} bytes)")
    return elapsed


async def measure(info: dict[str, Any], sizes: list[int], repeat: int, workdir: Path,
                  bitswap: bool) -> list[dict[str, float]]:
    from libp2p.bitswap import BitswapClient, MemoryBlockStore
    from libp2p.bitswap.dag import MerkleDag

    from node.blocks import BlockExchange, BlockStore
    from node.host import HostConfig, connect, open_host

    rows = []
    async with open_host(HostConfig(workdir / "fetcher.key")) as host, trio.open_nursery() as nursery:
        provider = await connect(host, info["addr"])
        for index, size in enumerate(sizes):
            blob = make_blob(size)

            async def tcp_copy(index: int = index, size: int = size) -> bytes:
                stream = await trio.open_tcp_stream("127.0.0.1", info["tcp_port"])
                await stream.send_all(bytes([index]))
                chunks, received = [], 0
                while received < size * MB:
                    chunk = await stream.receive_some(1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    received += len(chunk)
                await stream.aclose()
                return b"".join(chunks)

            async def block_fetch(size: int = size) -> bytes:
                directory = workdir / f"fetch-{uuid.uuid4().hex}"
                store = BlockStore(directory / "blocks", max_bytes=2 * size * MB)
                try:
                    # A fresh exchange per fetch: cold streams, the conservative case.
                    async with BlockExchange(host, store) as exchange:
                        return await exchange.fetch(info["roots"][str(size)], size * MB,
                                                    providers=[info["addr"]], timeout_s=600)
                finally:
                    store.close()
                    shutil.rmtree(directory)

            async def bitswap_fetch(size: int = size) -> bytes:
                client = BitswapClient(host, MemoryBlockStore())
                client.set_nursery(nursery)
                await client.start()
                try:
                    data, _ = await MerkleDag(client).fetch_file(
                        bytes.fromhex(info["bitswap_roots"][str(size)]), peer_id=provider,
                        timeout=60)
                    return data
                finally:
                    await client.stop()

            times: dict[str, list[float]] = {"tcp": [], "fl-node": [], "bitswap": []}
            for _ in range(repeat):  # interleaved, so load changes hit all three alike
                times["tcp"].append(await timed(tcp_copy, blob))
                times["fl-node"].append(await timed(block_fetch, blob))
                if bitswap:
                    times["bitswap"].append(await timed(bitswap_fetch, blob))
            row = {"size_mb": float(size)}
            for name, samples in times.items():
                if samples:
                    row[name] = size / statistics.median(samples)
            rows.append(row)
            print_row(row, bitswap)
        nursery.cancel_scope.cancel()
    return rows


def print_row(row: dict[str, float], bitswap: bool) -> None:
    line = (f"{row['size_mb']:>5.0f} MB  tcp {row['tcp']:8.1f} MB/s  "
            f"fl-node {row['fl-node']:7.1f} MB/s ({row['fl-node'] / row['tcp']:.3f} x tcp)")
    if bitswap:
        line += (f"  bitswap {row['bitswap']:6.1f} MB/s ({row['bitswap'] / row['tcp']:.3f} x tcp)"
                 f"  fl-node/bitswap {row['fl-node'] / row['bitswap']:.2f}")
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
            print(f"provider ready; loopback, separate processes, median of {args.repeat}")
            trio.run(measure, info, sizes, args.repeat, workdir, bitswap)
        finally:
            assert provider.stdin is not None
            provider.stdin.close()
            try:
                provider.wait(timeout=30)
            except subprocess.TimeoutExpired:
                provider.kill()


if __name__ == "__main__":
    main()
