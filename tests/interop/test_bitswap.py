"""Bitswap between fl-node hosts on 127.0.0.1: serve, fetch, presences, DAG checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.blocks.bitswap_wire import (
    BitswapMessage,
    PresenceType,
    WantEntry,
    WantType,
    block_cid,
)
from node.blocks.cids import cid_info
from node.blocks.exchange import BlobTooLargeError, BlockUnavailableError
from node.blocks.unixfs import CHUNK_SIZE, build_file_dag
from node.host import connect
from protocol.cid import cid_of

from .bitswap_peers import HANG_GUARD_S, Inbox, bitswap_peers, send_message

MB = 1024 * 1024


async def test_fetch_a_blob_from_a_peer_that_only_speaks_bitswap(tmp_path: Path) -> None:
    blob = os.urandom(3 * MB + 12345)  # 13 leaves under one dag-pb root
    async with bitswap_peers(tmp_path, 2) as (server, client):
        root = server.add_blob(blob)
        with trio.fail_after(HANG_GUARD_S):
            got = await client.bitswap.fetch(root, max_size=4 * MB, providers=[server.addr], pin=True)
        assert got == blob
        # every block is stored, verified on read, and the root pinned
        _, blocks = build_file_dag(blob)
        assert {b.cid for b in blocks} <= set(client.store.cids())
        assert client.store.pins() == {root}
        assert server.bitswap.blocks_sent == len(blocks)
        assert client.bitswap.unrequested_blocks == 0


async def test_single_block_blob_and_local_blocks(tmp_path: Path) -> None:
    small = os.urandom(1000)
    async with bitswap_peers(tmp_path, 2) as (server, client):
        root = server.add_blob(small)
        assert root == cid_of(small, "raw")
        got = await client.bitswap.fetch(root, max_size=1000, providers=[server.addr],
                                         timeout_s=HANG_GUARD_S)
        assert got == small
        sent = server.bitswap.blocks_sent
        # a second fetch is served from the local store: nothing new is asked
        assert await client.bitswap.fetch(root, max_size=1000, providers=[server.addr]) == small
        assert server.bitswap.blocks_sent == sent


async def test_root_over_max_size_stops_before_any_leaf(tmp_path: Path) -> None:
    blob = os.urandom(2 * MB)
    async with bitswap_peers(tmp_path, 2) as (server, client):
        root = server.add_blob(blob)
        with pytest.raises(BlobTooLargeError, match="over max_size"):
            await client.bitswap.fetch(root, max_size=MB, providers=[server.addr],
                                       timeout_s=HANG_GUARD_S)
        assert server.bitswap.blocks_sent == 1  # the root only
        assert client.store.cids() == []  # the root was refused before it was stored


async def test_missing_block_is_unavailable_after_dont_have(tmp_path: Path) -> None:
    blob = os.urandom(CHUNK_SIZE * 3)
    async with bitswap_peers(tmp_path, 2) as (server, client):
        root = server.add_blob(blob)
        _, blocks = build_file_dag(blob)
        server.store.unpin(root)
        server.store.delete(blocks[1].cid)
        with pytest.raises(BlockUnavailableError, match=blocks[1].cid):
            await client.bitswap.fetch(root, max_size=MB, providers=[server.addr],
                                       timeout_s=HANG_GUARD_S)


async def test_two_providers_one_lacking_blocks(tmp_path: Path) -> None:
    blob = os.urandom(CHUNK_SIZE * 6)
    async with bitswap_peers(tmp_path, 3) as (full, partial, client):
        root = full.add_blob(blob)
        partial.add_blob(blob)
        _, blocks = build_file_dag(blob)
        partial.store.unpin(root)
        for block in blocks[:3]:
            partial.store.delete(block.cid)
        got = await client.bitswap.fetch(root, max_size=MB * 2,
                                         providers=[partial.addr, full.addr], timeout_s=HANG_GUARD_S)
        assert got == blob


async def test_have_dont_have_and_block_wants_are_answered(tmp_path: Path) -> None:
    blob = os.urandom(CHUNK_SIZE + 10)
    async with bitswap_peers(tmp_path, 2) as (server, raw):
        root = server.add_blob(blob)
        _, blocks = build_file_dag(blob)
        absent = cid_info(cid_of(b"not stored", "raw")).binary
        leaf = cid_info(blocks[0].cid).binary
        inbox = Inbox(raw.host)  # replaces the raw peer's bitswap handler
        await connect(raw.host, server.addr)
        await send_message(raw.host, server, BitswapMessage(wantlist=(
            WantEntry(cid_info(root).binary, want_type=WantType.HAVE, send_dont_have=True),
            WantEntry(absent, want_type=WantType.BLOCK, send_dont_have=True),
            WantEntry(leaf, priority=5),
        )))

        def answered(messages: list[BitswapMessage]) -> bool:
            return sum(len(m.payload) + len(m.presences) for m in messages) >= 3

        await inbox.wait_for(answered, "answers to three wants")
        payload = [b for m in inbox.messages for b in m.payload]
        presences = {p.cid: p.type for m in inbox.messages for p in m.presences}
        assert [block_cid(b.prefix, b.data) for b in payload] == [blocks[0].cid]
        assert presences == {cid_info(root).binary: PresenceType.HAVE, absent: PresenceType.DONT_HAVE}


async def test_fetch_rejects_a_dag_that_lies_about_sizes(tmp_path: Path) -> None:
    """A provider serving a root whose declared sizes disagree with its leaves: the
    blocks hash-check, so the DAG is what lies, and the fetch stops with a clear error."""
    from node.blocks.unixfs import Link, encode_file_node

    leaf = os.urandom(1000)
    leaf_cid = cid_of(leaf, "raw")
    node = encode_file_node([Link(leaf_cid, 2000, 1000)])
    root = cid_of(node, "dag-pb")
    async with bitswap_peers(tmp_path, 2) as (server, client):
        server.store.put(leaf_cid, leaf)
        server.store.put(root, node)
        with pytest.raises(Exception, match="parent says 2000"):
            await client.bitswap.fetch(root, max_size=MB, providers=[server.addr],
                                       timeout_s=HANG_GUARD_S)
        assert not client.store.has(leaf_cid)


async def test_provider_text_must_be_a_full_multiaddr(tmp_path: Path) -> None:
    async with bitswap_peers(tmp_path, 1) as (client,):
        with pytest.raises(ValueError, match="/p2p/"):
            await client.bitswap.fetch(cid_of(b"x", "raw"), max_size=10,
                                       providers=["/ip4/127.0.0.1/tcp/1"])


async def test_providers_come_from_find_providers(tmp_path: Path) -> None:
    """A node finds bitswap providers the way it finds block-exchange ones (the DHT)."""
    from libp2p.peer.peerinfo import PeerInfo

    from node.blocks.bitswap import Bitswap

    blob = os.urandom(CHUNK_SIZE * 2 + 5)
    async with bitswap_peers(tmp_path, 2) as (server, client):
        root = server.add_blob(blob)
        asked: list[str] = []

        async def find_providers(cid: str) -> list[PeerInfo]:
            asked.append(cid)
            return [PeerInfo(server.host.get_id(), server.host.get_addrs())]

        async with Bitswap(client.host, client.store, find_providers=find_providers) as finder:
            with trio.fail_after(HANG_GUARD_S):
                assert await finder.fetch(root, max_size=len(blob)) == blob
        assert asked == [root]


async def test_wants_arriving_while_an_answer_stream_closes_are_answered(tmp_path: Path) -> None:
    """Want messages in quick succession, one block each: some land while the node is
    closing the stream of its previous answer, and every one is still answered."""
    leaves = [os.urandom(2000) for _ in range(40)]
    async with bitswap_peers(tmp_path, 2) as (server, raw):
        cids = [server.add_blob(leaf) for leaf in leaves]
        inbox = Inbox(raw.host)
        await connect(raw.host, server.addr)
        for cid in cids:
            await send_message(raw.host, server, BitswapMessage(
                wantlist=(WantEntry(cid_info(cid).binary),)))
            await trio.sleep(0.005)
        await inbox.wait_for(lambda ms: sum(len(m.payload) for m in ms) >= len(cids),
                             f"{len(cids)} blocks")
        got = {block_cid(b.prefix, b.data) for m in inbox.messages for b in m.payload}
        assert got == set(cids)


async def test_a_bitswap_1_1_0_peer_gets_blocks_and_no_presences(tmp_path: Path) -> None:
    from node.blocks.bitswap import PROTOCOL_V110, PROTOCOL_V120
    from node.blocks.bitswap_wire import frame

    from .bitswap_peers import send_raw

    blob = os.urandom(CHUNK_SIZE + 10)
    async with bitswap_peers(tmp_path, 2) as (server, old):
        root = server.add_blob(blob)
        leaf = build_file_dag(blob)[1][0]
        old.host.remove_stream_handler(PROTOCOL_V120)  # speaks 1.1.0 only
        inbox = Inbox(old.host, PROTOCOL_V110)
        await connect(old.host, server.addr)
        await send_raw(old.host, server, frame(BitswapMessage(wantlist=(
            WantEntry(cid_info(root).binary, want_type=WantType.HAVE, send_dont_have=True),
            WantEntry(cid_info(cid_of(b"absent", "raw")).binary, send_dont_have=True),
            WantEntry(cid_info(leaf.cid).binary),
        ))), protocol=PROTOCOL_V110)
        # all three wants are answered in one message: a presence would come with the leaf
        await inbox.wait_for(lambda ms: any(m.payload for m in ms), "the leaf")
        assert [block_cid(b.prefix, b.data) for m in inbox.messages for b in m.payload] == [leaf.cid]
        assert all(not m.presences for m in inbox.messages)


async def test_wants_for_malformed_cids_get_dont_have(tmp_path: Path) -> None:
    """A sha2-256 multihash declaring 33 digest bytes, a CIDv0, garbage: no block, a
    DONT_HAVE each, and the stream stays usable."""
    odd = [bytes.fromhex("01551221") + bytes(33), bytes.fromhex("1220") + bytes(32), b"\x01\xff"]
    async with bitswap_peers(tmp_path, 2) as (server, raw):
        inbox = Inbox(raw.host)
        await connect(raw.host, server.addr)
        await send_message(raw.host, server, BitswapMessage(
            wantlist=tuple(WantEntry(cid, send_dont_have=True) for cid in odd)))
        await inbox.wait_for(lambda ms: sum(len(m.presences) for m in ms) >= 3, "3 DONT_HAVEs")
        presences = [p for m in inbox.messages for p in m.presences]
        assert {p.cid for p in presences} == set(odd)
        assert {p.type for p in presences} == {PresenceType.DONT_HAVE}


async def test_a_dag_linking_a_malformed_cid_fails_the_fetch_clearly(tmp_path: Path) -> None:
    """The root hashes to its CID but links a sha2-256 multihash declaring 33 bytes."""
    from node.blocks.exchange import BlockFetchError
    from node.blocks.unixfs import _key, _len_field, encode_varint

    odd = bytes.fromhex("01551221") + bytes(33)
    link = _len_field(1, odd) + _len_field(2, b"") + _key(3, 0) + encode_varint(10)
    unixfs = (_key(1, 0) + encode_varint(2) + _key(3, 0) + encode_varint(10)
              + _key(4, 0) + encode_varint(10))
    node = _len_field(2, link) + _len_field(1, unixfs)
    root = cid_of(node, "dag-pb")
    async with bitswap_peers(tmp_path, 2) as (server, client):
        server.store.put(root, node)
        with pytest.raises(BlockFetchError, match="not a usable file DAG.*malformed multihash"):
            await client.bitswap.fetch(root, max_size=MB, providers=[server.addr],
                                       timeout_s=HANG_GUARD_S)


async def test_leaving_the_block_keeps_the_bodys_exception_and_cancels_cleanly(
    tmp_path: Path,
) -> None:
    """``async with Bitswap(...)`` in a node's stack: an error in the body comes out as
    itself (not wrapped in a group), and a cancelled node leaves without hanging."""
    from node.blocks.bitswap import PROTOCOL_V120, Bitswap

    async with bitswap_peers(tmp_path, 1) as (peer,):
        with pytest.raises(KeyError, match="from the body"):
            async with Bitswap(peer.host, peer.store):
                raise KeyError("from the body")
        with trio.move_on_after(0.5) as scope:
            async with Bitswap(peer.host, peer.store):
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert PROTOCOL_V120 not in peer.host.get_mux().get_protocols()
