"""Yamux window updates a reader sends, and its CPU, with fl-node's policy against
py-libp2p's, same run.

    python -m bench.window_updates [--messages 2000] [--size 300] [--blob-mb 20]

Two hosts in this process on 127.0.0.1, one Noise + Yamux stream between them. The writer
sends ``--messages`` length-prefixed messages of ``--size`` bytes, read as gossipsub reads
an RPC (``read_varint_prefixed_bytes_limited``: the length byte by byte, then the body),
and then a ``--blob-mb`` MB blob read in 256 KiB blocks, as the block exchange reads. Each
pattern runs twice, interleaved: with ``node.libp2p_compat.WindowWaitingYamuxStream``'s
updates (once half a window is read) and with upstream's (on every read that leaves less).
It prints the WINDOW_UPDATE frames the reader sent and the process's CPU seconds
(both hosts: each update is a Noise frame written by one and read by the other), and
ours / upstream's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.stream_muxer.yamux import yamux as upstream_yamux
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from node.host import HostConfig, connect, host_multiaddrs, open_host
from node.libp2p_compat import upstream_window_updates

PROTOCOL = TProtocol("/fl-bench/window-updates/1.0.0")
BLOCK = 256 * 1024
MB = 1_000_000


@dataclass
class Cost:
    updates: int
    cpu_s: float


class UpdateCounter:
    """Counts WINDOW_UPDATE frames every yamux stream of this process sends."""

    def __init__(self) -> None:
        self.count = 0
        self._original = upstream_yamux.YamuxStream.send_window_update

    def __enter__(self) -> UpdateCounter:
        original = self._original

        async def counted(stream: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            await original(stream, *args, **kwargs)

        upstream_yamux.YamuxStream.send_window_update = counted  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        upstream_yamux.YamuxStream.send_window_update = self._original  # type: ignore[method-assign]


async def read_exactly(stream: INetStream, size: int) -> None:
    left = size
    while left:
        chunk = await stream.read(min(left, BLOCK))
        if not chunk:
            raise EOFError(f"stream ended with {left} bytes unread")
        left -= len(chunk)


Pattern = Callable[[INetStream], Awaitable[None]]


async def measure(open_stream: Callable[[], Awaitable[INetStream]], send: Pattern,
                  read_done: Callable[[], Awaitable[None]], counter: UpdateCounter,
                  hysteresis_only: bool) -> Cost:
    """One pattern over a fresh stream with one policy: the updates sent and CPU spent."""
    with nullcontext() if hysteresis_only else upstream_window_updates():
        before, cpu = counter.count, time.process_time()
        stream = await open_stream()
        await send(stream)
        await read_done()
        await stream.close()
        return Cost(counter.count - before, time.process_time() - cpu)


async def run(messages: int, size: int, blob_mb: int, repeat: int, workdir: Path) -> dict[str, list[Cost]]:
    payload = encode_varint_prefixed(b"x" * size)
    blob = bytes(blob_mb * MB)
    results: dict[str, list[Cost]] = {}
    async with open_host(HostConfig(workdir / "writer.key")) as writer, open_host(
        HostConfig(workdir / "reader.key")
    ) as reader:
        finished: trio.MemorySendChannel[None]
        finished, wait_done = trio.open_memory_channel[None](0)
        kind = {"pattern": "gossip"}

        async def handler(stream: INetStream) -> None:
            if kind["pattern"] == "gossip":
                for _ in range(messages):
                    await read_varint_prefixed_bytes_limited(stream, 1 << 20)
            else:
                await read_exactly(stream, len(blob))
            await finished.send(None)

        reader.set_stream_handler(PROTOCOL, handler)
        await connect(writer, host_multiaddrs(reader)[0])

        async def open_stream() -> INetStream:
            return await writer.new_stream(reader.get_id(), [PROTOCOL])

        async def send_gossip(stream: INetStream) -> None:
            for _ in range(messages):
                await stream.write(payload)

        async def send_blob(stream: INetStream) -> None:
            for start in range(0, len(blob), BLOCK):
                await stream.write(blob[start : start + BLOCK])

        async def read_done() -> None:
            await wait_done.receive()

        with UpdateCounter() as counter:
            for pattern, send in (("gossip", send_gossip), ("blob", send_blob)):
                kind["pattern"] = pattern
                for _ in range(repeat):  # interleaved, so load changes hit both alike
                    for policy, hysteresis in (("ours", True), ("upstream", False)):
                        cost = await measure(open_stream, send, read_done, counter, hysteresis)
                        results.setdefault(f"{pattern} {policy}", []).append(cost)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=300, help="bytes per gossip-sized message")
    parser.add_argument("--blob-mb", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.messages, args.size, args.blob_mb, args.repeat) < 1:
        parser.error("--messages, --size, --blob-mb and --repeat must be at least 1")
    from node.host import configure_libp2p_logging

    configure_libp2p_logging()
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp:
        results = trio.run(run, args.messages, args.size, args.blob_mb, args.repeat, Path(tmp))
    print(f"one stream, {args.messages} messages of {args.size} B, then {args.blob_mb} MB in "
          f"{BLOCK // 1024} KiB reads; totals of {args.repeat} interleaved runs each")
    for pattern in ("gossip", "blob"):
        ours, upstream = results[f"{pattern} ours"], results[f"{pattern} upstream"]
        updates = [sum(c.updates for c in costs) for costs in (ours, upstream)]
        cpu = [sum(c.cpu_s for c in costs) for costs in (ours, upstream)]
        print(f"{pattern:6s} window updates: ours {updates[0]:6d}, upstream {updates[1]:6d} "
              f"({updates[0] / max(updates[1], 1):.4f}x) | CPU s: ours {cpu[0]:.2f}, upstream "
              f"{cpu[1]:.2f} ({cpu[0] / cpu[1]:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
