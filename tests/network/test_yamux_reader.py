"""A connection's yamux read loop reads on while the connection's own writer is stuck.

Holding the receiver's write lock stands for a data write parked on a full socket. The
sender then sends a frame that needs an answer (a PING, or a SYN opening a new stream)
followed by data on a stream already open. py-libp2p 0.8.1's read loop answers inline,
waits for the lock and reads nothing more; with two peers in that state at once (each
sending the other blocks) the connection wedges until a timeout cancels a writer.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux.yamux import FLAG_SYN, TYPE_PING, YAMUX_HEADER_FORMAT, Yamux

from node.libp2p_compat import MAX_PENDING_CONTROL_FRAMES
from tests.network.conftest import HANG_GUARD_S, open_network

SINK = TProtocol("/fl-node-test/sink/1.0.0")


def muxer_between(host: IHost, other: IHost) -> Yamux:
    muxed = host.get_network().get_connections(other.get_id())[0].muxed_conn
    assert isinstance(muxed, Yamux)
    return muxed


def ping_frame(opaque: int) -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_PING, FLAG_SYN, 0, opaque)


async def buffered_within(muxer: Yamux, stream_id: int, expected: bytes, patience: float) -> bool:
    """Whether ``muxer``'s read loop puts ``expected`` into the stream's buffer within
    ``patience`` seconds (the stream's reader is parked, so nothing else takes it out)."""
    with trio.move_on_after(patience):
        while expected not in bytes(muxer.stream_buffers.get(stream_id, b"")):
            await trio.sleep(0.01)
        return True
    return False


async def run_with_stuck_writer(
    tmp_path: Path, provoke: str, provocations: int = 1, patience: float = HANG_GUARD_S
) -> tuple[bool, bytes]:
    """Open a stream left -> right, hold right's write lock, make right's read loop owe
    ``provocations`` answers of kind ``provoke``, then send data on the open stream.
    Whether right's read loop took that data in while the lock was held, and what right's
    handler read in the end."""
    first_read, resume, done = trio.Event(), trio.Event(), trio.Event()
    received = bytearray()

    async def sink(stream: INetStream) -> None:
        received.extend(await stream.read(1024))
        first_read.set()
        await resume.wait()  # a reading handler would drain the buffer the test watches
        while len(received) < len(b"before while stuck after"):
            received.extend(await stream.read(1024))
        done.set()

    async with open_network(tmp_path) as net:
        left = await net.host(echo=False)
        right = await net.host(echo=False)
        right.set_stream_handler(SINK, sink)
        await left.connect(PeerInfo(right.get_id(), right.get_addrs()))
        stream = await left.new_stream(right.get_id(), [SINK])
        await stream.write(b"before ")
        with trio.fail_after(HANG_GUARD_S):
            await first_read.wait()
        stream_id = stream.muxed_stream.stream_id  # type: ignore[attr-defined]
        left_muxer, right_muxer = muxer_between(left, right), muxer_between(right, left)
        async with trio.open_nursery() as nursery:
            async with right_muxer._write_lock:
                for n in range(provocations):
                    if provoke == "ping":
                        await left_muxer._write_frame(ping_frame(n))
                    else:  # a new stream: SYN now, its negotiation finishes after the lock
                        known = set(right_muxer.streams)
                        nursery.start_soon(left.new_stream, right.get_id(), [SINK])
                        with trio.fail_after(HANG_GUARD_S):  # right has read the SYN
                            while set(right_muxer.streams) <= known:
                                await trio.sleep(0.01)
                await stream.write(b"while stuck ")
                read_on = await buffered_within(right_muxer, stream_id, b"while stuck", patience)
            await stream.write(b"after")
            resume.set()
            with trio.fail_after(HANG_GUARD_S):
                await done.wait()
    return read_on, bytes(received)


@pytest.mark.parametrize("provoke", ["ping", "new stream"])
async def test_the_read_loop_reads_on_while_its_writer_is_stuck(
    tmp_path: Path, provoke: str
) -> None:
    read_on, received = await run_with_stuck_writer(tmp_path, provoke)
    assert read_on, f"the read loop stopped reading after a {provoke} it had to answer"
    assert received == b"before while stuck after"


async def test_a_ping_flood_against_a_stuck_writer_is_bounded_not_queued_without_end(
    tmp_path: Path,
) -> None:
    """Past MAX_PENDING_CONTROL_FRAMES unanswered pings the read loop answers inline again
    (back-pressure on the flooder), so the data behind the flood waits for the writer:
    with the lock held nothing can free it, so a short wait shows it."""
    read_on, received = await run_with_stuck_writer(
        tmp_path, "ping", provocations=MAX_PENDING_CONTROL_FRAMES + 1, patience=1.0
    )
    assert not read_on
    assert received == b"before while stuck after"  # nothing lost once the writer is free
