"""Attacks the node already withstood when it was first tried as an attacker would; each is
kept here so it stays withstood. The attacker writes correctly signed messages on a raw
pubsub stream, so only the node's own validation stands in the way.

For each: the target stays up, keeps delivering the honest member's gossip, never delivers or
relays the attack, and the attacker pays (a rejected message lowers its score) — except for
replays of an honest member's own signed messages, which an honest relay forwards too and
which therefore cost the relay nothing: they are only never delivered twice.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import msgpack
import pytest
from libp2p.pubsub.pb import rpc_pb2

from protocol.messages import MAX_MESSAGE_SIZE, encode_message
from protocol.state.records import Role
from tests.hostile.attacks import signed_message
from tests.hostile.gossip_arena import (
    ROUND,
    Arena,
    address_of,
    announcement,
    open_arena,
    wait_until,
)

_UNPICKLED: list[str] = []


def _mark_unpickled(what: str) -> None:
    _UNPICKLED.append(what)


class _Payload:
    """Whoever unpickles this runs ``_mark_unpickled``: a stand-in for arbitrary code."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_mark_unpickled, ("gossip payload",))


def _attack_bodies(arena: Arena) -> dict[str, bytes]:
    attacker = address_of(arena.attacker.get_id())
    valid = encode_message(announcement(attacker, tag=b"attack"))
    wrong_schema = msgpack.unpackb(valid)
    wrong_schema["n_samples"] = "600"
    return {
        "garbage": b"\x00\xffgarbage\x93",
        "pickle": pickle.dumps({"update": _Payload()}),
        "wrong schema": msgpack.packb(wrong_schema, use_bin_type=True),
        "extra field": msgpack.packb({**msgpack.unpackb(valid), "x": 1}, use_bin_type=True),
        "oversized": valid + b"\x00" * MAX_MESSAGE_SIZE,
        "misused key": encode_message(announcement(arena.honest.address, tag=b"in their name")),
        "unregistered signer": valid,
    }


REJECTED = {
    "garbage": "malformed",
    "pickle": "malformed",
    "wrong schema": "malformed",
    "extra field": "malformed",
    "oversized": "oversized",
    "misused key": "address mismatch",
    "unregistered signer": "unregistered signer",
}


@pytest.mark.parametrize("attack", list(REJECTED))
async def test_signed_invalid_messages_are_rejected_and_cost_the_sender(
    tmp_path: Path, attack: str
) -> None:
    async with open_arena(tmp_path) as arena:
        if attack != "unregistered signer":
            arena.register_attacker(Role.WORKER)
        body = _attack_bodies(arena)[attack]
        message = signed_message(arena.key_of("attacker1"), arena.topic(), body, b"\x00" * 8)
        await arena.inject([message])
        await wait_until(
            lambda: arena.target.gossip.rejections[REJECTED[attack]] >= 1,
            f"the target to reject the {attack} message",
        )
        await wait_until(arena.attacker_penalised, "the attacker's score to drop")
        assert _UNPICKLED == []
        assert arena.target_alive()
        await arena.honest_message_arrives(attack.encode())
        # nothing relayed: the honest member saw only its own message
        assert arena.honest.received() == [announcement(arena.honest.address, tag=attack.encode())]


def _honest_signed(arena: Arena, round_: int, tag: bytes, seqno: int) -> rpc_pb2.Message:
    body = encode_message(announcement(arena.honest.address, tag=tag, round_=round_))
    return signed_message(arena.key_of("honest"), arena.topic(), body, seqno.to_bytes(8, "big"))


async def test_a_past_round_message_replayed_is_ignored(tmp_path: Path) -> None:
    async with open_arena(tmp_path) as arena:
        old = _honest_signed(arena, ROUND - 2, b"two rounds ago", 10**6)
        for _ in range(3):
            await arena.inject([old])
        await wait_until(
            lambda: arena.target.gossip.ignored["wrong round"] >= 1, "the stale replay ignored"
        )
        await arena.honest_message_arrives(b"after the replays")
        assert [m.round for m in arena.target.received()] == [ROUND]
        assert arena.target_alive()
        # an honest relay a round behind forwards the same message: no penalty for it
        assert arena.target.node.guard.score(arena.attacker.get_id()) == 0


async def test_a_current_round_message_replayed_by_a_stranger_is_dropped_as_seen(
    tmp_path: Path,
) -> None:
    async with open_arena(tmp_path) as arena:
        message = _honest_signed(arena, ROUND, b"replayed", 42)
        await arena.inject([message])  # the stranger relays it first: valid, so delivered
        await wait_until(lambda: len(arena.target.received()) == 1, "the first copy")
        for _ in range(5):
            await arena.inject([message])
        await arena.honest_message_arrives(b"after the replays")
        assert len(arena.target.received()) == 2
        assert arena.target.received()[0] == announcement(arena.honest.address, tag=b"replayed")
        assert arena.target_alive()


async def test_repeated_rejected_messages_get_the_sender_banned_and_disconnected(
    tmp_path: Path,
) -> None:
    """Correctly signed, each one cheap to make, each rejected: about ten graylist."""
    async with open_arena(tmp_path) as arena:
        arena.register_attacker(Role.WORKER)
        key = arena.key_of("attacker1")
        junk = [
            signed_message(key, arena.topic(), b"junk %d" % i, i.to_bytes(8, "big"))
            for i in range(30)
        ]
        await arena.inject(junk)
        attacker = arena.attacker.get_id()
        connections = arena.target.host.get_network().connections
        await wait_until(
            lambda: attacker in arena.target.node.guard.banned_until and attacker not in connections,
            "the target to ban and disconnect the sender",
        )
        assert arena.target.gossip.rejections["malformed"] >= 10
        assert arena.target_alive()
        await arena.honest_message_arrives(b"after the rejected flood")
