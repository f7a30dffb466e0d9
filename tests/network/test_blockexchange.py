"""Block exchange between real libp2p hosts on 127.0.0.1 (node.blocks.exchange).

Every timeout here is a hang guard or a protocol limit under test, never a timing assertion.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from node.blocks.exchange import (
    PROTOCOL_ID,
    RESPONSE_HEADER,
    STATUS_BLOCK,
    STATUS_BUSY,
    STATUS_DONT_HAVE,
    BlobTooLargeError,
    BlockExchange,
    BlockFetchError,
    BlockUnavailableError,
    ExchangeLimits,
    FetchTimeoutError,
    decode_request,
    encode_request,
)
from node.blocks.store import BlockStore, BlockStoreFullError
from node.blocks.unixfs import (
    CHUNK_SIZE,
    Link,
    build_file_dag,
    decode_file_node,
    encode_file_node,
    is_raw,
)
from node.host import HostConfig, host_multiaddrs, open_host
from protocol.cid import cid_of, verify_block
from protocol.envelope import generate_keypair, open_envelope, seal
from protocol.errors import CIDError
from tests.network.conftest import HANG_GUARD_S, Network, open_network, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000


async def exchange_on(
    net: Network, data_dir: Path, limits: ExchangeLimits | None = None, **callbacks: object
) -> BlockExchange:
    """A host with a block store under ``data_dir`` and a started exchange, torn down with net."""
    host = await net.host(echo=False)
    store = BlockStore(data_dir / "blocks")
    net.stack.callback(store.close)
    exchange = BlockExchange(host, store, limits=limits, **callbacks)  # type: ignore[arg-type]
    await net.stack.enter_async_context(exchange)
    return exchange


def provider_of(exchange: BlockExchange) -> str:
    return host_multiaddrs(exchange.host)[0]


def assert_store_holds_exactly(store: BlockStore, blob: bytes) -> None:
    """Only the blob's own blocks were stored, and each one verifies."""
    _, blocks = build_file_dag(blob)
    assert set(store.cids()) == {block.cid for block in blocks}
    for cid in store.cids():
        verify_block(cid, store.get(cid))


