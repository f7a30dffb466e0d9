"""Gossip delivery latency over validated task gossip, against a raw libp2p stream, same run.

    python -m bench.gossip_latency [--peers 10] [--messages 50] [--interval-ms 300]
                                   [--settle-s 10] [--gossipsub 1.1|1.2,1.1]

One bootstrap and ``--peers`` nodes run in this process on 127.0.0.1, find each other
through the DHT (node.discovery) and join one task's gossip (node.gossip: strict signing,
topic validators, scoring). Publishers take turns announcing a model (a ~150-byte
ModelAnnouncement) every ``--interval-ms``; every other node timestamps the arrival. One
sample is one (message, receiver) pair: publish call to delivery on the consumer channel.

The baseline is the same number of one-way messages of the same size over one raw libp2p
stream (Noise + Yamux) between two of the same hosts: write to read. All hosts share one
trio loop, so both include the same scheduling cost; compare the ratio, not the
milliseconds, across machines.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID

from node.discovery import DiscoveryConfig, open_discovery, task_namespace
from node.gossip import GossipConfig, Received, TaskGossip, open_pubsub, open_task_gossip
from node.host import HostConfig, host_multiaddrs, open_host
from protocol.cid import cid_of
from protocol.messages import ModelAnnouncement, encode_message

CHAIN_ID = 31337
TASK = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
ROUND = 1
RAW_PROTOCOL = TProtocol("/fl-bench/oneway/1.0.0")
SETUP_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 30.0


def address_of(peer_id: PeerID) -> bytes:
    return hashlib.sha256(peer_id.to_bytes()).digest()[:20]


def announcement(host: IHost, index: int) -> ModelAnnouncement:
    worker = address_of(host.get_id())
    return ModelAnnouncement(CHAIN_ID, TASK, ROUND, worker, cid_of(b"update %d" % index), 600)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def raw_stream_latencies(
    sender: IHost, receiver: IHost, count: int, size: int
) -> list[float]:
    """One-way write-to-read times of ``count`` ``size``-byte messages over one stream."""
    arrivals: list[float] = []
    all_read = trio.Event()

    async def handler(stream: INetStream) -> None:
        buffer = b""
        while len(arrivals) < count:
            chunk = await stream.read(65536)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= size:
                buffer = buffer[size:]
                arrivals.append(time.perf_counter())
        all_read.set()

    receiver.set_stream_handler(RAW_PROTOCOL, handler)
    stream = await sender.new_stream(receiver.get_id(), [RAW_PROTOCOL])
    sent: list[float] = []
    for index in range(count):
        sent.append(time.perf_counter())
        await stream.write(index.to_bytes(4, "big") + b"\0" * (size - 4))
        # Wait for each message so the numbers are latencies, not queueing in a burst.
        with trio.fail_after(DRAIN_TIMEOUT_S):
            while len(arrivals) <= index:
                await trio.sleep(0)
    with trio.fail_after(DRAIN_TIMEOUT_S):
        await all_read.wait()
    await stream.close()
    return [arrived - started for started, arrived in zip(sent, arrivals, strict=True)]


async def run(
    peers: int, messages: int, interval_s: float, settle_s: float, versions: tuple[str, ...]
) -> int:
    registry: dict[PeerID, bytes] = {}
    namespace = task_namespace(CHAIN_ID, TASK)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    expected_per_message = peers - 1

    async def collect(gossip: TaskGossip, me: PeerID) -> None:
        async with gossip.messages("models") as channel:
            received: Received
            async for received in channel:
                message = received.message
                if received.signer != me and isinstance(message, ModelAnnouncement):
                    latencies.append(time.perf_counter() - sent_at[message.cid])

    with tempfile.TemporaryDirectory(prefix="fl-bench-gossip-") as workdir:
        keys = Path(workdir)
        async with AsyncExitStack() as stack:
            bootstrap = await stack.enter_async_context(open_host(HostConfig(keys / "b.key")))
            await stack.enter_async_context(open_discovery(bootstrap, DiscoveryConfig()))
            bootstrap_addr = host_multiaddrs(bootstrap)[0]
            discovery_config = DiscoveryConfig(
                bootstrap_addrs=(bootstrap_addr,), target_peers=peers - 1
            )
            hosts: list[IHost] = []
            gossips: list[TaskGossip] = []
            for index in range(peers):
                host = await stack.enter_async_context(open_host(HostConfig(keys / f"{index}.key")))
                registry[host.get_id()] = address_of(host.get_id())
                await stack.enter_async_context(open_discovery(host, discovery_config, [namespace]))
                node = await stack.enter_async_context(
                    open_pubsub(host, GossipConfig(versions=versions))
                )
                gossip = await stack.enter_async_context(
                    open_task_gossip(node, CHAIN_ID, TASK, lambda: ROUND, registry.get)
                )
                hosts.append(host)
                gossips.append(gossip)

            collectors = await stack.enter_async_context(trio.open_nursery())
            for host, gossip in zip(hosts, gossips, strict=True):
                collectors.start_soon(collect, gossip, host.get_id())
            setup_started = time.perf_counter()
            with trio.fail_after(SETUP_TIMEOUT_S):
                while not all(
                    len(g.node.router.mesh.get(g.topics["models"], ())) >= min(peers - 1, 4)
                    for g in gossips
                ):
                    await trio.sleep(0.05)
            print(
                f"{peers} peers discovered each other and formed the mesh in "
                f"{time.perf_counter() - setup_started:.1f} s"
            )

            # Discovery's first lookups and advertisements keep the loop busy for a few
            # seconds after the mesh forms; measure on a quiet network.
            await trio.sleep(settle_s)
            # The baseline first.
            size = len(encode_message(announcement(hosts[0], 0)))
            raw_samples = await raw_stream_latencies(hosts[0], hosts[1], messages, size)

            for index in range(messages):
                publisher = index % peers
                message = announcement(hosts[publisher], index)
                sent_at[message.cid] = time.perf_counter()
                await gossips[publisher].publish(message)
                await trio.sleep(interval_s)
            expected = messages * expected_per_message
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                while len(latencies) < expected:
                    await trio.sleep(0.05)
            gossip_samples = list(latencies)
            collectors.cancel_scope.cancel()  # entered last: nothing else unwinds inside it

    delivered = len(gossip_samples) / expected
    gossip_p50, gossip_p99 = percentile(gossip_samples, 0.5), percentile(gossip_samples, 0.99)
    raw_p50, raw_p99 = percentile(raw_samples, 0.5), percentile(raw_samples, 0.99)
    print(
        f"gossipsub {','.join(versions)}, message size {size} B, {messages} messages "
        f"every {1000 * interval_s:.0f} ms, {len(gossip_samples)} deliveries"
    )
    print(f"delivered: {100 * delivered:.1f}% of {expected}")
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    print(
        f"{'gossip (validated)':24}{1000 * gossip_p50:10.2f}{1000 * gossip_p99:10.2f}"
        f"{1000 * statistics.fmean(gossip_samples):10.2f}"
    )
    print(
        f"{'raw libp2p stream':24}{1000 * raw_p50:10.2f}{1000 * raw_p99:10.2f}"
        f"{1000 * statistics.fmean(raw_samples):10.2f}"
    )
    print(f"ratio gossip/raw: p50 {gossip_p50 / raw_p50:.1f}x, p99 {gossip_p99 / raw_p99:.1f}x")
    return 0 if delivered == 1.0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=300.0,
        help="pause between publishes; all hosts share one Python thread, so a faster pace "
        "measures queueing rather than latency",
    )
    parser.add_argument("--settle-s", type=float, default=10.0, help="quiet time before measuring")
    parser.add_argument(
        "--gossipsub", default="1.1", help="GossipSub versions to offer, e.g. 1.1 or 1.2,1.1"
    )
    args = parser.parse_args(argv)
    if args.peers < 2 or args.messages < 1 or args.interval_ms < 0 or args.settle_s < 0:
        parser.error("need --peers >= 2, --messages >= 1, --interval-ms >= 0, --settle-s >= 0")
    versions = tuple(v.strip() for v in args.gossipsub.split(","))
    try:
        GossipConfig(versions=versions)
    except ValueError as exc:
        parser.error(str(exc))
    return trio.run(
        run, args.peers, args.messages, args.interval_ms / 1000, args.settle_s, versions
    )


if __name__ == "__main__":
    sys.exit(main())
