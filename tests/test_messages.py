"""Gossip message schemas: canonical msgpack, strict decoding, constructor validation."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import cid_of
from protocol.errors import MessageError
from protocol.fixedpoint import SCALE
from protocol.messages import (
    MAX_KEY_RELEASE_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WORKERS,
    CommitteeProof,
    EvaluationScores,
    KeyRelease,
    Message,
    ModelAnnouncement,
    decode_message,
    decode_message_as,
    encode_message,
    topic_for,
    topic_name,
)

TASK = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
WORKER_A = bytes(range(20))
WORKER_B = bytes(range(1, 21))
VALIDATOR = b"\xaa" * 20
CID = cid_of(b"encrypted model blob")


def announcement(**changes: Any) -> ModelAnnouncement:
    fields: dict[str, Any] = dict(
        chain_id=31337, task=TASK, round=3, worker=WORKER_A, cid=CID, n_samples=600
    )
    fields.update(changes)
    return ModelAnnouncement(**fields)


def committee_proof(**changes: Any) -> CommitteeProof:
    fields: dict[str, Any] = dict(
        chain_id=31337, task=TASK, round=3, validator=VALIDATOR, vrf_proof=b"\x01" * 256
    )
    fields.update(changes)
    return CommitteeProof(**fields)


def scores(**changes: Any) -> EvaluationScores:
    fields: dict[str, Any] = dict(
        chain_id=31337,
        task=TASK,
        round=3,
        validator=VALIDATOR,
        workers=(WORKER_A, WORKER_B),
        scores=(12_345, -(2**255)),
        accepts=(True, False),
        global_accuracy=912_000,
        salt=b"\x07" * 32,
    )
    fields.update(changes)
    return EvaluationScores(**fields)


def key_release(**changes: Any) -> KeyRelease:
    fields: dict[str, Any] = dict(
        chain_id=31337, task=TASK, round=3, worker=WORKER_A, cid=CID, sealed_key=b"\x05" * 500
    )
    fields.update(changes)
    return KeyRelease(**fields)


def wire_of(message: Message) -> dict[str, Any]:
    unpacked: dict[str, Any] = msgpack.unpackb(encode_message(message), raw=False)
    return unpacked


def pack(wire: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(wire, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    "message", [announcement(), committee_proof(), scores(), key_release()]
)
def test_round_trip(message: Message) -> None:
    data = encode_message(message)
    assert decode_message(data) == message
    assert decode_message_as(data, type(message)) == message
    assert encode_message(decode_message(data)) == data


@pytest.mark.parametrize(
    "cls", [ModelAnnouncement, CommitteeProof, EvaluationScores, KeyRelease]
)
def test_schema_matches_dataclass_fields(cls: Any) -> None:
    # decode_message builds a message from SCHEMA; encode_message walks the fields.
    assert list(cls.SCHEMA) == [field.name for field in dataclasses.fields(cls)]


def test_wire_layout_is_fixed() -> None:
    data = encode_message(announcement())
    wire = msgpack.unpackb(data, raw=False)
    assert list(wire) == ["v", "t", "chain_id", "task", "round", "worker", "cid", "n_samples"]
    assert wire["v"] == 1 and wire["t"] == "model"
    score_wire = wire_of(scores())
    assert score_wire["scores"][0] == (12_345).to_bytes(32, "big")
    assert score_wire["scores"][1] == b"\x80" + bytes(31)


def test_a_key_release_is_bounded_and_sent_on_the_models_topic() -> None:
    assert topic_for(key_release()).endswith("/models")
    key_release(sealed_key=b"\x05" * MAX_KEY_RELEASE_SIZE)  # every member of a full task
    with pytest.raises(MessageError, match="sealed content key must be"):
        key_release(sealed_key=b"\x05" * (MAX_KEY_RELEASE_SIZE + 1))
    with pytest.raises(MessageError, match="sealed content key must be"):
        key_release(sealed_key=b"")
    assert len(encode_message(key_release(sealed_key=b"\x05" * MAX_KEY_RELEASE_SIZE))) <= (
        MAX_MESSAGE_SIZE
    )


def test_lists_normalised_to_tuples() -> None:
    message = scores(workers=[WORKER_A], scores=[1], accepts=[True])
    assert message.workers == (WORKER_A,)
    assert isinstance(message.scores, tuple)
    hash(message)


def test_decode_as_wrong_type() -> None:
    with pytest.raises(
        MessageError, match="expected a CommitteeProof message, got ModelAnnouncement"
    ):
        decode_message_as(encode_message(announcement()), CommitteeProof)


def test_topic_names() -> None:
    assert topic_name(31337, TASK, "models") == (
        "/fl/31337/0x5fbdb2315678afecb367f032d93f642f64180aa3/models"
    )
    assert topic_for(committee_proof()).endswith("/committee")
    assert topic_for(scores()).endswith("/scores")
    assert topic_for(announcement()).endswith("/models")
    with pytest.raises(MessageError, match="unknown topic kind"):
        topic_name(1, TASK, "blocks")
    with pytest.raises(MessageError, match="topic task"):
        topic_name(1, TASK[:19], "models")
    with pytest.raises(MessageError, match="topic chain_id"):
        topic_name(-1, TASK, "models")


# --- constructor validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: announcement(chain_id=True), "ModelAnnouncement.chain_id: expected an integer"),
        (lambda: announcement(chain_id=-1), "ModelAnnouncement.chain_id: -1 is outside"),
        (lambda: announcement(round=2**64), "ModelAnnouncement.round: 18446744073709551616"),
        (lambda: announcement(round=1.0), "ModelAnnouncement.round: expected an integer"),
        (lambda: announcement(n_samples=0), "ModelAnnouncement.n_samples: 0 is outside"),
        (lambda: announcement(task=TASK + b"\x00"), "ModelAnnouncement.task: .* 21"),
        (lambda: announcement(worker="0x" + "00" * 20), "ModelAnnouncement.worker: expected"),
        (lambda: announcement(cid="bafy-not-a-cid"), "ModelAnnouncement.cid: malformed CID"),
        (lambda: announcement(cid=CID.upper()), "ModelAnnouncement.cid: CID must be lowercase"),
        (
            lambda: announcement(cid="QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"),
            "ModelAnnouncement.cid: .*version 0",
        ),
        (lambda: announcement(cid=cid_of(b"x", "dag-cbor")), "ModelAnnouncement.cid: CID codec"),
        (lambda: committee_proof(vrf_proof=b""), "CommitteeProof.vrf_proof: .* got 0"),
        (lambda: committee_proof(vrf_proof=b"\x00" * 1025), "CommitteeProof.vrf_proof: .* 1025"),
        (lambda: scores(scores=(2**255, 0)), r"EvaluationScores.scores\[0\]: .* int256"),
        (lambda: scores(scores=(0, False)), r"EvaluationScores.scores\[1\]: expected an integer"),
        (lambda: scores(accepts=(True, 1)), r"EvaluationScores.accepts\[1\]: expected a bool"),
        (lambda: scores(workers=(WORKER_A, b"")), r"EvaluationScores.workers\[1\]"),
        (lambda: scores(workers=(WORKER_A, WORKER_A)), r"workers\[1\]: duplicate worker"),
        (lambda: scores(accepts=(True,)), "one entry per worker, got 2, 2, 1"),
        (lambda: scores(global_accuracy=SCALE + 1), "EvaluationScores.global_accuracy"),
        (lambda: scores(global_accuracy=-1), "EvaluationScores.global_accuracy"),
        (lambda: scores(salt=b"\x00" * 31), "EvaluationScores.salt: a 32-byte salt"),
        (lambda: scores(workers=WORKER_A), "EvaluationScores.workers: expected a sequence"),
    ],
)
def test_constructor_rejects(build: Any, field: str) -> None:
    with pytest.raises(MessageError, match=field):
        build()


def test_max_workers() -> None:
    workers = tuple(index.to_bytes(20, "big") for index in range(MAX_WORKERS))
    biggest = scores(
        workers=workers,
        scores=tuple(-(2**255) for _ in workers),
        accepts=tuple(True for _ in workers),
    )
    data = encode_message(biggest)
    assert len(data) < MAX_MESSAGE_SIZE
    assert decode_message(data) == biggest
    with pytest.raises(MessageError, match="257 items, more than 256"):
        scores(
            workers=workers + (b"\xff" * 20,),
            scores=(0,) * (MAX_WORKERS + 1),
            accepts=(True,) * (MAX_WORKERS + 1),
        )


# --- decoding rejections ----------------------------------------------------------------------


def test_reject_not_bytes() -> None:
    with pytest.raises(MessageError, match="must be bytes"):
        decode_message("text")  # type: ignore[arg-type]


def test_reject_oversize() -> None:
    with pytest.raises(MessageError, match="over MAX_MESSAGE_SIZE"):
        decode_message(b"\x00" * (MAX_MESSAGE_SIZE + 1))


def test_reject_not_msgpack() -> None:
    with pytest.raises(MessageError, match="not valid msgpack"):
        decode_message(b"\xc1")
    with pytest.raises(MessageError, match="not valid msgpack"):
        decode_message(encode_message(announcement())[:-3])


def test_reject_trailing_bytes() -> None:
    with pytest.raises(MessageError, match="trailing bytes"):
        decode_message(encode_message(announcement()) + b"\x00")


def test_reject_not_a_map() -> None:
    with pytest.raises(MessageError, match="must be a msgpack map, got list"):
        decode_message(pack([1, 2]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        *(("v", version, "unknown message version") for version in (2, 0, True, 1.0, "1", None)),
        *(("t", tag, "unknown message type") for tag in ("blob", None, 1, b"model")),
        ("v", ..., "no version field"),
        ("t", ..., "unknown message type None"),
    ],
)
def test_reject_bad_header(key: str, value: Any, expected: str) -> None:
    wire = wire_of(announcement())
    if value is ...:
        del wire[key]
    else:
        wire[key] = value
    with pytest.raises(MessageError, match=expected):
        decode_message(pack(wire))


def test_reject_missing_field() -> None:
    wire = wire_of(announcement())
    del wire["n_samples"]
    with pytest.raises(
        MessageError, match=r"ModelAnnouncement: missing field\(s\) \['n_samples'\]"
    ):
        decode_message(pack(wire))


def test_reject_extra_field() -> None:
    wire = wire_of(committee_proof())
    wire["note"] = "hi"
    with pytest.raises(MessageError, match=r"CommitteeProof: unexpected field\(s\) \['note'\]"):
        decode_message(pack(wire))


@pytest.mark.parametrize(
    ("message", "field", "value", "expected"),
    [
        (announcement(), "chain_id", True, "chain_id: expected an integer, got bool"),
        (announcement(), "round", -5, "round: -5 is outside"),
        (announcement(), "round", 1.5, "round: expected an integer, got float"),
        (announcement(), "task", "0x" + "11" * 20, "task: expected a 20-byte address as bytes"),
        (announcement(), "worker", b"\x00" * 19, "worker: a 20-byte address must be 20 bytes"),
        (announcement(), "cid", b"bafk", "cid: expected CID text, got bytes"),
        (announcement(), "cid", "bafkreinotreal", "cid: malformed CID"),
        (announcement(), "n_samples", 0, "n_samples: 0 is outside"),
        (committee_proof(), "vrf_proof", [1, 2], "vrf_proof: expected a VRF proof as bytes"),
        (scores(), "scores", [1, 2], r"scores\[0\]: expected a 32-byte int256, got int"),
        (scores(), "scores", [b"\x00" * 31, b"\x00" * 32], r"scores\[0\]: .* got 31 bytes"),
        (scores(), "accepts", [1, 0], r"accepts\[0\]: expected a bool, got int"),
        (scores(), "workers", {"a": 1}, "workers: expected a sequence, got dict"),
        (scores(), "salt", None, "salt: expected a 32-byte salt as bytes, got NoneType"),
        (scores(), "global_accuracy", 2**64 - 1, "global_accuracy: 18446744073709551615"),
    ],
)
def test_reject_wrong_field_types(message: Message, field: str, value: Any, expected: str) -> None:
    wire = wire_of(message)
    wire[field] = value
    with pytest.raises(MessageError, match=f"{type(message).__name__}.{expected}"):
        decode_message(pack(wire))


def test_reject_uint64_overflow_on_the_wire() -> None:
    # msgpack can carry at most uint64; a negative where uint64 is expected names the field.
    wire = wire_of(announcement())
    wire["chain_id"] = -(2**63)
    with pytest.raises(MessageError, match="chain_id: .* is outside"):
        decode_message(pack(wire))


def test_reject_non_canonical_key_order() -> None:
    wire = wire_of(announcement())
    reordered = {"t": wire["t"], "v": wire["v"], **{k: v for k, v in wire.items() if k not in "vt"}}
    with pytest.raises(MessageError, match="not in canonical form"):
        decode_message(pack(reordered))


def test_reject_non_canonical_integer_width() -> None:
    data = encode_message(announcement(round=3))
    wide = data.replace(b"\xa5round\x03", b"\xa5round\xcf" + (3).to_bytes(8, "big"))
    assert wide != data
    with pytest.raises(MessageError, match="not in canonical form"):
        decode_message(wide)


def test_replace_revalidates() -> None:
    with pytest.raises(MessageError, match="n_samples"):
        replace(announcement(), n_samples=0)


# --- properties -------------------------------------------------------------------------------

addresses = st.binary(min_size=20, max_size=20)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def evaluation_scores(draw: st.DrawFn) -> EvaluationScores:
    workers = draw(st.lists(addresses, max_size=12, unique=True))
    return EvaluationScores(
        chain_id=draw(uint64),
        task=draw(addresses),
        round=draw(uint64),
        validator=draw(addresses),
        workers=tuple(workers),
        scores=tuple(draw(st.integers(min_value=-(2**255), max_value=2**255 - 1)) for _ in workers),
        accepts=tuple(draw(st.booleans()) for _ in workers),
        global_accuracy=draw(st.integers(min_value=0, max_value=SCALE)),
        salt=draw(st.binary(min_size=32, max_size=32)),
    )


messages = st.one_of(
    st.builds(
        ModelAnnouncement,
        chain_id=uint64,
        task=addresses,
        round=uint64,
        worker=addresses,
        cid=st.binary(max_size=64).map(cid_of),
        n_samples=st.integers(min_value=1, max_value=2**64 - 1),
    ),
    st.builds(
        CommitteeProof,
        chain_id=uint64,
        task=addresses,
        round=uint64,
        validator=addresses,
        vrf_proof=st.binary(min_size=1, max_size=1024),
    ),
    evaluation_scores(),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_valid_messages_round_trip(message: Message) -> None:
    data = encode_message(message)
    assert len(data) <= MAX_MESSAGE_SIZE
    assert decode_message(data) == message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_message_error(data: bytes) -> None:
    try:
        decode_message(data)
    except MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_mutated_messages_only_raise_message_error_or_decode_canonically(
    message: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_message(message))
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = decode_message(bytes(encoded))
    except MessageError:
        return
    # Whatever still decodes is a valid message with exactly these bytes.
    assert encode_message(decoded) == bytes(encoded)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "t", "chain_id", "task", "round", "cid", "workers", "scores", "x"]),
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
            st.booleans(),
            st.none(),
            st.binary(max_size=40),
            st.text(max_size=10),
            st.sampled_from(["model", "committee", "scores", 1]),
            st.lists(st.binary(max_size=33), max_size=3),
        ),
    )
)
def test_random_maps_only_raise_message_error(wire: dict[str, Any]) -> None:
    try:
        decode_message(pack(wire))
    except MessageError:
        pass
