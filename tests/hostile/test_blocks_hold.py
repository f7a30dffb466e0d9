"""Hostile peers holding a node's block-serving slots (node.blocks.exchange), on real hosts.

The attack: several identities open block streams to a node and never complete a request;
one stream of each identity trickles a byte now and then. Every dropped stream is opened
again at once, as a real attacker would. An honest peer must still get the blocks the
node holds. Every wait here is a hang guard, never a timing assertion.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from node.blocks.exchange import (
    PROTOCOL_ID,
    RESPONSE_HEADER,
    STATUS_BLOCK,
    STATUS_BUSY,
    BlockExchange,
    ExchangeLimits,
    encode_request,
)
from node.blocks.standing import PeerStanding
from node.blocks.store import BlockStore
from node.blocks.unixfs import MAX_BLOCK_SIZE
from protocol.cid import cid_of
from tests.network.conftest import HANG_GUARD_S, Network, open_network, wait_until

# A request frame announcing 8,000 bytes (uvarint 0xc0 0x3e) that the trickler never ends.
TRICKLE_PREFIX = b"\xc0\x3e"
REOPEN_PAUSE_S = 0.2  # an attacker's pause before re-opening a dropped stream


async def serving_node(net: Network, data_dir: Path, limits: ExchangeLimits,
                       **options: object) -> BlockExchange:
    host = await net.host(echo=False)
    store = BlockStore(data_dir / "blocks")
    net.stack.callback(store.close)
    exchange = BlockExchange(host, store, limits=limits, **options)  # type: ignore[arg-type]
    return await net.stack.enter_async_context(exchange)


def info_of(host: IHost) -> PeerInfo:
    return PeerInfo(host.get_id(), host.get_addrs())


@dataclass
class HoldStats:
    opened: int = 0  # streams the server let the attacker open
    ended: int = 0  # streams the server ended (reset, busy, EOF, disconnect)


@dataclass
class Holder:
    """One attacker identity holding ``streams`` block streams, one of them trickling."""

    host: IHost
    stats: HoldStats = field(default_factory=HoldStats)

    async def hold(self, target: PeerInfo, streams: int, trickle_every_s: float) -> None:
        async with trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(self._hold_one, target, index == 0, trickle_every_s)

    async def _hold_one(self, target: PeerInfo, trickle: bool, every_s: float) -> None:
        while True:
            try:
                await self.host.connect(target)
                stream = await self.host.new_stream(target.peer_id, [PROTOCOL_ID])
                self.stats.opened += 1
                if trickle:
                    await stream.write(TRICKLE_PREFIX)
                    while True:
                        await trio.sleep(every_s)
                        await stream.write(b"\x00")
                else:
                    await stream.read(1)  # returns or raises only when the server ends it
            except Exception:
                pass
            self.stats.ended += 1
            await trio.sleep(REOPEN_PAUSE_S)


async def make_holders(net: Network, identities: int) -> list[Holder]:
    """Attacker hosts; made before the attack's nursery so they outlive it."""
    return [Holder(await net.host(echo=False)) for _ in range(identities)]


def start_holders(nursery: trio.Nursery, holders: Sequence[Holder], target: PeerInfo,
                  streams: int, trickle_every_s: float = 0.3) -> None:
    for holder in holders:
        nursery.start_soon(holder.hold, target, streams, trickle_every_s)


async def ask_once(client: IHost, server: IHost, cid: str) -> tuple[int, bytes]:
    """One request on a fresh stream: (status, block bytes)."""
    stream: INetStream = await client.new_stream(server.get_id(), [PROTOCOL_ID])
    try:
        await stream.write(encode_request([cid]))
        header = await read_exactly(stream, RESPONSE_HEADER.size)
        status, length = RESPONSE_HEADER.unpack(header)
        data = await read_exactly(stream, length) if status == STATUS_BLOCK else b""
        return status, data
    finally:
        await stream.close()