async def read_exactly(stream: INetStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


async def read_request(stream: INetStream) -> list[str]:
    """Server side of one request, for the hand-written providers below."""
    with trio.fail_after(HANG_GUARD_S):
        length, shift = 0, 0
        while True:
            byte = (await read_exactly(stream, 1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return decode_request(await read_exactly(stream, length), max_cids=64)


BlockHandler = Callable[[INetStream, str, bytes], Awaitable[bool]]


def scripted_provider(blocks: dict[str, bytes],
                      on_block: BlockHandler) -> Callable[[INetStream], Awaitable[None]]:
    """A stream handler that answers requests through ``on_block`` (False: stop answering)."""

    async def handler(stream: INetStream) -> None:
        for cid in await read_request(stream):
            data = blocks.get(cid)
            if data is None:
                await stream.write(RESPONSE_HEADER.pack(STATUS_DONT_HAVE, 0))
            elif not await on_block(stream, cid, data):
                return
        await stream.close()

    return handler


async def honest(stream: INetStream, cid: str, data: bytes) -> bool:
    await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
    return True


# --- the main path ------------------------------------------------------------------------


async def test_ten_mb_sealed_blob_fetched_by_five_peers_at_once(tmp_path: Path) -> None:
    keys = [generate_keypair() for _ in range(5)]
    plaintext = os.urandom(10 * MB)
    sealed = seal(plaintext, [public for _, public in keys])
    async with open_network(tmp_path) as net:
        publisher = await exchange_on(net, tmp_path / "publisher")
        fetchers = [await exchange_on(net, tmp_path / f"fetcher{i}") for i in range(5)]
        root = await publisher.publish(sealed)
        assert root == build_file_dag(sealed)[0]
        assert publisher.store.pins() == {root}
        results: dict[int, bytes] = {}

        async def fetch(index: int) -> None:
            results[index] = await fetchers[index].fetch(
                root, max_size=11 * MB, providers=[provider_of(publisher)], timeout_s=HANG_GUARD_S
            )

        async with trio.open_nursery() as nursery:
            for index in range(5):
                nursery.start_soon(fetch, index)
        for index, (private, _) in enumerate(keys):
            assert results[index] == sealed
            assert open_envelope(results[index], private) == plaintext
            assert_store_holds_exactly(fetchers[index].store, sealed)


# --- many fetches at once under load ------------------------------------------------------

UPDATE_BYTES = 6_700_000  # a sealed update of the paper's CNN
# Fetches under the GIL-busy thread below take tens of seconds on a loaded 2-core machine;
# this is only a hang guard.
LOADED_FETCH_GUARD_S = 300.0
logger = logging.getLogger(__name__)


@contextmanager
def gil_busy_thread() -> Iterator[None]:
    """A pure-Python busy loop in a thread, as a node's training thread is between torch ops.

    It takes the GIL from the trio thread every switch interval, which cuts what one trio
    loop moves by an order of magnitude: the load under which the runtime saw stalls.
    """
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, name="gil-busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def update_blob(keys: list[bytes]) -> bytes:
    return seal(os.urandom(UPDATE_BYTES), keys)


async def fetch_all_at_once(
    pairs: list[tuple[BlockExchange, str, BlockExchange, bytes]]
) -> dict[int, float]:
    """Start every (fetcher, root, provider, blob) fetch at the same moment; check the bytes.

    Returns each fetch's duration, logged for the report (never asserted on).
    """
    took: dict[int, float] = {}

    async def fetch(index: int) -> None:
        fetcher, root, provider, blob = pairs[index]
        started = trio.current_time()
        got = await fetcher.fetch(root, 2 * UPDATE_BYTES, providers=[provider_of(provider)],
                                  timeout_s=LOADED_FETCH_GUARD_S)
        took[index] = trio.current_time() - started
        assert got == blob

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(len(pairs)):
            nursery.start_soon(fetch, index)
    durations = sorted(took.values())
    logger.info("%d fetches at once: all done in %.1f s; each %.1f..%.1f s (median %.1f)",
                len(pairs), trio.current_time() - started, durations[0], durations[-1],
                durations[len(durations) // 2])
    return took


def dropped_providers(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "node.blocks.exchange" and r.getMessage().startswith("dropping provider")]


@pytest.mark.skipif(
    not os.environ.get("FL_STRESS"),
    reason="stress test (set FL_STRESS=1): its outcome depends on how loaded the machine "
    "already is — on a 2-core box running a localnet beside it, 10 s silences drop providers",
)
async def test_all_hosts_fetch_all_updates_at_once_under_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Six nodes in one trio loop each fetch the other five's updates at the same moment,
    while a thread holds the GIL as training does: per-stream read timeouts, or 4 x 1 MiB
    queued per connection, would drop healthy providers here and fail fetches."""
    caplog.set_level(logging.INFO, logger="node.blocks.exchange")
    keys = [public for _, public in (generate_keypair() for _ in range(6))]
    async with open_network(tmp_path) as net:
        nodes = [await exchange_on(net, tmp_path / f"node{i}") for i in range(6)]
        blobs = [update_blob(keys) for _ in nodes]
        roots = [await node.publish(blob) for node, blob in zip(nodes, blobs, strict=True)]
        pairs = [(nodes[i], roots[j], nodes[j], blobs[j])
                 for i in range(6) for j in range(6) if i != j]
        # Connected one pair at a time first: when two hosts dial each other at the same
        # moment (max_connections_per_peer=1), node.host sometimes closes one of the two
        # connections under the streams opened on it, a separate problem (see the report).
        for i, node in enumerate(nodes):
            for other in nodes[i + 1 :]:
                await node.host.connect(PeerInfo(other.host.get_id(), other.host.get_addrs()))
        with gil_busy_thread():
            await fetch_all_at_once(pairs)
        for i, node in enumerate(nodes):
            for j in range(6):
                assert node.store.has(roots[j]), f"node {i} lacks the root of update {j}"
    assert dropped_providers(caplog) == []


async def test_two_peers_fetch_from_each_other_at_once_over_pooled_streams(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both directions of one connection carry blocks at once, twice: the second time over
    streams pooled by the first (yamux windows and pooled streams used both ways)."""
    caplog.set_level(logging.INFO, logger="node.blocks.exchange")
    keys = [public for _, public in (generate_keypair() for _ in range(2))]
    async with open_network(tmp_path) as net:
        left = await exchange_on(net, tmp_path / "left")
        right = await exchange_on(net, tmp_path / "right")
        with gil_busy_thread():
            for _ in range(2):
                pairs = []
                for _ in range(3):
                    for fetcher, provider in ((left, right), (right, left)):
                        blob = update_blob(keys)
                        pairs.append((fetcher, await provider.publish(blob), provider, blob))
                await fetch_all_at_once(pairs)
        assert left.streams_served + right.streams_served > 0  # pooled streams stay open
    assert dropped_providers(caplog) == []


async def test_fetched_blob_is_served_onward_and_local_blocks_are_reused(tmp_path: Path) -> None:
    blob = os.urandom(3 * CHUNK_SIZE + 100)
    async with open_network(tmp_path) as net:
        origin = await exchange_on(net, tmp_path / "origin")
        relay = await exchange_on(net, tmp_path / "relay")
        last = await exchange_on(net, tmp_path / "last")
        root = await origin.publish(blob)
        assert await relay.fetch(root, len(blob), providers=[provider_of(origin)], pin=True) == blob
        assert relay.store.pins() == {root}
        # The origin is not named: the relay alone must serve every block.
        assert await last.fetch(root, len(blob), providers=[provider_of(relay)]) == blob
        # Everything is local now: no provider is needed at all.
        assert await last.fetch(root, len(blob)) == blob


async def test_a_fetch_stores_without_fsync_and_a_publish_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fetched block is verified before it is stored and on every read, so it needs
    no fsync (one a power cut damaged is fetched again); the blob a node publishes, which
    it may be the only holder of, is written durably."""
    blob = os.urandom(3 * CHUNK_SIZE + 100)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    async with open_network(tmp_path) as net:
        origin = await exchange_on(net, tmp_path / "origin")
        fetcher = await exchange_on(net, tmp_path / "fetcher")
        root = await origin.publish(blob)
        published = len(synced)
        assert published >= 2 * 5  # each of the 5 blocks and its directory
        assert await fetcher.fetch(root, len(blob), providers=[provider_of(origin)]) == blob
        assert len(synced) == published
        assert_store_holds_exactly(fetcher.store, blob)


async def test_several_blobs_fetched_concurrently_by_one_node(tmp_path: Path) -> None:
    blobs = [os.urandom(size) for size in (5000, 2 * CHUNK_SIZE + 1, 6 * CHUNK_SIZE)]
    async with open_network(tmp_path) as net:
        first = await exchange_on(net, tmp_path / "first")
        second = await exchange_on(net, tmp_path / "second")
        fetcher = await exchange_on(net, tmp_path / "fetcher")
        roots = [await (first if i % 2 else second).publish(blob) for i, blob in enumerate(blobs)]
        got: dict[str, bytes] = {}

        async def fetch(root: str) -> None:
            got[root] = await fetcher.fetch(
                root,
                10 * MB,
                timeout_s=HANG_GUARD_S,
                providers=[provider_of(first), provider_of(second)],
            )

        async with trio.open_nursery() as nursery:
            for root in roots:
                nursery.start_soon(fetch, root)
        assert [got[root] for root in roots] == blobs


async def test_providers_come_from_the_find_providers_callback(tmp_path: Path) -> None:
    blob = os.urandom(2 * CHUNK_SIZE)
    asked: list[str] = []
    async with open_network(tmp_path) as net:
        publisher = await exchange_on(net, tmp_path / "publisher")
        publisher_info = PeerInfo(publisher.host.get_id(), publisher.host.get_addrs())

        async def find_providers(cid: str) -> list[PeerInfo]:
            asked.append(cid)
            return [publisher_info]

        fetcher = await exchange_on(net, tmp_path / "fetcher", find_providers=find_providers)
        root = await publisher.publish(blob)
        assert await fetcher.fetch(root, len(blob), timeout_s=HANG_GUARD_S) == blob
        assert asked == [root]


# --- malicious and failing providers ------------------------------------------------------


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


@pytest.mark.parametrize("lie", ["flipped byte", "padded block", "wrong root"])
async def test_tampered_blocks_are_rejected_and_another_provider_serves(
    tmp_path: Path, lie: str
) -> None:
    blob = os.urandom(4 * CHUNK_SIZE)
    root, blocks = build_file_dag(blob)
    by_cid = {block.cid: block.data for block in blocks}

    async def tamper(stream: INetStream, cid: str, data: bytes) -> bool:
        if lie == "flipped byte" and is_raw(cid):
            data = flip_last_byte(data)
        elif lie == "padded block" and is_raw(cid):
            data = data + b"\x00"
        elif lie == "wrong root" and cid == root:
            data = by_cid[blocks[0].cid]
        await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
        return True

    reported: list[tuple[PeerID, str]] = []
    async with open_network(tmp_path) as net:
        liar = await net.host(echo=False)
        liar.set_stream_handler(PROTOCOL_ID, scripted_provider(by_cid, tamper))
        publisher = await exchange_on(net, tmp_path / "publisher")
        await publisher.publish(blob)
        fetcher = await exchange_on(
            net, tmp_path / "fetcher", on_bad_peer=lambda peer, why: reported.append((peer, why))
        )
        # The liar is listed first, so it is asked first.
        providers = [host_multiaddrs(liar)[0], provider_of(publisher)]
        got = await fetcher.fetch(root, len(blob), providers=providers, timeout_s=HANG_GUARD_S)
        assert got == blob
        assert [peer for peer, _ in reported] == [liar.get_id()]
        assert "bad block" in reported[0][1] or "offered" in reported[0][1]
        assert_store_holds_exactly(fetcher.store, blob)

        # With the liar as the only provider the fetch fails, naming it.
        alone = await exchange_on(net, tmp_path / "alone")
        with pytest.raises(BlockUnavailableError, match=str(liar.get_id())):
            await alone.fetch(
                root, len(blob), providers=[host_multiaddrs(liar)[0]], timeout_s=HANG_GUARD_S
            )
        assert set(alone.store.cids()) <= {root}, "a block of the liar was stored"


def chain_of_nodes(leaf: bytes, levels: int, declared: int | None = None) -> dict[str, bytes]:
    """A DAG of ``levels`` single-link file nodes over one raw leaf (root last)."""
    child = cid_of(leaf)
    blocks = {child: leaf}
    size = len(leaf) if declared is None else declared
    for _ in range(levels):
        node = encode_file_node([Link(child, size, size)])
        child = cid_of(node, codec="dag-pb")
        blocks[child] = node
    return blocks


@pytest.mark.parametrize(
    ("levels", "declared", "message"),
    [(1, 5, "leaf .* has 4 bytes, its parent says 5"), (9, None, "the DAG is deeper than 8 levels")],
)
async def test_a_lying_dag_fails_the_fetch_without_blaming_providers(
    tmp_path: Path, levels: int, declared: int | None, message: str
) -> None:
    blocks = chain_of_nodes(b"leaf", levels, declared)
    root = list(blocks)[-1]
    reported: list[object] = []
    async with open_network(tmp_path) as net:
        provider = await net.host(echo=False)
        provider.set_stream_handler(PROTOCOL_ID, scripted_provider(blocks, honest))
        fetcher = await exchange_on(
            net, tmp_path / "fetcher", on_bad_peer=lambda peer, why: reported.append(why)
        )
        with pytest.raises(BlockFetchError, match=f"not a usable file DAG: {message}"):
            await fetcher.fetch(
                root, MB, providers=[host_multiaddrs(provider)[0]], timeout_s=HANG_GUARD_S
            )
        assert reported == []
    # The same DAG is refused from the local store too.
    with BlockStore(tmp_path / "local" / "blocks") as store:
        for cid, data in blocks.items():
            store.put(cid, data)
        async with open_network(tmp_path / "local-net") as net:
            exchange = BlockExchange(await net.host(echo=False), store)
            with pytest.raises(BlockFetchError, match=message):
                await exchange.fetch(root, MB)


async def scripted_beside_a_publisher(
    net: Network, tmp_path: Path, by_cid: dict[str, bytes], on_block: BlockHandler,
    blob: bytes, limits: ExchangeLimits,
) -> tuple[str, str, BlockExchange]:
    """A scripted provider's address, an honest publisher's of ``blob``, and a fetcher."""
    scripted = await net.host(echo=False)
    scripted.set_stream_handler(PROTOCOL_ID, scripted_provider(by_cid, on_block))
    publisher = await exchange_on(net, tmp_path / "publisher")
    await publisher.publish(blob)
    fetcher = await exchange_on(net, tmp_path / "fetcher", limits=limits)
    return host_multiaddrs(scripted)[0], provider_of(publisher), fetcher


async def test_stalled_provider_is_dropped_after_the_read_timeout(tmp_path: Path) -> None:
    blob = os.urandom(3 * CHUNK_SIZE)
    root, blocks = build_file_dag(blob)
    by_cid = {block.cid: block.data for block in blocks}
    stalled = trio.Event()

    async def stall(stream: INetStream, cid: str, data: bytes) -> bool:
        if cid == root:
            return await honest(stream, cid, data)
        await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data[: len(data) // 2])
        stalled.set()
        await trio.sleep_forever()  # a paused writer that never closes or resets
        return False

    limits = ExchangeLimits(read_timeout_s=1.0)
    async with open_network(tmp_path) as net:
        staller, publisher, fetcher = await scripted_beside_a_publisher(
            net, tmp_path, by_cid, stall, blob, limits
        )
        providers = [staller, publisher]
        assert (
            await fetcher.fetch(root, len(blob), providers=providers, timeout_s=HANG_GUARD_S)
            == blob
        )
        assert stalled.is_set()

        # Only the staller: a clear error once the read timeout drops it.
        alone = await exchange_on(net, tmp_path / "alone", limits=limits)
        with pytest.raises(BlockUnavailableError, match="providers dropped.*TooSlow"):
            await alone.fetch(
                root, len(blob), providers=[staller], timeout_s=HANG_GUARD_S
            )
        # And an overall deadline shorter than the read timeout ends the fetch on its own.
        patient = await exchange_on(
            net, tmp_path / "patient", limits=ExchangeLimits(read_timeout_s=HANG_GUARD_S)
        )
        with pytest.raises(FetchTimeoutError, match="did not finish within 1.0 s"):
            await patient.fetch(
                root, len(blob), providers=[staller], timeout_s=1.0
            )


# A provider in its own process: serves the root, then half of the first leaf it is asked
# for, says STALLED and waits to be killed.
DYING_PROVIDER = """
import random, sys, trio
from pathlib import Path
from node.blocks.exchange import RESPONSE_HEADER, PROTOCOL_ID, STATUS_BLOCK, decode_request
from node.blocks.unixfs import build_file_dag
from node.host import HostConfig, host_multiaddrs, open_host

blob = random.Random(int(sys.argv[2])).randbytes(int(sys.argv[3]))
root, blocks = build_file_dag(blob)
by_cid = {b.cid: b.data for b in blocks}

async def read_exactly(stream, size):
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

async def handler(stream):
    length, shift = 0, 0
    while True:
        byte = (await read_exactly(stream, 1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    for cid in decode_request(await read_exactly(stream, length), 64):
        data = by_cid[cid]
        if cid == root:
            await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
            continue
        await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data[: len(data) // 2])
        print("STALLED", flush=True)
        await trio.sleep_forever()
    await stream.close()

async def main():
    async with open_host(HostConfig(Path(sys.argv[1]))) as host:
        host.set_stream_handler(PROTOCOL_ID, handler)
        print("READY", host_multiaddrs(host)[0], root, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def fetch_into(
    outcome: dict[str, object], fetcher: BlockExchange, root: str, size: int, providers: list[str]
) -> None:
    try:
        outcome["blob"] = await fetcher.fetch(
            root, size, providers=providers, timeout_s=HANG_GUARD_S
        )
    except BlockUnavailableError as exc:
        outcome["error"] = exc


class DyingProvider:
    def __init__(self, tmp_path: Path, seed: int, size: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                DYING_PROVIDER,
                str(tmp_path / "dying.key"),
                str(seed),
                str(size),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    async def line(self) -> str:
        assert self.process.stdout is not None
        with trio.fail_after(HANG_GUARD_S):
            text = await trio.to_thread.run_sync(self.process.stdout.readline, abandon_on_cancel=True)
        assert text, "the provider process exited early"
        return text.strip()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


async def test_provider_killed_mid_transfer_does_not_hang_the_fetch(tmp_path: Path) -> None:
    import random

    size = 3 * CHUNK_SIZE + 7
    blob = random.Random(7).randbytes(size)
    # A long read timeout: only the kill can end the stalled request.
    limits = ExchangeLimits(read_timeout_s=HANG_GUARD_S)
    for with_backup in (True, False):
        dying = DyingProvider(tmp_path, seed=7, size=size)
        try:
            ready, address, root = (await dying.line()).split()
            assert ready == "READY"
            async with open_network(tmp_path / str(with_backup)) as net:
                backup = await exchange_on(net, tmp_path / f"backup{with_backup}")
                assert await backup.publish(blob) == root
                fetcher = await exchange_on(net, tmp_path / f"fetcher{with_backup}", limits=limits)
                providers = [address, provider_of(backup)] if with_backup else [address]
                outcome: dict[str, object] = {}

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fetch_into, outcome, fetcher, root, size, providers)
                    assert await dying.line() == "STALLED"
                    assert not outcome, "the fetch ended while a request was stalled"
                    dying.kill()
            if with_backup:
                assert outcome["blob"] == blob
            else:
                assert "providers dropped" in str(outcome["error"])
        finally:
            if dying.process.poll() is None:
                dying.kill()


# --- bounds -------------------------------------------------------------------------------


class CountingStore(BlockStore):
    """A block store that records which blocks the exchange served from it."""

    served: list[str]

    def get(self, cid: str) -> bytes:
        self.served = [*getattr(self, "served", []), cid]
        return super().get(cid)


@pytest.mark.parametrize("size", [5000, 4 * CHUNK_SIZE])
async def test_max_size_is_enforced_from_the_root_before_any_leaf(
    tmp_path: Path, size: int
) -> None:
    blob = os.urandom(size)
    async with open_network(tmp_path) as net:
        host = await net.host(echo=False)
        store = CountingStore(tmp_path / "publisher" / "blocks")
        net.stack.callback(store.close)
        publisher = await net.stack.enter_async_context(BlockExchange(host, store))
        root = await publisher.publish(blob)
        store.served = []
        fetcher = await exchange_on(net, tmp_path / "fetcher")
        with pytest.raises(BlobTooLargeError, match=f"{size} bytes, over max_size {size - 1}"):
            await fetcher.fetch(
                root, size - 1, providers=[provider_of(publisher)], timeout_s=HANG_GUARD_S
            )
        assert store.served == [root], "leaves were requested although the root was too large"
        assert len(fetcher.store) == 0
        assert await fetcher.fetch(root, size, providers=[provider_of(publisher)]) == blob


async def test_publish_refuses_a_blob_the_store_cannot_hold(tmp_path: Path) -> None:
    async with open_network(tmp_path) as net:
        store = BlockStore(tmp_path / "small" / "blocks", max_bytes=3 * CHUNK_SIZE)
        net.stack.callback(store.close)
        exchange = BlockExchange(await net.host(echo=False), store)
        with pytest.raises(BlockStoreFullError, match="raise the block store cap"):
            await exchange.publish(os.urandom(4 * CHUNK_SIZE))
        assert len(store) == 0
        await exchange.publish(os.urandom(2 * CHUNK_SIZE))
        assert len(store) == 3


async def test_fetch_into_a_full_store_fails_clearly(tmp_path: Path) -> None:
    blob = os.urandom(6 * CHUNK_SIZE)
    async with open_network(tmp_path) as net:
        publisher = await exchange_on(net, tmp_path / "publisher")
        root = await publisher.publish(blob)
        store = BlockStore(tmp_path / "small" / "blocks", max_bytes=3 * CHUNK_SIZE)
        net.stack.callback(store.close)
        fetcher = BlockExchange(await net.host(echo=False), store)
        with pytest.raises(BlockStoreFullError, match="is full"):
            await fetcher.fetch(
                root, len(blob), providers=[provider_of(publisher)], timeout_s=HANG_GUARD_S
            )
        assert store.total_bytes <= 3 * CHUNK_SIZE


async def test_unknown_cid_and_missing_providers_fail_clearly(tmp_path: Path) -> None:
    unknown = cid_of(b"nobody has this")
    async with open_network(tmp_path) as net:
        publisher = await exchange_on(net, tmp_path / "publisher")
        lookups: list[str] = []
        fetcher = await exchange_on(
            net, tmp_path / "fetcher", find_providers=lambda cid: lookups.append(cid) or []
        )
        with trio.fail_after(HANG_GUARD_S):
            with pytest.raises(
                BlockUnavailableError, match=f"block {unknown} .* not available.*without it: \\['"
            ):
                await fetcher.fetch(unknown, MB, providers=[provider_of(publisher)])
            # The named publisher is asked first; it lacks the block: one lookup, the error.
            assert lookups == [unknown]
            with pytest.raises(BlockUnavailableError, match="no providers known"):
                await fetcher.fetch(unknown, MB)
            assert len(lookups) == 2  # nothing changed after an empty lookup: no second one
            # A provider that is not listening any more.
            async with open_host(HostConfig(tmp_path / "gone.key")) as gone:
                gone_addr = host_multiaddrs(gone)[0]
            with pytest.raises(BlockUnavailableError, match="providers dropped"):
                await fetcher.fetch(unknown, MB, providers=[gone_addr])
        with pytest.raises(ValueError, match="max_size"):
            await fetcher.fetch(unknown, 0)
        with pytest.raises(ValueError, match="/p2p/"):
            await fetcher.fetch(unknown, MB, providers=["/ip4/127.0.0.1/tcp/1"])


async def raw_request(host: IHost, server: IHost, payload: bytes) -> INetStream:
    await host.connect(PeerInfo(server.get_id(), server.get_addrs()))
    stream = await host.new_stream(server.get_id(), [PROTOCOL_ID])
    await stream.write(payload)
    return stream


async def read_header(stream: INetStream) -> tuple[int, int]:
    with trio.fail_after(HANG_GUARD_S):
        header = await stream.read(RESPONSE_HEADER.size)
    return RESPONSE_HEADER.unpack(header)


async def assert_ended_by_server(stream: INetStream) -> None:
    """The server sends nothing and ends the stream (reset or EOF) before the hang guard."""
    with trio.fail_after(HANG_GUARD_S):
        try:
            data = await stream.read(1)
        except Exception:  # reset or EOF: ended
            return
    assert data == b"", f"the server answered {data!r} instead of ending the stream"


async def test_server_bounds_streams_requests_and_reads(tmp_path: Path) -> None:
    blob = b"a small blob"
    limits = ExchangeLimits(
        max_streams_per_peer=1,
        request_arrival_s=0.5,
        idle_stream_timeout_s=0.5,
        max_cids_per_request=4,
        batch_size=4,
    )
    async with open_network(tmp_path) as net:
        server = await exchange_on(net, tmp_path / "server", limits=limits)
        root = await server.publish(blob)
        client = await net.host(echo=False)
        await client.connect(PeerInfo(server.host.get_id(), server.host.get_addrs()))

        # A request that never completes holds the peer's only slot...
        silent = await raw_request(client, server.host, b"\x85")
        await wait_until(lambda: server.streams_served == 1, "the server to take the request")
        busy = await raw_request(client, server.host, encode_request([root]))
        assert await read_header(busy) == (STATUS_BUSY, 0)
        # ...until the request deadline ends it: the peer is struck and its connection
        # closed (raw_request dials again).
        await assert_ended_by_server(silent)
        assert server.strikes(client.get_id()) == 1 and not server.is_banned(client.get_id())
        await wait_until(lambda: server.streams_served == 0, "the server to free the slot")
        ok = await raw_request(client, server.host, encode_request([root]))
        assert await read_header(ok) == (STATUS_BLOCK, len(blob))
        assert await read_exactly(ok, len(blob)) == blob
        # The stream stays open for further requests, answered in order.
        await ok.write(encode_request([cid_of(b"?"), root]))
        assert await read_header(ok) == (STATUS_DONT_HAVE, 0)
        assert await read_header(ok) == (STATUS_BLOCK, len(blob))
        assert await read_exactly(ok, len(blob)) == blob
        # An idle reused stream is reset after idle_stream_timeout_s, freeing the slot.
        await assert_ended_by_server(ok)
        await wait_until(lambda: server.streams_served == 0, "the server to free the slot")

        for hostile in (
            b"\xff\xff\xff\x7f",  # a 268 MB frame announced
            encode_request([root] * 5),  # more CIDs than the server answers
            b"\x03abc",  # not msgpack
            encode_request(["not a cid"]),
        ):
            stream = await raw_request(client, server.host, hostile)
            await assert_ended_by_server(stream)
        # The server still answers afterwards.
        again = await raw_request(client, server.host, encode_request([root, cid_of(b"?")]))
        assert await read_header(again) == (STATUS_BLOCK, len(blob))


async def test_idle_reused_streams_give_way_to_new_ones(tmp_path: Path) -> None:
    blob = b"another small blob"
    async with open_network(tmp_path) as net:
        server = await exchange_on(net, tmp_path / "server", ExchangeLimits(max_streams_per_peer=1))
        root = await server.publish(blob)
        client = await net.host(echo=False)
        await client.connect(PeerInfo(server.host.get_id(), server.host.get_addrs()))
        pooled = await raw_request(client, server.host, encode_request([root]))
        assert await read_header(pooled) == (STATUS_BLOCK, len(blob))
        assert await read_exactly(pooled, len(blob)) == blob
        await wait_until(lambda: server.streams_idle == 1, "the stream to wait for more requests")
        # The peer's only slot is held by an idle stream: a new stream evicts it.
        fresh = await raw_request(client, server.host, encode_request([root]))
        assert await read_header(fresh) == (STATUS_BLOCK, len(blob))
        await assert_ended_by_server(pooled)


async def test_stale_pooled_stream_is_replaced_without_blaming_the_provider(tmp_path: Path) -> None:
    blobs = [os.urandom(CHUNK_SIZE + 1), os.urandom(CHUNK_SIZE + 2)]
    reported: list[object] = []
    async with open_network(tmp_path) as net:
        server = await exchange_on(net, tmp_path / "server", ExchangeLimits(idle_stream_timeout_s=0.5))
        roots = [await server.publish(blob) for blob in blobs]
        # The client would reuse a stream idle up to 60 s; the server resets it after 0.5 s.
        fetcher = await exchange_on(
            net,
            tmp_path / "fetcher",
            ExchangeLimits(idle_stream_timeout_s=120),
            on_bad_peer=lambda peer, why: reported.append(why),
        )
        assert await fetcher.fetch(roots[0], MB, providers=[provider_of(server)]) == blobs[0]
        await wait_until(lambda: server.streams_served == 0, "the server to reset idle streams")
        assert await fetcher.fetch(roots[1], MB, providers=[provider_of(server)]) == blobs[1]
        assert reported == []


def test_request_codec_rejects_bad_requests() -> None:
    good = cid_of(b"x")
    frame = encode_request([good])
    assert decode_request(frame[1:], max_cids=1) == [good]
    for body, message in [
        (b"\xc1", "not valid msgpack"),
        (encode_request([])[1:], "non-empty 'want'"),
        (encode_request([good, good])[2:], "asks for 2 CIDs, more than 1"),
        (encode_request(["bafy"])[1:], "CID"),
    ]:
        with pytest.raises(Exception, match=message):
            decode_request(body, max_cids=1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(msgpack.packb, st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=70) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)))
def test_request_decoder_raises_only_cid_errors(body: bytes) -> None:
    try:
        cids = decode_request(body, max_cids=4)
    except CIDError:
        return
    assert 1 <= len(cids) <= 4


async def test_publish_through_the_dht_and_fetch_by_discovery(tmp_path: Path) -> None:
    blob = os.urandom(CHUNK_SIZE + 1)
    async with open_network(tmp_path) as net:
        boot, boot_addr = await net.bootstrap()
        publisher_peer = await net.peer(boot_addr)
        fetcher_peer = await net.peer(boot_addr)
        assert publisher_peer.discovery is not None and fetcher_peer.discovery is not None
        # Join the DHT (bootstrap connection, routing tables) before providing.
        assert await publisher_peer.discovery.connect_bootstrap() == 1
        assert await fetcher_peer.discovery.connect_bootstrap() == 1
        publisher_store = BlockStore(tmp_path / "publisher" / "blocks")
        fetcher_store = BlockStore(tmp_path / "fetcher" / "blocks")
        net.stack.callback(publisher_store.close)
        net.stack.callback(fetcher_store.close)
        publisher = await net.stack.enter_async_context(
            BlockExchange(
                publisher_peer.host, publisher_store, provide=publisher_peer.discovery.provide
            )
        )
        fetcher = await net.stack.enter_async_context(
            BlockExchange(
                fetcher_peer.host,
                fetcher_store,
                find_providers=fetcher_peer.discovery.find_providers,
            )
        )
        root = await publisher.publish(blob)
        assert await fetcher.fetch(root, len(blob), timeout_s=HANG_GUARD_S) == blob
        node = decode_file_node(fetcher_store.get(root))
        assert node.file_size == len(blob)


async def test_a_fetch_routes_around_a_provider_that_other_fetches_keep_busy(
    tmp_path: Path,
) -> None:
    """One node, two fetches, a provider they share. The first holds both of that
    provider's slots (it answers slowly); the second, which another holder could serve,
    finishes from that holder while the first still waits, instead of queueing its blocks
    behind the first's requests (a crowd's fetch then waited minutes for its last block)."""
    held, other = os.urandom(4 * CHUNK_SIZE), os.urandom(4 * CHUNK_SIZE)
    held_root, held_blocks = build_file_dag(held)
    other_root, other_blocks = build_file_dag(other)
    by_cid = {block.cid: block.data for block in held_blocks + other_blocks}
    held_leaves = {block.cid for block in held_blocks if block.cid != held_root}
    release, holding = trio.Event(), [0]

    async def slow(stream: INetStream, cid: str, data: bytes) -> bool:
        if cid in held_leaves:
            holding[0] += 1
            await release.wait()
        return await honest(stream, cid, data)

    patient = ExchangeLimits(
        read_timeout_s=HANG_GUARD_S, request_timeout_s=HANG_GUARD_S, slot_wait_s=0.5
    )
    async with open_network(tmp_path) as net:
        busy, holder, fetcher = await scripted_beside_a_publisher(
            net, tmp_path, by_cid, slow, other, patient
        )
        got: dict[str, bytes] = {}

        async def fetch(root: str, size: int, providers: list[str]) -> None:
            got[root] = await fetcher.fetch(root, size, providers=providers, timeout_s=HANG_GUARD_S)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, held_root, len(held), [busy])
            await wait_until(lambda: holding[0] >= patient.requests_per_provider, "slots held")
            with trio.fail_after(HANG_GUARD_S / 2):
                await fetch(other_root, len(other), [busy, holder])
            assert got[other_root] == other and held_root not in got  # the first still waits
            release.set()
        assert got[held_root] == held


async def test_a_sole_holder_that_fails_a_few_requests_is_retried_not_dropped(
    tmp_path: Path,
) -> None:
    """The only holder of a blob (its publisher, overloaded by the crowd fetching it) resets
    four requests in a row, then serves: the fetch backs off and gets the blob, where three
    failures in a row used to drop the holder and fail the fetch for good. A holder that
    keeps failing is still dropped, with the reason."""
    blob = os.urandom(2 * CHUNK_SIZE)
    root, blocks = build_file_dag(blob)
    by_cid = {block.cid: block.data for block in blocks}
    failures = [4]

    async def flaky(stream: INetStream, cid: str, data: bytes) -> bool:
        if failures[0] > 0:
            failures[0] -= 1
            await stream.reset()
            return False
        return await honest(stream, cid, data)

    quick = ExchangeLimits(holder_recheck_s=0.05)
    async with open_network(tmp_path) as net:
        provider = await net.host(echo=False)
        provider.set_stream_handler(PROTOCOL_ID, scripted_provider(by_cid, flaky))
        fetcher = await exchange_on(net, tmp_path / "fetcher", limits=quick)
        address = host_multiaddrs(provider)[0]
        got = await fetcher.fetch(root, len(blob), providers=[address], timeout_s=HANG_GUARD_S)
        assert got == blob and failures == [0]

        failures[0] = quick.provider_strikes
        again = await exchange_on(net, tmp_path / "again", limits=quick)
        with pytest.raises(BlockUnavailableError, match="providers dropped.*request failed"):
            await again.fetch(root, len(blob), providers=[address], timeout_s=HANG_GUARD_S)
