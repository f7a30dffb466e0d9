"""Malformed block requests, unknown CIDs, oversize claims and wrong-hash blocks, on real hosts.

For each attack: the node rejects it cleanly, stays alive, and goes on serving an honest
peer; a lying provider is named to ``on_bad_peer`` and costs the fetch nothing but time.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID as PeerID

from node.blocks.exchange import (
    PROTOCOL_ID,
    RESPONSE_HEADER,
    STATUS_BLOCK,
    STATUS_DONT_HAVE,
    BlobTooLargeError,
    BlockUnavailableError,
    ExchangeLimits,
    encode_request,
)
from node.blocks.unixfs import CHUNK_SIZE, MAX_BLOCK_SIZE, Link, build_file_dag, encode_file_node
from node.host import host_multiaddrs
from protocol.cid import cid_of
from tests.hostile.test_blocks_hold import (
    ask_once,
    info_of,
    read_exactly,
    serving_node,
    stream_ended,
)
from tests.network.conftest import HANG_GUARD_S, open_network
from tests.network.test_blockexchange import read_request


def request_body(message: object) -> bytes:
    body = msgpack.packb(message)
    assert len(body) < 0x80
    return bytes([len(body)]) + body


GOOD = cid_of(b"good")
MALFORMED_REQUESTS = {
    "a 268 MB frame announced": b"\xff\xff\xff\x7f",
    "a length prefix longer than 5 bytes": b"\xff\xff\xff\xff\xff\xff\x01",
    "an empty frame": b"\x00",
    "not msgpack": b"\x03\xc1\xc1\xc1",
    "a pickle": b"\x0b" + b"\x80\x04\x95\x00cos\nsystem",
    "a list, not a map": request_body([1, [GOOD]]),
    "version 2": request_body({"v": 2, "want": [GOOD]}),
    "no want": request_body({"v": 1}),
    "an empty want": request_body({"v": 1, "want": []}),
    "want of bytes": request_body({"v": 1, "want": [b"\x01\x55"]}),
    "not a CID": request_body({"v": 1, "want": ["hello"]}),
    "a CIDv0": request_body({"v": 1, "want": ["QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"]}),
    "an identity-hash CID": request_body({"v": 1, "want": ["bafkqaaa"]}),
    "33 CIDs": encode_request([GOOD] * 33),
    "a 2^32-entry want declared": bytes([14]) + b"\x82\xa1v\x01\xa4want\xdd\xff\xff\xff\xff",
}


async def test_malformed_requests_end_the_stream_and_the_node_serves_on(tmp_path: Path) -> None:
    blob = b"a block the node holds"
    async with open_network(tmp_path) as net:
        server = await serving_node(net, tmp_path / "server", ExchangeLimits())
        root = await server.publish(blob)
        attacker = await net.host(echo=False)
        honest = await net.host(echo=False)
        await attacker.connect(info_of(server.host))
        for what, payload in MALFORMED_REQUESTS.items():
            stream = await attacker.new_stream(server.host.get_id(), [PROTOCOL_ID])
            await stream.write(payload)
            assert await stream_ended(stream), f"the server answered {what}"
        # Rejected requests are not held slots: the peer is neither struck nor dropped.
        assert server.strikes(attacker.get_id()) == 0
        assert attacker.get_network().get_connections(server.host.get_id())
        await honest.connect(info_of(server.host))
        assert await ask_once(honest, server.host, root) == (STATUS_BLOCK, blob)
        assert await ask_once(attacker, server.host, root) == (STATUS_BLOCK, blob)


async def test_unknown_cids_get_dont_have_and_the_stream_goes_on(tmp_path: Path) -> None:
    blob = b"known"
    async with open_network(tmp_path) as net:
        server = await serving_node(net, tmp_path / "server", ExchangeLimits())
        root = await server.publish(blob)
        client = await net.host(echo=False)
        await client.connect(info_of(server.host))
        stream: INetStream = await client.new_stream(server.host.get_id(), [PROTOCOL_ID])
        unknown = [cid_of(os.urandom(8)) for _ in range(31)]
        await stream.write(encode_request([*unknown, root]))
        with trio.fail_after(HANG_GUARD_S):
            for _ in unknown:
                header = await read_exactly(stream, RESPONSE_HEADER.size)
                assert RESPONSE_HEADER.unpack(header) == (STATUS_DONT_HAVE, 0)
            header = await read_exactly(stream, RESPONSE_HEADER.size)
            assert RESPONSE_HEADER.unpack(header) == (STATUS_BLOCK, len(blob))
            assert await read_exactly(stream, len(blob)) == blob


def lying_provider(blocks: dict[str, bytes], lie: str) -> Callable[[INetStream], Awaitable[None]]:
    """Serves the root honestly, then lies about every leaf as ``lie`` says."""

    async def handler(stream: INetStream) -> None:
        for cid in await read_request(stream):
            data = blocks[cid]
            if lie == "wrong hash" and data is not blocks["root"]:
                data = os.urandom(len(data))
            if lie == "oversize length" and data is not blocks["root"]:
                await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, MAX_BLOCK_SIZE + 1))
                await trio.sleep_forever()
            await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
        await stream.close()

    return handler


@pytest.mark.parametrize("lie", ["wrong hash", "oversize length"])
async def test_a_lying_provider_is_reported_and_an_honest_one_serves(
    tmp_path: Path, lie: str
) -> None:
    blob = os.urandom(3 * CHUNK_SIZE)
    root, blocks = build_file_dag(blob)
    by_cid = {block.cid: block.data for block in blocks}
    by_cid["root"] = by_cid[root]
    reported: list[tuple[PeerID, str]] = []
    async with open_network(tmp_path) as net:
        liar = await net.host(echo=False)
        liar.set_stream_handler(PROTOCOL_ID, lying_provider(by_cid, lie))
        honest = await serving_node(net, tmp_path / "honest", ExchangeLimits())
        await honest.publish(blob)
        fetcher = await serving_node(net, tmp_path / "fetcher", ExchangeLimits(),
                                     on_bad_peer=lambda peer, why: reported.append((peer, why)))
        liar_addr = host_multiaddrs(liar)[0]
        with pytest.raises(BlockUnavailableError, match="providers dropped"):
            await fetcher.fetch(root, len(blob), providers=[liar_addr], timeout_s=HANG_GUARD_S)
        assert {peer for peer, _ in reported} == {liar.get_id()}
        got = await fetcher.fetch(root, len(blob), timeout_s=HANG_GUARD_S,
                                  providers=[liar_addr, host_multiaddrs(honest.host)[0]])
        assert got == blob
        assert {peer for peer, _ in reported} == {liar.get_id()}


async def test_a_root_claiming_a_huge_file_is_refused_before_any_leaf(tmp_path: Path) -> None:
    """A publisher's own (validly hashed) root that declares 2^50 bytes: nothing allocated."""
    leaf = os.urandom(100)
    child = cid_of(leaf, "dag-pb")  # an inner node would hold the 2^50 bytes
    root_bytes = encode_file_node([Link(child, 2**50, 2**50)])
    root = cid_of(root_bytes, "dag-pb")
    asked: list[str] = []

    async def handler(stream: INetStream) -> None:
        for cid in await read_request(stream):
            asked.append(cid)
            data = root_bytes if cid == root else leaf
            await stream.write(RESPONSE_HEADER.pack(STATUS_BLOCK, len(data)) + data)
        await stream.close()

    async with open_network(tmp_path) as net:
        publisher = await net.host(echo=False)
        publisher.set_stream_handler(PROTOCOL_ID, handler)
        fetcher = await serving_node(net, tmp_path / "fetcher", ExchangeLimits())
        with pytest.raises(BlobTooLargeError, match="nothing was fetched beyond its root"):
            await fetcher.fetch(root, 10 * 2**20, providers=[host_multiaddrs(publisher)[0]],
                                timeout_s=HANG_GUARD_S)
        assert asked == [root]
        assert set(fetcher.store.cids()) <= {root}
