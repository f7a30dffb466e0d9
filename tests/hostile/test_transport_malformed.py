"""Malformed bytes below gossip: the Noise handshake, Yamux frames and identify.

The target (full gossip stack on 127.0.0.1) must close what the attacker opened, stay up,
and keep delivering an honest member's gossip.
"""

from __future__ import annotations

import random
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH

from node.host import HostConfig, connect, host_multiaddrs, open_host
from node.libp2p_compat import LongRunningSwarm
from tests.hostile.attacks import frame, open_noise_session, open_raw_stream, varint
from tests.hostile.gossip_arena import HANG_GUARD_S, Arena, open_arena, wait_until
from tests.network.conftest import ECHO_PROTOCOL, echo_handler, echo_roundtrip

YAMUX_HEADER = ">BBHII"  # version, type, flags, stream id, length


def _target_tcp_addr(arena: Arena) -> multiaddr.Multiaddr:
    return arena.target.host.get_transport_addrs()[0]


async def _closed_by_peer(read_some: object) -> None:
    """Read until the target closes: EOF or a reset, within the hang guard."""
    assert callable(read_some)
    with trio.fail_after(HANG_GUARD_S):
        while True:
            try:
                data = await read_some()
            except Exception:
                return
            if not data:
                return


def _multistream(protocol: str) -> bytes:
    def line(text: str) -> bytes:
        return varint(len(text) + 1) + text.encode() + b"\n"

    return line("/multistream/1.0.0") + line(protocol)


NOISE_ATTACKS = {
    "random bytes": random.Random(1).randbytes(300),
    "noise agreed, handshake garbage": _multistream("/noise") + b"\x00\x20" + b"\xee" * 32,
    "noise agreed, oversized handshake frame": _multistream("/noise") + b"\xff\xff" + b"\x00" * 64,
}


async def test_noise_handshake_garbage(tmp_path: Path) -> None:
    """All at once: the target gives up on each only at its 10 s handshake timeout."""
    async with open_arena(tmp_path) as arena:
        addr = _target_tcp_addr(arena)
        closed: list[str] = []

        async def attack(name: str) -> None:
            ip, port = addr.value_for_protocol("ip4"), int(addr.value_for_protocol("tcp"))
            async with await trio.open_tcp_stream(ip, port) as tcp:
                await tcp.send_all(NOISE_ATTACKS[name])
                await _closed_by_peer(lambda: tcp.receive_some(4096))
                closed.append(name)

        async with trio.open_nursery() as nursery:
            for name in NOISE_ATTACKS:
                nursery.start_soon(attack, name)
            await arena.honest_message_arrives(b"during the handshake attacks")
        assert sorted(closed) == sorted(NOISE_ATTACKS)
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the handshake attacks")


def _yamux(typ: int, flags: int, stream_id: int, length: int, version: int = 0) -> bytes:
    import struct

    return struct.pack(YAMUX_HEADER, version, typ, flags, stream_id, length)


YAMUX_ATTACKS = {
    "unknown version and type": _yamux(0xEE, 0xEE, 1, 4) + b"\x00" * 4,
    "data frame over the window": _yamux(0, 0x1, 1, 2**31) + b"\x00" * 64,
    "random bytes": random.Random(2).randbytes(256),
    "syn then a data frame longer than sent": _yamux(0, 0x1, 1, 4000) + b"\x00" * 10,
    "window update overflow": _yamux(0, 0x1, 1, 0) + _yamux(1, 0, 1, 2**32 - 1) * 4,
    "go away with a bogus code": _yamux(3, 0, 0, 0xFFFFFFFF),
}


async def test_yamux_frame_garbage(tmp_path: Path) -> None:
    async with open_arena(tmp_path) as arena:

        async def attack(name: str) -> None:
            session = await open_noise_session(
                create_new_key_pair(), _target_tcp_addr(arena), arena.target.peer_id
            )
            await session.write(YAMUX_ATTACKS[name])
            with trio.move_on_after(2):  # some frames are legal but useless: the link may stay
                await _closed_by_peer(lambda: session.read(4096))
            await session.close()

        async with trio.open_nursery() as nursery:
            for name in YAMUX_ATTACKS:
                nursery.start_soon(attack, name)
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the yamux attacks")