async def read_exactly(stream: INetStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            raise EOFError(f"stream ended after {len(data)} of {size} bytes")
        data += chunk
    return data


async def probe_until_served(client: IHost, server: IHost, cid: str, guard_s: float,
                             pause_s: float = 0.2) -> tuple[bytes | None, list[str]]:
    """Ask for ``cid`` on fresh streams until it arrives or ``guard_s`` passes; the block (or
    None) and what every unsuccessful probe got."""
    misses: list[str] = []
    with trio.move_on_after(guard_s):
        while True:
            try:
                await client.connect(info_of(server))
                status, data = await ask_once(client, server, cid)
            except Exception as exc:
                misses.append(type(exc).__name__)
            else:
                if status == STATUS_BLOCK:
                    return data, misses
                misses.append("busy" if status == STATUS_BUSY else f"status {status}")
            await trio.sleep(pause_s)
    return None, misses


def total_opened(holders: Sequence[Holder]) -> int:
    return sum(holder.stats.opened for holder in holders)


async def test_64_held_streams_do_not_lock_an_honest_peer_out(tmp_path: Path) -> None:
    """8 identities x 8 streams, each identity trickling on one, re-opening all they lose."""
    blob = b"a block the node holds"
    limits = ExchangeLimits(request_arrival_s=1.0)
    reported: list[tuple[PeerID, str]] = []
    async with open_network(tmp_path) as net:
        server = await serving_node(net, tmp_path / "server", limits,
                                    on_bad_peer=lambda peer, why: reported.append((peer, why)))
        root = await server.publish(blob)
        honest = await net.host(echo=False)
        holders = await make_holders(net, 8)
        async with trio.open_nursery() as attack:
            start_holders(attack, holders, info_of(server.host), 8)
            await wait_until(lambda: total_opened(holders) >= 64, "the attackers' 64 streams")
            data, misses = await probe_until_served(honest, server.host, root, HANG_GUARD_S)
            attack.cancel_scope.cancel()
        assert data == blob, (
            f"the honest peer was never served while the streams were held: "
            f"{len(misses)} probes got {sorted(set(misses))}"
        )
    # The attackers were dropped and struck, some banned; the honest peer never was.
    attackers = {holder.host.get_id() for holder in holders}
    assert reported and {peer for peer, _ in reported} <= attackers
    assert server.strikes(honest.get_id()) == 0 and not server.is_banned(honest.get_id())


async def test_a_trickled_request_cannot_extend_its_deadline(tmp_path: Path) -> None:
    limits = ExchangeLimits(request_arrival_s=1.0, strikes_to_ban=2)
    async with open_network(tmp_path) as net:
        server = await serving_node(net, tmp_path / "server", limits)
        attacker = await net.host(echo=False)
        await attacker.connect(info_of(server.host))
        silent = await attacker.new_stream(server.host.get_id(), [PROTOCOL_ID])
        trickling = await attacker.new_stream(server.host.get_id(), [PROTOCOL_ID])
        await trickling.write(TRICKLE_PREFIX)
        trickled = 0
        # Bytes keep coming (far more often than the 1 s deadline) until the server ends it.
        with trio.fail_after(HANG_GUARD_S):
            try:
                while True:
                    await trio.sleep(0.1)
                    await trickling.write(b"\x00")
                    trickled += 1
            except Exception:
                pass
        assert await stream_ended(silent), "the peer's other block stream was left open"
        await wait_disconnected(attacker, server.host)
        await wait_until(lambda: server.streams_served == 0, "the attacker's slots freed")
        assert server.strikes(attacker.get_id()) == 1
        assert trickled >= 1
        # The same again bans it: its next stream is refused before any request.
        await attacker.connect(info_of(server.host))
        again = await attacker.new_stream(server.host.get_id(), [PROTOCOL_ID])
        assert await stream_ended(again)
        await wait_until(lambda: server.is_banned(attacker.get_id()), "the attacker's ban")
        await wait_disconnected(attacker, server.host)
        await attacker.connect(info_of(server.host))
        try:
            refused = await attacker.new_stream(server.host.get_id(), [PROTOCOL_ID])
            await refused.write(encode_request([cid_of(b"anything")]))
        except Exception:  # reset while opening: refused all the same
            pass
        else:
            assert await stream_ended(refused)
        await wait_disconnected(attacker, server.host)
        assert server.streams_served == 0


async def test_a_late_request_is_served_unstruck_while_a_silent_stream_is_struck(
    tmp_path: Path,
) -> None:
    """The node drops a silent provider after ``read_timeout_s`` as a client, but as a
    server it strikes only at ``request_arrival_s``: an honest request that waited behind a
    loaded event loop longer than the first is served; a stream that never asks is struck."""
    limits = ExchangeLimits(read_timeout_s=0.3, request_arrival_s=3.0, strikes_to_ban=1)
    async with open_network(tmp_path) as net:
        server = await serving_node(net, tmp_path / "server", limits)
        root = await server.publish(b"a blob for a slow peer")
        slow, staller = await net.host(echo=False), await net.host(echo=False)
        await slow.connect(info_of(server.host))
        stream = await slow.new_stream(server.host.get_id(), [PROTOCOL_ID])
        await trio.sleep(1.0)  # the request leaves later than read_timeout_s, before arrival
        await stream.write(encode_request([root]))
        header = await read_exactly(stream, RESPONSE_HEADER.size)
        assert RESPONSE_HEADER.unpack(header) == (STATUS_BLOCK, len(b"a blob for a slow peer"))
        assert server.strikes(slow.get_id()) == 0 and not server.is_banned(slow.get_id())
        await staller.connect(info_of(server.host))
        silent = await staller.new_stream(server.host.get_id(), [PROTOCOL_ID])
        assert await stream_ended(silent)
        assert server.is_banned(staller.get_id())
        assert not server.is_banned(slow.get_id())


async def wait_disconnected(client: IHost, server: IHost) -> None:
    await wait_until(lambda: not client.get_network().get_connections(server.get_id()),
                     "the server to close the connection")


async def stream_ended(stream: INetStream) -> bool:
    """True once the server ends ``stream`` without answering (reset or EOF)."""
    with trio.fail_after(HANG_GUARD_S):
        try:
            return await stream.read(1) == b""
        except Exception:
            return True


async def test_members_are_served_while_strangers_hold_every_slot_they_may(tmp_path: Path) -> None:
    """The cheapest attack around per-peer limits: many identities, each under them.

    16 identities x 3 streams fill the strangers' share (64 - 16 reserved); the deadline is
    long, so nothing ends the hold during the test. A member is served at once; a fresh
    stranger waits (busy), which is the price of a reserve that fresh identities cannot buy.
    """
    blob = b"a model update the committee needs"
    limits = ExchangeLimits(request_arrival_s=HANG_GUARD_S)
    async with open_network(tmp_path) as net:
        member = await net.host(echo=False)
        server = await serving_node(net, tmp_path / "server", limits,
                                    is_member=lambda peer: peer == member.get_id())
        root = await server.publish(blob)
        stranger = await net.host(echo=False)
        holders = await make_holders(net, 16)
        async with trio.open_nursery() as attack:
            start_holders(attack, holders, info_of(server.host), 3, trickle_every_s=0.5)
            share = limits.max_streams_total - limits.member_reserve
            await wait_until(lambda: server.streams_served >= share, "the strangers' share filled")
            await member.connect(info_of(server.host))
            served_member = await ask_once(member, server.host, root)
            await stranger.connect(info_of(server.host))
            stranger_status, _ = await ask_once(stranger, server.host, root)
            held = server.streams_served
            attack.cancel_scope.cancel()
    assert served_member == (STATUS_BLOCK, blob)
    assert stranger_status == STATUS_BUSY
    assert held == share  # strangers never got into the reserve


async def test_unread_responses_are_bounded_per_peer_and_struck(tmp_path: Path) -> None:
    big = os.urandom(MAX_BLOCK_SIZE)
    # 20 MiB per response, more than a yamux window ever grows to: unread, its write stalls.
    request = encode_request([cid_of(big)] * 20)
    limits = ExchangeLimits(request_timeout_s=1.0, strikes_to_ban=3, request_arrival_s=HANG_GUARD_S)
    async with open_network(tmp_path) as net:
        server = await serving_node(net, tmp_path / "server", limits)
        cid = cid_of(big)
        server.store.put(cid, big)
        greedy = await net.host(echo=False)
        await greedy.connect(info_of(server.host))
        streams = []
        for _ in range(limits.max_requests_per_peer + 1):
            stream = await greedy.new_stream(server.host.get_id(), [PROTOCOL_ID])
            await stream.write(request)
            streams.append(stream)
        # Only max_requests_per_peer are answered at once; the next one is told busy.
        with trio.fail_after(HANG_GUARD_S):
            statuses = [RESPONSE_HEADER.unpack(await read_exactly(s, RESPONSE_HEADER.size))[0]
                        for s in streams]
        assert statuses.count(STATUS_BUSY) == 1 and statuses.count(STATUS_BLOCK) == 4
        # The four unread responses time out: four strikes, a ban.
        await wait_until(lambda: server.is_banned(greedy.get_id()), "the greedy peer's ban")
        await wait_until(lambda: server.streams_served == 0, "the slots to be freed")


async def test_a_member_that_holds_slots_keeps_its_connection_but_loses_the_reserve(
    tmp_path: Path,
) -> None:
    # One stranger slot and two reserved; one strike bans.
    limits = ExchangeLimits(max_streams_total=3, member_reserve=2, request_arrival_s=0.5,
                            request_timeout_s=HANG_GUARD_S, strikes_to_ban=1)
    big = os.urandom(MAX_BLOCK_SIZE)
    reported: list[PeerID] = []
    async with open_network(tmp_path) as net:
        holder, member = await net.host(echo=False), await net.host(echo=False)
        members = {holder.get_id(), member.get_id()}
        server = await serving_node(net, tmp_path / "server", limits,
                                    is_member=members.__contains__,
                                    on_bad_peer=lambda peer, why: reported.append(peer))
        root = await server.publish(b"for members")
        server.store.put(cid_of(big), big)
        await holder.connect(info_of(server.host))
        silent = await holder.new_stream(server.host.get_id(), [PROTOCOL_ID])
        assert await stream_ended(silent)
        assert reported == [holder.get_id()] and server.is_banned(holder.get_id())
        # Struck, not dropped: a member's connection also carries the task's gossip.
        assert holder.get_network().get_connections(server.host.get_id())
        # A stranger takes the strangers' only slot (a 20 MiB response it does not read).
        stranger = await net.host(echo=False)
        await stranger.connect(info_of(server.host))
        hog = await stranger.new_stream(server.host.get_id(), [PROTOCOL_ID])
        await hog.write(encode_request([cid_of(big)] * 20))
        await wait_until(lambda: server.streams_served == 1, "the stranger's slot taken")
        # The banned member now waits with the strangers; the other member is served.
        assert (await ask_once(holder, server.host, root))[0] == STATUS_BUSY
        await member.connect(info_of(server.host))
        assert await ask_once(member, server.host, root) == (STATUS_BLOCK, b"for members")
        await hog.reset()


def test_peer_standing_bans_forgives_and_stays_bounded() -> None:
    standing = PeerStanding(strikes_to_ban=2, ban_s=10.0, max_peers=3)
    peers = [PeerID(bytes([index]) * 4) for index in range(5)]
    assert not standing.strike(peers[0], now=0.0)
    assert standing.strike(peers[0], now=1.0) and standing.banned(peers[0], now=10.9)
    assert not standing.banned(peers[0], now=11.0)  # served its ban
    assert not standing.strike(peers[1], now=0.0)
    assert not standing.strike(peers[1], now=20.0)  # the first strike was forgiven
    for peer in peers[2:]:
        standing.strike(peer, now=21.0)
    assert len(standing) == 3 and standing.strikes(peers[0]) == 0  # the oldest forgotten
