"""Real libp2p hosts with a block store and bitswap, for the bitswap tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from node.blocks.bitswap import PROTOCOL_V120, Bitswap, BitswapLimits
from node.blocks.bitswap_wire import BitswapMessage, decode_message, frame
from node.blocks.store import BlockStore
from node.blocks.unixfs import build_file_dag
from node.host import HostConfig, host_multiaddrs, open_host

# Every wait in these tests is a hang guard, never a timing assertion.
HANG_GUARD_S = 60.0


@dataclass
class BitswapPeer:
    host: IHost
    store: BlockStore
    bitswap: Bitswap

    @property
    def addr(self) -> str:
        return host_multiaddrs(self.host)[0]

    def add_blob(self, blob: bytes) -> str:
        """Store ``blob`` as a UnixFS DAG (as a publish would) and return its root CID."""
        root, blocks = build_file_dag(blob)
        for block in blocks:
            self.store.put(block.cid, block.data)
        self.store.pin(root)
        return root


@asynccontextmanager
async def bitswap_peers(tmp: Path, count: int, limits: BitswapLimits | None = None
                        ) -> AsyncIterator[list[BitswapPeer]]:
    async with AsyncExitStack() as stack:
        peers = []
        for index in range(count):
            store = stack.enter_context(BlockStore(tmp / f"store{index}", durable=False))
            host = await stack.enter_async_context(
                open_host(HostConfig(key_path=tmp / f"peer{index}.key")))
            bitswap = await stack.enter_async_context(Bitswap(host, store, limits=limits))
            peers.append(BitswapPeer(host, store, bitswap))
        yield peers


async def read_message(stream: INetStream, max_size: int = 8 * 1024 * 1024) -> BitswapMessage | None:
    """One length-prefixed message from ``stream``; None at a clean end of stream."""
    length, shift = 0, 0
    while True:
        byte = await stream.read(1)
        if not byte:
            return None
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if byte[0] < 0x80:
            break
    assert length <= max_size
    body = bytearray()
    while len(body) < length:
        chunk = await stream.read(length - len(body))
        assert chunk, "stream ended inside a message"
        body += chunk
    return decode_message(bytes(body))


class Inbox:
    """A raw bitswap peer's receiving side: collects every message the node sends it."""

    def __init__(self, host: IHost, protocol: TProtocol = PROTOCOL_V120) -> None:
        self.messages: list[BitswapMessage] = []
        self.changed = trio.Event()
        host.set_stream_handler(protocol, self._handle)

    async def _handle(self, stream: INetStream) -> None:
        with trio.move_on_after(HANG_GUARD_S):
            while (message := await read_message(stream)) is not None:
                self.messages.append(message)
                self.changed.set()
                self.changed = trio.Event()

    async def wait_for(self, predicate: object, what: str) -> None:
        assert callable(predicate)
        with trio.fail_after(HANG_GUARD_S):
            while not predicate(self.messages):
                await self.changed.wait()


async def send_raw(host: IHost, peer: BitswapPeer, data: bytes, close: bool = True,
                   protocol: TProtocol = PROTOCOL_V120) -> INetStream:
    """Open a bitswap stream from ``host`` to ``peer`` and write ``data`` as is."""
    with trio.fail_after(HANG_GUARD_S):
        stream = await host.new_stream(peer.host.get_id(), [protocol])
        await stream.write(data)
        if close:
            await stream.close()
    return stream


async def send_message(host: IHost, peer: BitswapPeer, message: BitswapMessage) -> None:
    await send_raw(host, peer, frame(message))
