"""Interop with a real Helia 7 node (js-libp2p: TCP, Noise, Yamux) on 127.0.0.1:
it fetches from fl-node over bitswap, fl-node fetches from it, and it imports
fl-node's CAR export with the same root CID."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from node.blocks import BlockExchange
from node.blocks.store import BlockStore
from node.blocks.unixfs import build_file_dag
from node.export import export_car
from node.host import connect

from .bitswap_peers import HANG_GUARD_S, bitswap_peers
from .helia import helia_peer, requires_helia

MB = 1024 * 1024

pytestmark = requires_helia


async def test_helia_fetches_a_blob_from_fl_node_by_cid(tmp_path: Path) -> None:
    """The blob is published the way a node publishes an update (the block exchange on
    the same host); Helia gets it over bitswap."""
    blob = os.urandom(6_650_000)  # the size of a round's sealed update: 26 leaves and a root
    async with bitswap_peers(tmp_path, 1) as (server,), helia_peer() as helia, \
            BlockExchange(server.host, server.store) as exchange:
        root = await exchange.publish(blob)
        await helia.call("dial", addr=server.addr)
        got = await helia.call("cat", cid=root, timeout_ms=60_000)
        assert got["length"] == len(blob)
        assert got["sha256"] == hashlib.sha256(blob).hexdigest()
        # Helia re-imports the bytes with Kubo's parameters: the same root CID
        assert got["kubo_cid"] == root
        assert server.bitswap.blocks_sent >= 27


async def test_fl_node_fetches_a_blob_only_helia_holds(tmp_path: Path) -> None:
    blob = os.urandom(MB + 4321)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    async with bitswap_peers(tmp_path, 1) as (client,), helia_peer() as helia:
        root = (await helia.call("add", path=str(path)))["cid"]
        assert root == build_file_dag(blob)[0]
        assert not client.store.has(root)
        await connect(client.host, helia.addr)
        with trio.fail_after(HANG_GUARD_S):
            got = await client.bitswap.fetch(root, max_size=2 * MB, providers=[helia.addr])
        assert got == blob
        assert client.store.has(root)
        assert client.bitswap.unrequested_blocks == 0


async def test_helia_imports_the_exported_car_with_the_same_root(tmp_path: Path) -> None:
    model = os.urandom(MB + 99)
    (tmp_path / "final-model.bin").write_bytes(model)
    update = os.urandom(300_000)
    update_root, update_blocks = build_file_dag(update)
    with BlockStore(tmp_path / "blocks", durable=False) as store:
        for block in update_blocks:
            store.put(block.cid, block.data)
    out = tmp_path / "export.car"
    roots = export_car(out, tmp_path, final_model=tmp_path / "final-model.bin", cids=(update_root,))
    async with helia_peer() as helia:
        imported = await helia.call("import_car", path=str(out))
        assert imported["roots"] == roots
        for root, blob in zip(roots, (model, update), strict=True):
            got = await helia.call("cat", cid=root, timeout_ms=20_000)  # from its own blockstore
            assert got["sha256"] == hashlib.sha256(blob).hexdigest()
            assert got["kubo_cid"] == root
