"""protocol.gossip_rules.validate: each rule alone, without a network."""

from __future__ import annotations

from collections.abc import Hashable

import msgpack
import pytest

from protocol.cid import cid_of
from protocol.gossip_rules import (
    ADDRESS_MISMATCH,
    MALFORMED,
    OVERSIZED,
    SENDER_ROLES,
    UNKNOWN_KIND,
    UNREGISTERED,
    WRONG_CHAIN,
    WRONG_ROLE,
    WRONG_ROUND,
    WRONG_TASK,
    WRONG_TOPIC,
    Accept,
    GossipView,
    Ignore,
    Incoming,
    Member,
    Reject,
    member_roles,
    validate,
)
from protocol.messages import (
    MAX_MESSAGE_SIZE,
    CommitteeProof,
    EvaluationScores,
    Message,
    ModelAnnouncement,
    encode_message,
)
from protocol.state.records import Role

CHAIN_ID = 31337
TASK = b"\x5f" * 20
ROUND = 5
WORKER, VALIDATOR, REQUESTER = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
MEMBERS = {
    "worker-peer": Member(WORKER, Role.WORKER),
    "validator-peer": Member(VALIDATOR, Role.VALIDATOR),
    "requester-peer": Member(REQUESTER, Role.REQUESTER),
    "roleless-peer": Member(VALIDATOR, None),
}


def view(current_round: int = ROUND, window: int = 1) -> GossipView:
    def member(signer: Hashable) -> Member | None:
        return MEMBERS.get(signer)  # type: ignore[call-overload]

    return GossipView(CHAIN_ID, TASK, current_round, window, member)


def announcement(worker: bytes = WORKER, round_: int = ROUND, **changes: object) -> ModelAnnouncement:
    fields: dict[str, object] = {
        "chain_id": CHAIN_ID, "task": TASK, "round": round_, "worker": worker,
        "cid": cid_of(b"update"), "n_samples": 600,
    }  # fmt: skip
    fields.update(changes)
    return ModelAnnouncement(**fields)  # type: ignore[arg-type]


def scores(validator: bytes = VALIDATOR) -> EvaluationScores:
    return EvaluationScores(
        CHAIN_ID, TASK, ROUND, validator, (WORKER,), (10,), (True,), 900_000, b"\x07" * 32
    )


def proof(validator: bytes = VALIDATOR) -> CommitteeProof:
    return CommitteeProof(CHAIN_ID, TASK, ROUND, validator, b"\x09" * 64)


def verdict_of(message: Message | bytes, signer: str = "worker-peer", kind: str | None = None,
               current_round: int = ROUND) -> Accept | Reject | Ignore:  # fmt: skip
    data = message if isinstance(message, bytes) else encode_message(message)
    topic = kind or (message.TOPIC_KIND if not isinstance(message, bytes) else "models")
    return validate(Incoming(data, topic, signer), view(current_round))


def rule_of(verdict: Accept | Reject | Ignore) -> str:
    assert not isinstance(verdict, Accept), verdict
    return verdict.rule


def test_each_sender_role_is_accepted_on_its_own_topic() -> None:
    cases: list[tuple[Message, str]] = [
        (announcement(), "worker-peer"),
        (proof(), "validator-peer"),
        (scores(), "validator-peer"),
    ]
    for message, signer in cases:
        verdict = verdict_of(message, signer)
        assert verdict == Accept(message, MEMBERS[signer].address)


@pytest.mark.parametrize(
    ("message", "signer", "kind"),
    [
        (scores(WORKER), "worker-peer", "scores"),  # a worker scoring in its own name
        (proof(WORKER), "worker-peer", "committee"),
        (announcement(VALIDATOR), "validator-peer", "models"),
        (announcement(REQUESTER), "requester-peer", "models"),
        (scores(REQUESTER), "requester-peer", "scores"),
    ],
    ids=["worker scores", "worker proof", "validator announcement", "requester announcement",
         "requester scores"],  # fmt: skip
)
def test_a_member_sending_outside_its_role_is_rejected(
    message: Message, signer: str, kind: str
) -> None:
    verdict = verdict_of(message, signer, kind)
    assert isinstance(verdict, Reject) and verdict.rule == WRONG_ROLE
    assert str(MEMBERS[signer].role) in verdict.detail


def test_a_view_without_roles_skips_the_role_rule() -> None:
    assert isinstance(verdict_of(scores(VALIDATOR), "roleless-peer"), Accept)


def test_sender_roles_cover_every_topic_and_give_the_requester_none() -> None:
    assert set(SENDER_ROLES) == {"models", "committee", "scores"}
    assert all(Role.REQUESTER not in roles for roles in SENDER_ROLES.values())


def test_rules_one_by_one() -> None:
    valid = encode_message(announcement())
    assert rule_of(verdict_of(valid, kind="weights")) == UNKNOWN_KIND
    assert rule_of(verdict_of(b"\x00" * (MAX_MESSAGE_SIZE + 1))) == OVERSIZED
    assert rule_of(verdict_of(valid + b"\x00")) == MALFORMED
    wire = msgpack.unpackb(valid)
    wire["n_samples"] = "600"
    assert rule_of(verdict_of(msgpack.packb(wire, use_bin_type=True))) == MALFORMED
    assert rule_of(verdict_of(announcement(), kind="scores")) == WRONG_TOPIC
    assert rule_of(verdict_of(announcement(chain_id=1))) == WRONG_CHAIN
    assert rule_of(verdict_of(announcement(task=b"\x01" * 20))) == WRONG_TASK
    assert rule_of(verdict_of(announcement(), signer="stranger")) == UNREGISTERED
    assert rule_of(verdict_of(announcement(VALIDATOR), signer="worker-peer")) == ADDRESS_MISMATCH


def test_round_window_either_side() -> None:
    for round_ in (ROUND - 1, ROUND, ROUND + 1):
        assert isinstance(verdict_of(announcement(round_=round_)), Accept)
    ahead = verdict_of(announcement(round_=ROUND + 2))
    assert isinstance(ahead, Reject) and ahead.rule == WRONG_ROUND
    assert ahead.message is not None and ahead.message.round == ROUND + 2  # for the chain check
    stale = verdict_of(announcement(round_=ROUND - 2))
    assert isinstance(stale, Ignore) and stale.rule == WRONG_ROUND and not stale.retry
    assert isinstance(verdict_of(announcement(round_=0), current_round=0), Accept)


def test_the_first_broken_rule_decides() -> None:
    """A stranger's message in the wrong round of another chain is judged by the chain."""
    verdict = verdict_of(announcement(chain_id=1, round_=ROUND + 9), signer="stranger")
    assert rule_of(verdict) == WRONG_CHAIN
    # registration and binding come before the role and the round
    assert rule_of(verdict_of(scores(VALIDATOR), signer="worker-peer")) == ADDRESS_MISMATCH
    assert rule_of(verdict_of(scores(WORKER), signer="worker-peer")) == WRONG_ROLE


def test_verdict_text_names_the_rule() -> None:
    verdict = verdict_of(announcement(), signer="stranger")
    assert str(verdict).startswith("unregistered signer: peer stranger")


def test_member_roles() -> None:
    roles = member_roles([WORKER], [VALIDATOR], REQUESTER)
    assert roles == {WORKER: Role.WORKER, VALIDATOR: Role.VALIDATOR, REQUESTER: Role.REQUESTER}
    # a requester that also joined as a worker gossips as the worker it is
    assert member_roles([REQUESTER], [], REQUESTER) == {REQUESTER: Role.WORKER}
    assert member_roles([], [], None) == {}
