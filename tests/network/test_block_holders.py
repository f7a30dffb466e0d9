"""A fetch also asks the task members it is connected to, so one publisher is not the only
source of a blob a crowd fetches (node.blocks.exchange, ``ExchangeLimits.connected_holders``).

Real libp2p hosts on 127.0.0.1; every timeout is a hang guard or a limit under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from node.blocks.exchange import (
    PROTOCOL_ID,
    RESPONSE_HEADER,
    STATUS_BUSY,
    BlockExchange,
    BlockUnavailableError,
    ExchangeLimits,
)
from node.blocks.store import BlockStore
from node.host import host_multiaddrs
from tests.network.conftest import HANG_GUARD_S, Network, open_network, wait_until

BLOB = bytes(range(256)) * 3000  # 768,000 bytes: a root and three leaves


async def exchange_on(
    net: Network, data_dir: Path, limits: ExchangeLimits | None = None,
    members: set[PeerID] | None = None,
) -> BlockExchange:
    host = await net.host(echo=False)
    store = BlockStore(data_dir / "blocks")
    net.stack.callback(store.close)
    listed = members if members is not None else set()
    exchange = BlockExchange(host, store, limits=limits, is_member=listed.__contains__)
    return await net.stack.enter_async_context(exchange)


async def connect(a: IHost, b: IHost) -> None:
    with trio.fail_after(HANG_GUARD_S):
        await a.connect(PeerInfo(b.get_id(), b.get_addrs()))


def always_busy(asked: list[PeerID]) -> object:
    """A publisher swamped by a crowd: every block stream is answered busy."""

    async def handler(stream: INetStream) -> None:
        asked.append(stream.muxed_conn.peer_id)
        with trio.move_on_after(HANG_GUARD_S):
            await stream.write(RESPONSE_HEADER.pack(STATUS_BUSY, 0))
            await stream.close()

    return handler


async def never_answers(stream: INetStream) -> None:
    """A holder that takes the request and stalls (never answers, never closes)."""
    await trio.sleep_forever()


async def test_a_swamped_publisher_is_relieved_by_a_member_that_holds_the_blob(
    tmp_path: Path,
) -> None:
    members: set[PeerID] = set()
    async with open_network(tmp_path) as net:
        publisher = await net.host(echo=False)
        asked: list[PeerID] = []
        publisher.set_stream_handler(PROTOCOL_ID, always_busy(asked))  # type: ignore[arg-type]
        holder = await exchange_on(net, tmp_path / "holder")
        root = await holder.publish(BLOB)
        fetcher = await exchange_on(net, tmp_path / "fetcher", members=members)
        members.update({publisher.get_id(), holder.host.get_id()})
        await connect(fetcher.host, holder.host)
        with trio.fail_after(HANG_GUARD_S):
            got = await fetcher.fetch(root, len(BLOB), providers=[host_multiaddrs(publisher)[0]])
        assert got == BLOB
        assert asked, "the named publisher was not asked first"
        assert fetcher.store.has(root)


async def test_a_stalled_holder_is_skipped_for_a_connected_member(tmp_path: Path) -> None:
    members: set[PeerID] = set()
    limits = ExchangeLimits(read_timeout_s=1.0)
    async with open_network(tmp_path) as net:
        staller = await net.host(echo=False)
        staller.set_stream_handler(PROTOCOL_ID, never_answers)
        holder = await exchange_on(net, tmp_path / "holder")
        root = await holder.publish(BLOB)
        fetcher = await exchange_on(net, tmp_path / "fetcher", limits, members)
        members.update({staller.get_id(), holder.host.get_id()})
        await connect(fetcher.host, holder.host)
        with trio.fail_after(HANG_GUARD_S):
            got = await fetcher.fetch(root, len(BLOB), providers=[host_multiaddrs(staller)[0]])
        assert got == BLOB


async def test_a_member_fetching_the_blob_is_asked_again_once_it_holds_it(tmp_path: Path) -> None:
    """The crowd case: the publisher is gone, a peer lacks the blob when first asked and
    holds it a moment later (it was fetching it too)."""
    members: set[PeerID] = set()
    async with open_network(tmp_path) as net:
        gone = await net.host(echo=False)  # names itself a provider, serves no block protocol
        late = await exchange_on(net, tmp_path / "late")
        fetcher = await exchange_on(net, tmp_path / "fetcher", members=members)
        members.update({gone.get_id(), late.host.get_id()})
        await connect(fetcher.host, late.host)
        source = await exchange_on(net, tmp_path / "source")  # not a member, not connected
        root = await source.publish(BLOB)
        got: list[bytes] = []

        async def fetch() -> None:
            got.append(await fetcher.fetch(root, len(BLOB), providers=[host_multiaddrs(gone)[0]]))

        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_until(lambda: late.streams_served >= 1, "the fetcher to ask the member")
                assert not got
                await late.publish(BLOB)  # it holds the blob now
        assert got == [BLOB]


async def test_a_member_that_never_gets_the_blob_is_given_up_and_the_error_names_it(
    tmp_path: Path,
) -> None:
    members: set[PeerID] = set()
    limits = ExchangeLimits(holder_recheck_s=0.05, holder_rechecks=3)
    async with open_network(tmp_path) as net:
        source = await exchange_on(net, tmp_path / "source")
        root = await source.publish(BLOB)
        empty = await exchange_on(net, tmp_path / "empty")
        stranger = await exchange_on(net, tmp_path / "stranger")  # holds it, not a member
        assert await stranger.publish(BLOB) == root
        fetcher = await exchange_on(net, tmp_path / "fetcher", limits, members)
        members.add(empty.host.get_id())
        await connect(fetcher.host, empty.host)
        await connect(fetcher.host, stranger.host)
        with trio.fail_after(HANG_GUARD_S), pytest.raises(BlockUnavailableError) as raised:
            await fetcher.fetch(root, len(BLOB))
        assert str(empty.host.get_id()) in str(raised.value)
        assert "lacked the blob 4 times" in str(raised.value)
        assert str(stranger.host.get_id()) not in str(raised.value)
        assert not fetcher.store.has(root)


async def test_with_no_provider_a_task_node_waits_for_a_member_to_connect(tmp_path: Path) -> None:
    """Just after a task starts nobody is connected yet: the fetch waits for a member."""
    members: set[PeerID] = set()
    async with open_network(tmp_path) as net:
        holder = await exchange_on(net, tmp_path / "holder")
        root = await holder.publish(BLOB)
        fetcher = await exchange_on(net, tmp_path / "fetcher", members=members)
        members.add(holder.host.get_id())
        got: list[bytes] = []

        async def fetch() -> None:
            got.append(await fetcher.fetch(root, len(BLOB)))

        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await trio.sleep(0.2)  # the fetch found nobody to ask yet
                assert not got
                await connect(holder.host, fetcher.host)
        assert got == [BLOB]