async def test_identify_answered_with_garbage(tmp_path: Path) -> None:
    """The target identifies every peer that connects; this one answers with junk."""

    async def junk_identify(stream: INetStream) -> None:
        await stream.write(frame(b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 20))
        await stream.close()

    async with open_arena(tmp_path) as arena:
        attacker = await arena.stack.enter_async_context(
            open_host(HostConfig(key_path=tmp_path / "identify-attacker.key"))
        )
        attacker.set_stream_handler(TProtocol(IDENTIFY), junk_identify)
        await connect(attacker, arena.target_addr)
        await arena.honest_message_arrives(b"after junk identify")
        assert arena.target_alive()


@pytest.mark.parametrize(
    "payload",
    [frame(b"\x0a\xff\xff\xff\xff\x0f"), b"\xff" * 11, frame(b"\x12\x03abc" * 50)],
    ids=["undecodable", "overlong varint", "bogus addresses"],
)
async def test_identify_push_garbage(tmp_path: Path, payload: bytes) -> None:
    async with open_arena(tmp_path) as arena:
        stream = await open_raw_stream(arena.attacker, arena.target.peer_id, TProtocol(IDENTIFY_PUSH))
        await stream.write(payload)
        await stream.close()
        await arena.honest_message_arrives(b"after identify push")
        assert arena.target_alive()


async def test_a_protocol_handler_that_raises_is_contained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any protocol's decoder may meet bytes it cannot handle; the exception ends that
    stream, is logged with the peer, and counted against it, and the host serves on."""
    decoder_protocol = TProtocol("/fl-test/strict-decoder/1.0.0")

    async def strict_decoder(stream: INetStream) -> None:
        data = await stream.read(64)
        raise ValueError(f"cannot decode {data!r}")

    async with open_arena(tmp_path) as arena:
        arena.target.host.set_stream_handler(decoder_protocol, strict_decoder)
        for attempt in range(3):
            stream = await open_raw_stream(arena.attacker, arena.target.peer_id, decoder_protocol)
            await stream.write(b"junk %d" % attempt)
            await _closed_by_peer(lambda s=stream: s.read(64))
        swarm = arena.target.host.get_network()
        assert isinstance(swarm, LongRunningSwarm)
        assert swarm.stream_faults[arena.attacker.get_id()] == 3
        assert str(arena.attacker.get_id()) in caplog.text
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the failing handler")


async def test_idle_sockets_cannot_hold_every_inbound_slot(tmp_path: Path) -> None:
    """Sockets that connect and never speak once held an inbound slot each for the whole
    handshake timeout: 100 of them locked a 40-slot node against every honest peer."""
    config = HostConfig(
        key_path=tmp_path / "small-target.key", max_connections=50, max_inbound=40,
        max_pending_handshakes=8,
    )  # fmt: skip
    async with open_host(config) as target:
        addr = target.get_transport_addrs()[0]
        ip, port = addr.value_for_protocol("ip4"), int(addr.value_for_protocol("tcp"))
        swarm = target.get_network()
        assert isinstance(swarm, LongRunningSwarm)
        idle = [await trio.open_tcp_stream(ip, port) for _ in range(100)]
        try:
            # every idle socket accepted (the last 8 still pending) before the honest dial
            await wait_until(lambda: swarm.evicted_handshakes >= 100 - 8, "the idle sockets")
            async with open_host(HostConfig(key_path=tmp_path / "late-honest.key")) as honest:
                with trio.fail_after(HANG_GUARD_S):
                    await connect(honest, host_multiaddrs(target)[0])
                target.set_stream_handler(ECHO_PROTOCOL, echo_handler)
                assert await echo_roundtrip(honest, target) == b"ping"
        finally:
            for stream in idle:
                await stream.aclose()


MULTISTREAM_ATTACKS = {
    "overlong varint": b"\xff" * 20,
    "empty line": varint(0),
    "no newline": varint(5) + b"abcde",
    "binary protocol name": _multistream("/multistream/1.0.0")[:20] + varint(3) + b"\xff\xfe\n",
    "length beyond the data": _multistream("/multistream/1.0.0")[:20] + varint(40) + b"/x\n",
}


async def test_stream_protocol_negotiation_garbage(tmp_path: Path) -> None:
    """Raw Yamux streams on an authenticated connection, with junk where multistream-select
    expects a protocol name."""
    async with open_arena(tmp_path) as arena:
        connection = arena.attacker.get_network().connections[arena.target.peer_id][0]

        async def attack(payload: bytes) -> None:
            stream = await connection.muxed_conn.open_stream()
            await stream.write(payload)
            with trio.move_on_after(1):
                await _closed_by_peer(lambda: stream.read(100))

        async with trio.open_nursery() as nursery:
            for payload in MULTISTREAM_ATTACKS.values():
                nursery.start_soon(attack, payload)
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the negotiation garbage")
