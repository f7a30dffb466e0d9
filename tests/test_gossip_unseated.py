"""UnseatedProof under protocol.gossip_rules.validate: a validator's own, 256-byte proof, on
the committee topic, for our round or the next; everything else is rejected (the forwarder
pays) or, for a round already behind us, ignored. Whether the proof really shows the
validator unseated needs the chain: tests/runtime/test_unseated_proofs.py."""

from __future__ import annotations

import msgpack
import pytest

from protocol.errors import MessageError
from protocol.gossip_rules import (
    ADDRESS_MISMATCH,
    MALFORMED,
    STALE,
    WRONG_ROLE,
    WRONG_ROUND,
    WRONG_TOPIC,
    Accept,
    Ignore,
)
from protocol.keycert import KEY_BYTES
from protocol.messages import UnseatedProof, decode_message, encode_message
from tests.test_gossip_rules import (
    CHAIN_ID,
    REQUESTER,
    ROUND,
    TASK,
    VALIDATOR,
    WORKER,
    rule_of,
    verdict_of,
)

PROOF = b"\x09" * KEY_BYTES


def unseated(validator: bytes = VALIDATOR, round_: int = ROUND) -> UnseatedProof:
    return UnseatedProof(CHAIN_ID, TASK, round_, validator, PROOF)


def test_a_validators_own_proof_for_our_round_or_the_next_is_accepted() -> None:
    for round_ in (ROUND, ROUND + 1):
        verdict = verdict_of(unseated(round_=round_), "validator-peer")
        assert isinstance(verdict, Accept) and verdict.message == unseated(round_=round_)
    assert decode_message(encode_message(unseated())) == unseated()
    assert len(encode_message(unseated())) < 400  # bounded: one proof and the round's ids


@pytest.mark.parametrize("size", [0, KEY_BYTES - 1, KEY_BYTES + 1, 1024])
def test_a_proof_of_another_length_cannot_be_built_nor_passes(size: int) -> None:
    with pytest.raises(MessageError, match="vrf_proof"):
        UnseatedProof(CHAIN_ID, TASK, ROUND, VALIDATOR, b"\x09" * size)
    wire = msgpack.unpackb(encode_message(unseated()))
    wire["vrf_proof"] = b"\x09" * size
    assert rule_of(verdict_of(msgpack.packb(wire, use_bin_type=True), "validator-peer", "committee")) == MALFORMED


def test_only_the_validator_itself_on_the_committee_topic() -> None:
    assert rule_of(verdict_of(unseated(WORKER), "worker-peer")) == WRONG_ROLE
    assert rule_of(verdict_of(unseated(REQUESTER), "requester-peer")) == WRONG_ROLE
    assert rule_of(verdict_of(unseated(), "worker-peer")) == ADDRESS_MISMATCH  # in another's name
    assert rule_of(verdict_of(unseated(), "validator-peer", "models")) == WRONG_TOPIC


def test_a_round_too_far_ahead_is_rejected_and_a_past_one_ignored() -> None:
    assert rule_of(verdict_of(unseated(round_=ROUND + 2), "validator-peer")) == WRONG_ROUND
    past = verdict_of(unseated(round_=ROUND - 1), "validator-peer")
    assert isinstance(past, Ignore) and past.rule == STALE and not past.retry
