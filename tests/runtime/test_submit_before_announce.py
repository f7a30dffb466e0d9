"""A worker's update is submitted once it is stored and served, not once its DHT provider
record is made: `BlockExchange.publish(announce_aside=True)` returns before the announce,
and a peer can fetch the blob meanwhile (real hosts on 127.0.0.1, a real block store)."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from node.blocks.exchange import BlockExchange
from node.blocks.store import BlockStore
from node.blocks.unixfs import CHUNK_SIZE
from node.host import host_multiaddrs
from tests.network.conftest import HANG_GUARD_S, open_network


class HeldAnnouncer:
    """A `provide` callback that does not finish until released, as a DHT put on a busy
    machine, and records what it was asked to announce."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.released = trio.Event()
        self.done: list[str] = []

    async def __call__(self, cid: str) -> None:
        self.asked.append(cid)
        await self.released.wait()
        self.done.append(cid)


async def test_publish_aside_returns_before_the_announce_and_serves_at_once(tmp_path: Path) -> None:
    blob = os.urandom(3 * CHUNK_SIZE + 7)
    announcer = HeldAnnouncer()
    async with open_network(tmp_path) as net:
        publisher_host = await net.host()
        fetcher_host = await net.host()
        publisher_store = BlockStore(tmp_path / "publisher")
        fetcher_store = BlockStore(tmp_path / "fetcher")
        net.stack.callback(publisher_store.close)
        net.stack.callback(fetcher_store.close)
        publisher = await net.stack.enter_async_context(
            BlockExchange(publisher_host, publisher_store, provide=announcer)
        )
        fetcher = await net.stack.enter_async_context(BlockExchange(fetcher_host, fetcher_store))
        with trio.fail_after(HANG_GUARD_S):  # a hang guard: the announce never finishes here
            root = await publisher.publish(blob, announce_aside=True)
        assert announcer.done == []  # returned while the announce is still held
        assert publisher_store.has(root) and root in publisher_store.pins()
        # served before it is announced: a peer told who holds it fetches it
        address = host_multiaddrs(publisher_host)[0]
        fetched = await fetcher.fetch(root, len(blob), providers=[address], timeout_s=HANG_GUARD_S)
        assert fetched == blob
        with trio.fail_after(HANG_GUARD_S):
            while not announcer.asked:
                await trio.sleep(0.01)
        assert announcer.asked == [root]
        announcer.released.set()
        with trio.fail_after(HANG_GUARD_S):
            while not announcer.done:
                await trio.sleep(0.01)
        assert announcer.done == [root]


async def test_plain_publish_waits_for_its_announce(tmp_path: Path) -> None:
    announcer = HeldAnnouncer()
    async with open_network(tmp_path) as net:
        host = await net.host()
        store = BlockStore(tmp_path / "store")
        net.stack.callback(store.close)
        exchange = await net.stack.enter_async_context(BlockExchange(host, store, provide=announcer))
        roots: list[str] = []

        async def publish() -> None:
            roots.append(await exchange.publish(b"an update"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            with trio.fail_after(HANG_GUARD_S):
                while not announcer.asked:
                    await trio.sleep(0.01)
            assert roots == []  # still waiting on the announce
            announcer.released.set()
        assert roots == announcer.done
