"""A yamux write to a shut send window sleeps until the peer's window update, instead of
polling every 10 ms (node.libp2p_compat.WindowWaitingYamuxStream), and still gives up after
the bound when the peer never reads. Real hosts on 127.0.0.1."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.exceptions import MuxedStreamError

from node import libp2p_compat
from node.libp2p_compat import WindowWaitingYamuxStream
from tests.network.conftest import HANG_GUARD_S, open_network

SLOW_SINK = TProtocol("/fl-node-test/slow-sink/1.0.0")


def past_the_window(send_window: int) -> bytes:
    """More than the stream's whole send window (py-libp2p opens streams with 4 MB)."""
    return random.Random(7).randbytes(send_window + 700_000)


async def test_a_writer_on_a_shut_window_wakes_on_the_update_without_polling(
    tmp_path: Path,
) -> None:
    received = bytearray()
    reading = trio.Event()
    payload = b""

    async def slow_sink(stream: INetStream) -> None:
        await reading.wait()  # the writer fills the window and waits meanwhile
        while len(received) < len(payload):
            received.extend(await stream.read(65_536))

    async with open_network(tmp_path) as net:
        writer, reader = await net.host(echo=False), await net.host(echo=False)
        reader.set_stream_handler(SLOW_SINK, slow_sink)
        await writer.connect(PeerInfo(reader.get_id(), reader.get_addrs()))
        stream = await writer.new_stream(reader.get_id(), [SLOW_SINK])
        muxed = stream.muxed_stream
        assert isinstance(muxed, WindowWaitingYamuxStream)
        payload = past_the_window(muxed.send_window)
        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.write, payload)
                while muxed.send_window > 0:  # the reader has not read: the window shuts
                    await trio.sleep(0.05)
                await trio.sleep(1.0)  # upstream would have polled ~100 times by now
                reading.set()
            while len(received) < len(payload):
                await trio.sleep(0.05)
    assert bytes(received) == payload
    assert muxed._zero_window_waits == 0  # upstream's poll counter: never polled


async def test_a_writer_gives_up_when_the_peer_never_opens_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libp2p_compat, "ZERO_WINDOW_TIMEOUT_S", 0.5)

    async def never_reads(stream: INetStream) -> None:
        await trio.sleep_forever()

    async with open_network(tmp_path) as net:
        writer, reader = await net.host(echo=False), await net.host(echo=False)
        reader.set_stream_handler(SLOW_SINK, never_reads)
        await writer.connect(PeerInfo(reader.get_id(), reader.get_addrs()))
        stream = await writer.new_stream(reader.get_id(), [SLOW_SINK])
        with trio.fail_after(HANG_GUARD_S), pytest.raises(StreamReset) as failed:
            await stream.write(past_the_window(stream.muxed_stream.send_window))  # type: ignore[attr-defined]
    assert isinstance(failed.value.__cause__, MuxedStreamError)
    assert "window update after 0.5 s" in str(failed.value.__cause__)
