"""A publisher that serves its blob to one peer only cannot keep it from the others.

Real hosts on 127.0.0.1 with a real DHT: whoever fetched a blob announces itself as a
provider (node.blocks.exchange through node.discovery) and serves it onward.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID as PeerID

from node.blocks.exchange import (
    PROTOCOL_ID,
    RESPONSE_HEADER,
    STATUS_BLOCK,
    STATUS_DONT_HAVE,
    BlockExchange,
    BlockUnavailableError,
)
from node.blocks.store import BlockNotFoundError, BlockStore
from node.blocks.unixfs import CHUNK_SIZE
from node.discovery import Discovery, DiscoveryConfig, open_discovery
from node.host import host_multiaddrs
from tests.network.conftest import HANG_GUARD_S, Network, open_network
from tests.network.test_blockexchange import read_request


async def dht_node(net: Network, boot_addr: str, data_dir: Path) -> tuple[BlockExchange, Discovery]:
    """A host on the DHT with a block exchange that announces and looks up providers."""
    host = await net.host(echo=False)
    discovery = await net.stack.enter_async_context(
        open_discovery(host, DiscoveryConfig(bootstrap_addrs=(boot_addr,)))
    )
    assert await discovery.connect_bootstrap() == 1
    store = BlockStore(data_dir / "blocks")
    net.stack.callback(store.close)
    exchange = BlockExchange(host, store, find_providers=discovery.find_providers,
                             provide=discovery.provide)
    return await net.stack.enter_async_context(exchange), discovery


def serve_only(store: BlockStore, favourite: PeerID,
               refused: list[PeerID]) -> Callable[[INetStream], Awaitable[None]]:
    """A withholding publisher's handler: blocks for ``favourite``, a reset for anyone else."""

    async def handler(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if peer != favourite:
            refused.append(peer)
            await stream.reset()
            return
        for cid in await read_request(stream):
            try:
                data = store.get(cid)
            except BlockNotFoundError:
                await stream.write(RESPONSE_HEADER.pack(STATUS_DONT_HAVE, 0))
            else:
                await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
        await stream.close()

    return handler


async def test_a_blob_served_to_one_validator_reaches_the_others_through_it(tmp_path: Path) -> None:
    blob = os.urandom(3 * CHUNK_SIZE + 7)  # a sealed update: root and leaves
    async with open_network(tmp_path) as net:
        _, boot_addr = await net.bootstrap()
        worker, _ = await dht_node(net, boot_addr, tmp_path / "worker")
        validator_a, _ = await dht_node(net, boot_addr, tmp_path / "a")
        validator_b, _ = await dht_node(net, boot_addr, tmp_path / "b")
        validator_c, discovery_c = await dht_node(net, boot_addr, tmp_path / "c")
        root = await worker.publish(blob)
        refused: list[PeerID] = []
        worker_host: IHost = worker.host
        worker_host.set_stream_handler(
            PROTOCOL_ID, serve_only(worker.store, validator_a.host.get_id(), refused)
        )
        worker_addr = host_multiaddrs(worker_host)[0]

        # The refusal bites: before anyone else holds the blob, C cannot get it.
        with pytest.raises(BlockUnavailableError):
            await validator_c.fetch(root, len(blob), providers=[worker_addr],
                                    timeout_s=HANG_GUARD_S)
        assert validator_c.host.get_id() in refused

        assert await validator_a.fetch(root, len(blob), providers=[worker_addr], pin=True,
                                       timeout_s=HANG_GUARD_S) == blob

        # A announces in the background once its fetch is done; wait for the record.
        with trio.fail_after(HANG_GUARD_S):
            while validator_a.host.get_id() not in {
                info.peer_id for info in await discovery_c.find_providers(root)
            }:
                await trio.sleep(0.1)
        # B names only the withholding worker; the DHT names A, which serves it.
        assert await validator_b.fetch(root, len(blob), providers=[worker_addr],
                                       timeout_s=HANG_GUARD_S) == blob
        # The worker serves nobody but A, so every block B got came from A.
        assert validator_a.store.pins() == {root}

