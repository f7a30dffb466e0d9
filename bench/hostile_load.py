"""An honest member's block fetch from a node under attack, against the same fetch unloaded.

    python -m bench.hostile_load [--repeat 5] [--flood 2000] [--identities 8] [--streams 8]

Three processes on 127.0.0.1, so that the node's CPU is its own:

- the node under test (this module with ``--node``): a host with gossip (strict signing,
  the task's topics and validators) and a block exchange serving a 64 KiB block and a
  ~1 MB blob; the honest fetcher is a registered task member;
- the attacker (``--attack``): ``--identities`` x ``--streams`` block streams that never
  complete a request (one per identity trickles a byte every 0.3 s; every dropped stream
  is opened again), and a ``--flood`` of forged-signature gossip messages on the task's
  models topic in the honest member's name, from fresh identities whenever one is cut off;
- this process: the honest member (``--stranger``: a peer the node does not know as a
  member), fetching the block and the blob ``--repeat`` times unloaded, then again until
  the flood is over (at least ``--repeat`` times) while the attack runs.

It prints the median fetch times, the ratio loaded/unloaded (goal <= 5x) and the node's
CPU during the attack: its process CPU seconds over the attack's wall seconds (goal < 1
core). Numbers swing with machine load; the ratios come from the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

CHAIN_ID = 31337
TASK = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
ROUND = 5
BLOCK_BYTES = 64 * 1024
BLOB_BYTES = 1_000_000
LIFETIME_S = 15 * 60  # helper processes exit on their own after this long
TRICKLE_EVERY_S = 0.3
REOPEN_PAUSE_S = 0.2
FLOOD_BATCH = 50
FLOOD_PAUSE_S = 0.05  # between batches: the flood lasts while the loaded fetches run
FETCH_TIMEOUT_S = 120.0


def address_of(peer_id: Any) -> bytes:
    return hashlib.sha256(peer_id.to_bytes()).digest()[:20]


async def until_stdin_closes() -> None:
    with trio.move_on_after(LIFETIME_S):
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


# --- the node under test --------------------------------------------------------------------


async def run_node(workdir: Path, honest: str, stranger: bool) -> None:
    from libp2p.peer.id import ID as PeerID

    from node.blocks import BlockExchange, BlockStore
    from node.gossip import open_pubsub, open_task_gossip
    from node.host import HostConfig, host_multiaddrs, open_host
    from protocol.state.records import Role

    member = PeerID.from_base58(honest)
    registry = {member: address_of(member)}
    roles = {address_of(member): Role.WORKER}
    rng = __import__("random").Random(7)
    async with open_host(HostConfig(workdir / "node.key")) as host:
        registry[host.get_id()] = address_of(host.get_id())
        roles[address_of(host.get_id())] = Role.WORKER
        async with open_pubsub(host) as gossip_node, open_task_gossip(
            gossip_node, CHAIN_ID, TASK, lambda: ROUND, registry.get, role_of=roles.get
        ) as gossip:
            with BlockStore(workdir / "node-blocks") as store:
                serves_first = set() if stranger else {member}  # the block server's members
                async with BlockExchange(host, store, is_member=serves_first.__contains__) as ex:
                    block = await ex.publish(rng.randbytes(BLOCK_BYTES))
                    blob = await ex.publish(rng.randbytes(BLOB_BYTES))
                    print(json.dumps({"addr": host_multiaddrs(host)[0], "block": block,
                                      "blob": blob, "topic": gossip.topics["models"],
                                      "pid": os.getpid()}), flush=True)
                    await until_stdin_closes()


# --- the attacker ---------------------------------------------------------------------------


async def hold_streams(key_path: Path, target: str, streams: int, opened: list[int]) -> None:
    """One identity keeping ``streams`` block streams open without a complete request."""
    from node.blocks import PROTOCOL_ID
    from node.host import HostConfig, open_host, parse_peer_multiaddr

    info = parse_peer_multiaddr(target)

    async def hold_one(host: Any, trickle: bool) -> None:
        while True:
            try:
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [PROTOCOL_ID])
                opened[0] += 1
                if trickle:
                    await stream.write(b"\xc0\x3e")  # announces an 8,000-byte request
                    while True:
                        await trio.sleep(TRICKLE_EVERY_S)
                        await stream.write(b"\x00")
                else:
                    await stream.read(1)
            except Exception:  # reset, refused, disconnected: open it again
                pass
            opened[1] += 1
            await trio.sleep(REOPEN_PAUSE_S)

    async with open_host(HostConfig(key_path)) as host, trio.open_nursery() as nursery:
        for index in range(streams):
            nursery.start_soon(hold_one, host, index == 0)


def forged_frames(topic: str, impersonated: Any, data: bytes, count: int, first: int) -> list[bytes]:
    """Framed pubsub RPCs, each one message in ``impersonated``'s name with a random signature."""
    from libp2p.pubsub.pb import rpc_pb2

    from node.blocks.unixfs import encode_varint

    frames = []
    for index in range(first, first + count):
        message = rpc_pb2.Message(from_id=impersonated.to_bytes(), data=data,
                                  seqno=index.to_bytes(8, "big"), topicIDs=[topic],
                                  signature=os.urandom(64))
        body = rpc_pb2.RPC(publish=[message]).SerializeToString()
        frames.append(encode_varint(len(body)) + body)
    return frames


