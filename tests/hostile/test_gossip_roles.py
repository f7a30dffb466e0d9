"""Each topic takes messages only from the roles that send them: a registered worker cannot
publish scores (or a committee proof) in its own name; a validator's scores still flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.messages import CommitteeProof, EvaluationScores, Message, encode_message
from protocol.state.records import Role
from tests.hostile.attacks import signed_message
from tests.hostile.gossip_arena import CHAIN_ID, ROUND, TASK, Arena, open_arena, wait_until


def scores_by(validator: bytes, workers: tuple[bytes, ...]) -> EvaluationScores:
    return EvaluationScores(
        CHAIN_ID, TASK, ROUND, validator, workers, tuple(10_000 for _ in workers),
        tuple(True for _ in workers), 910_000, b"\x07" * 32,
    )  # fmt: skip


async def _send_as_attacker(arena: Arena, message: Message, seqno: int) -> None:
    signed = signed_message(
        arena.key_of("attacker1"),
        arena.topic(message.TOPIC_KIND),
        encode_message(message),
        seqno.to_bytes(8, "big"),
    )
    await arena.inject([signed])


@pytest.mark.parametrize("kind", ["scores", "committee"])
async def test_a_registered_worker_cannot_speak_for_validators(tmp_path: Path, kind: str) -> None:
    async with open_arena(tmp_path) as arena:
        worker = arena.register_attacker(Role.WORKER)
        message: Message = (
            scores_by(worker, (arena.honest.address,))
            if kind == "scores"
            else CommitteeProof(CHAIN_ID, TASK, ROUND, worker, b"\x05" * 64)
        )
        await _send_as_attacker(arena, message, 1)
        await wait_until(
            lambda: arena.target.gossip.rejections["wrong role"] >= 1,
            "the target to reject the worker's message",
        )
        await wait_until(arena.attacker_penalised, "the worker's score to drop")
        await arena.honest_message_arrives(b"after the role attack")
        assert arena.target.received(kind) == []
        assert arena.honest.received(kind) == []  # not relayed
        assert arena.target_alive()


async def test_a_validators_scores_are_delivered_and_relayed(tmp_path: Path) -> None:
    """The control: the same message from a registered validator goes through, so the test
    above would see a relay if there were one."""
    async with open_arena(tmp_path) as arena:
        validator = arena.register_attacker(Role.VALIDATOR)
        message = scores_by(validator, (arena.honest.address,))
        await _send_as_attacker(arena, message, 2)
        await wait_until(lambda: arena.target.received("scores") == [message], "delivery")
        await wait_until(lambda: arena.honest.received("scores") == [message], "the relay")
        assert not arena.target.gossip.rejections
