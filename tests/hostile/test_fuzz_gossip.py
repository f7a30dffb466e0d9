"""Property-based fuzzing of every decoder a gossip message's bytes reach before a verdict:
the RPC frame parser's signature check (node.libp2p_compat), the message codec
(protocol.messages) and the rules (protocol.gossip_rules). Whatever the bytes, each returns
a value or raises its one documented error; nothing else escapes."""

from __future__ import annotations

from collections.abc import Hashable

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.pubsub.pb import rpc_pb2

from node.libp2p_compat import verify_message_signature
from protocol.cid import cid_of
from protocol.errors import MessageError
from protocol.gossip_rules import (
    Accept,
    GossipView,
    Ignore,
    Incoming,
    Member,
    Reject,
    signer_address_of,
    validate,
)
from protocol.messages import (
    TOPIC_KINDS,
    CommitteeProof,
    EvaluationScores,
    Message,
    ModelAnnouncement,
    decode_message,
    encode_message,
)
from protocol.state.records import Role
from tests.hostile.attacks import mutate

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHAIN_ID = 31337
TASK = b"\x5f" * 20

addresses = st.binary(min_size=20, max_size=20)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
small_round = st.integers(min_value=0, max_value=12)

announcements = st.builds(
    ModelAnnouncement,
    chain_id=st.just(CHAIN_ID) | uint64,
    task=st.just(TASK) | addresses,
    round=small_round,
    worker=addresses,
    cid=st.binary(max_size=64).map(cid_of),
    n_samples=st.integers(min_value=1, max_value=2**64 - 1),
)
proofs = st.builds(
    CommitteeProof,
    chain_id=st.just(CHAIN_ID),
    task=st.just(TASK),
    round=small_round,
    validator=addresses,
    vrf_proof=st.binary(min_size=1, max_size=1024),
)


@st.composite
def score_messages(draw: st.DrawFn) -> EvaluationScores:
    workers = draw(st.lists(addresses, max_size=8, unique=True))
    count = len(workers)
    return EvaluationScores(
        CHAIN_ID,
        TASK,
        draw(small_round),
        draw(addresses),
        tuple(workers),
        tuple(draw(st.lists(st.integers(-(2**255), 2**255 - 1), min_size=count, max_size=count))),
        tuple(draw(st.lists(st.booleans(), min_size=count, max_size=count))),
        draw(st.integers(0, 1_000_000)),
        draw(st.binary(min_size=32, max_size=32)),
    )


messages: st.SearchStrategy[Message] = st.one_of(announcements, proofs, score_messages())

# msgpack values a hostile peer can write: every wire type, nested
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30,
)  # fmt: skip


@st.composite
def hostile_maps(draw: st.DrawFn) -> bytes:
    """A valid message's map with some fields replaced, removed or added."""
    wire = msgpack.unpackb(encode_message(draw(messages)))
    for key in draw(st.lists(st.sampled_from(sorted(wire)), max_size=3)):
        if draw(st.booleans()):
            wire[key] = draw(msgpack_values)
        else:
            wire.pop(key, None)
    if draw(st.booleans()):
        wire[draw(st.text(max_size=8))] = draw(msgpack_values)
    return bytes(msgpack.packb(wire, use_bin_type=True))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with bytes flipped, cut or inserted."""
    return mutate(draw, encode_message(draw(messages)))


hostile_bytes = st.one_of(
    st.binary(max_size=300),
    hostile_maps(),
    mutated(),
    msgpack_values.map(lambda value: bytes(msgpack.packb(value, use_bin_type=True))),
)


def _decode_or_message_error(data: bytes) -> Message | None:
    try:
        return decode_message(data)
    except MessageError:
        return None


@FUZZ
@given(hostile_bytes)
def test_decode_message_raises_only_message_error(data: bytes) -> None:
    message = _decode_or_message_error(data)
    if message is not None:
        assert encode_message(message) == data  # accepted bytes are canonical


@FUZZ
@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def _view(members: dict[Hashable, Member], current_round: int) -> GossipView:
    return GossipView(CHAIN_ID, TASK, current_round, 1, members.get)


@FUZZ
@given(
    hostile_bytes,
    st.sampled_from([*TOPIC_KINDS, "", "weights", "models\x00"]),
    st.sampled_from(["member", "stranger", b"\x00", 7]),
    small_round,
    st.sampled_from([None, *Role]),
)
def test_validate_returns_a_verdict_for_any_bytes(
    data: bytes, kind: str, signer: Hashable, current_round: int, role: Role | None
) -> None:
    message = _decode_or_message_error(data)
    address = signer_address_of(message) if message is not None else b"\x00" * 20
    members: dict[Hashable, Member] = {"member": Member(address, role)}
    verdict = validate(Incoming(data, kind, signer), _view(members, current_round))
    assert isinstance(verdict, Accept | Reject | Ignore)
    if isinstance(verdict, Accept):
        assert verdict.message == message and verdict.signer_address == address
    else:
        assert str(verdict).startswith(verdict.rule + ": ")


@FUZZ
@given(messages, small_round)
def test_a_members_own_message_in_its_role_is_accepted_in_the_window(
    message: Message, current_round: int
) -> None:
    role = Role.WORKER if isinstance(message, ModelAnnouncement) else Role.VALIDATOR
    members: dict[Hashable, Member] = {"member": Member(signer_address_of(message), role)}
    incoming = Incoming(encode_message(message), message.TOPIC_KIND, "member")
    verdict = validate(incoming, _view(members, current_round))
    on_chain_and_task = message.chain_id == CHAIN_ID and message.task == TASK
    in_window = abs(message.round - current_round) <= 1
    assert isinstance(verdict, Accept) == (on_chain_and_task and in_window)


@FUZZ
@given(
    from_id=st.binary(max_size=80) | st.just(bytes.fromhex("1220") + b"\xab" * 32),
    key=st.binary(max_size=80),
    signature=st.binary(max_size=80),
    data=st.binary(max_size=64),
)
def test_the_signature_check_never_raises(
    from_id: bytes, key: bytes, signature: bytes, data: bytes
) -> None:
    msg = rpc_pb2.Message(
        from_id=from_id, data=data, seqno=b"\x00" * 8, topicIDs=["/fl/t"], key=key,
        signature=signature,
    )  # fmt: skip
    assert verify_message_signature(msg) is False


@FUZZ
@given(st.binary(max_size=200))
def test_rpc_frames_fail_only_with_decode_error(data: bytes) -> None:
    """What GossipPubsub.stream_handler must contain: the protobuf parser's one error."""
    from google.protobuf.message import DecodeError

    try:
        rpc_pb2.RPC().ParseFromString(data)
    except DecodeError:
        pass