async def flood(workdir: Path, target: str, topic: str, honest: str, count: int,
                report: dict[str, int]) -> None:
    """``count`` forged messages; a fresh identity takes over whenever one is cut off."""
    from libp2p.peer.id import ID as PeerID
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

    from node.host import HostConfig, open_host, parse_peer_multiaddr
    from protocol.cid import cid_of
    from protocol.messages import ModelAnnouncement, encode_message

    info = parse_peer_multiaddr(target)
    impersonated = PeerID.from_base58(honest)
    body = encode_message(ModelAnnouncement(CHAIN_ID, TASK, ROUND, address_of(impersonated),
                                            cid_of(b"forged update"), 600))
    frames = forged_frames(topic, impersonated, body, count, 0)
    identity = 0
    while report["sent"] < count and identity < 64:
        identity += 1
        async with open_host(HostConfig(workdir / f"flooder{identity}.key")) as host:
            try:
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [PROTOCOL_ID_V11])
                while report["sent"] < count:
                    batch = frames[report["sent"] : report["sent"] + FLOOD_BATCH]
                    await stream.write(b"".join(batch))
                    report["sent"] += len(batch)
                    await trio.sleep(FLOOD_PAUSE_S)
            except Exception:  # cut off: the next identity goes on
                report["cut_off"] += 1
    report["identities"] = identity


async def run_attack(workdir: Path, target: str, topic: str, honest: str, count: int,
                     identities: int, streams: int) -> None:
    opened = [0, 0]  # streams opened, streams lost
    report = {"sent": 0, "cut_off": 0, "identities": 0}
    async with trio.open_nursery() as nursery:
        for index in range(identities):
            nursery.start_soon(hold_streams, workdir / f"holder{index}.key", target, streams,
                               opened)
        with trio.fail_after(60):
            while opened[0] < identities * streams:
                await trio.sleep(0.05)
        print(json.dumps({"holding": opened[0]}), flush=True)
        await flood(workdir, target, topic, honest, count, report)
        print(json.dumps({"flood": report, "streams_opened": opened[0],
                          "streams_lost": opened[1]}), flush=True)
        await until_stdin_closes()
        nursery.cancel_scope.cancel()


# --- the honest member, measuring -----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-m", "bench.hostile_load", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


async def read_json_line(process: subprocess.Popen[str], timeout_s: float = 120.0) -> Any:
    assert process.stdout is not None
    with trio.fail_after(timeout_s):
        line = await trio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)
    if not line:
        raise SystemExit(f"a helper process exited early (status {process.poll()})")
    return json.loads(line)


async def fetch_times(exchange: Any, cid: str, size: int, provider: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        data = await exchange.fetch(cid, size, providers=[provider], timeout_s=FETCH_TIMEOUT_S)
        times.append(time.perf_counter() - start)
        if len(data) != size:
            raise SystemExit(f"fetched {len(data)} bytes of {cid}, expected {size}")
        await trio.to_thread.run_sync(exchange.store.gc)  # unpinned: the next fetch is cold
    return times


async def measure(args: argparse.Namespace, workdir: Path) -> None:
    from node.blocks import BlockExchange, BlockStore
    from node.host import HostConfig, load_or_create_identity, open_host

    honest_key = workdir / "honest.key"
    from libp2p.peer.id import ID as PeerID

    honest_id = PeerID.from_pubkey(load_or_create_identity(honest_key).public_key)
    node = spawn("--node", str(workdir), "--honest", honest_id.to_base58(),
                 *(["--stranger"] if args.stranger else []))
    attack: subprocess.Popen[str] | None = None
    try:
        info = await read_json_line(node)
        async with open_host(HostConfig(honest_key)) as host:
            with BlockStore(workdir / "honest-blocks") as store:
                exchange = BlockExchange(host, store)
                cases = [("block", info["block"], BLOCK_BYTES), ("blob", info["blob"], BLOB_BYTES)]
                await fetch_times(exchange, info["block"], BLOCK_BYTES, info["addr"], 1)  # dial
                unloaded = {name: await fetch_times(exchange, cid, size, info["addr"], args.repeat)
                            for name, cid, size in cases}
                attack = spawn("--attack", str(workdir), "--target", info["addr"], "--topic",
                               info["topic"], "--honest", honest_id.to_base58(), "--flood",
                               str(args.flood), "--identities", str(args.identities),
                               "--streams", str(args.streams))
                started, cpu_before = time.perf_counter(), cpu_seconds(info["pid"])
                holding = await read_json_line(attack)
                loaded: dict[str, list[float]] = {name: [] for name, _, _ in cases}
                outcome: dict[str, Any] = {}

                async def flood_ends() -> None:
                    outcome.update(await read_json_line(attack, timeout_s=600))

                # Fetch until the flood is over, and at least --repeat times each.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood_ends)
                    while not outcome or min(map(len, loaded.values())) < args.repeat:
                        for name, cid, size in cases:
                            loaded[name] += await fetch_times(exchange, cid, size, info["addr"], 1)
                wall, cpu = time.perf_counter() - started, cpu_seconds(info["pid"]) - cpu_before
                await exchange.close_idle_streams()
    finally:
        for process in (attack, node):
            if process is not None and process.stdin is not None:
                process.stdin.close()
        for process in (attack, node):
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    print(f"attack: {args.identities} identities x {args.streams} held block streams "
          f"({holding['holding']} open at once before the fetches; {outcome['streams_opened']} "
          f"opened, {outcome['streams_lost']} ended by the node in all), forged flood "
          f"{outcome['flood']['sent']} messages from {outcome['flood']['identities']} identities "
          f"({outcome['flood']['cut_off']} cut off)")
    who = "a stranger" if args.stranger else "a task member"
    print(f"honest fetcher ({who}), median fetch time (seconds):")
    for name, _, size in cases:
        before, during = statistics.median(unloaded[name]), statistics.median(loaded[name])
        print(f"  {name} ({size} bytes): unloaded {before:.4f} (n={len(unloaded[name])})  "
              f"loaded {during:.4f} (n={len(loaded[name])})  "
              f"ratio loaded/unloaded {during / before:.2f}x (goal <= 5x)")
    print(f"node CPU during the attack: {cpu:.2f} CPU s / {wall:.2f} wall s = "
          f"{cpu / wall:.2f} cores (goal < 1)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--flood", type=int, default=2000, help="forged gossip messages")
    parser.add_argument("--identities", type=int, default=8, help="stream-holding identities")
    parser.add_argument("--streams", type=int, default=8, help="held streams per identity")
    parser.add_argument("--stranger", action="store_true",
                        help="the honest fetcher is not a task member (no reserved slots)")
    parser.add_argument("--node", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--attack", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--honest", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from node.host import configure_libp2p_logging

    configure_libp2p_logging()
    if args.node is not None:
        trio.run(run_node, args.node, args.honest, args.stranger)
    elif args.attack is not None:
        trio.run(run_attack, args.attack, args.target, args.topic, args.honest, args.flood,
                 args.identities, args.streams)
    else:
        with tempfile.TemporaryDirectory(prefix="hostile-load-") as workdir:
            trio.run(measure, args, Path(workdir))


if __name__ == "__main__":
    main()
