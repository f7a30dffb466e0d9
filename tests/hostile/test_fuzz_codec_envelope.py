"""Property-based fuzzing of the model codec and the envelope, as a peer's blob reaches them.

A fetched update is first opened (``protocol.envelope``), then decoded against the task's
architecture (``protocol.codec``). Each must raise only its documented error
(EnvelopeError, CodecError) and never allocate more than a bound proportional to the
bytes given, whatever lengths or counts those bytes declare.
"""

from __future__ import annotations

import struct

import msgpack
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.codec import ModelSpec, decode_state_dict, encode_state_dict
from protocol.envelope import (
    MAX_RECIPIENTS,
    envelope_recipients,
    generate_keypair,
    open_envelope,
    seal,
)
from protocol.errors import CodecError, EnvelopeError
from tests.hostile.test_fuzz_blocks import assert_bounded, peak_allocation

SPEC = ModelSpec({"a.bias": ("float32", (2,)), "a.weight": ("float32", (2, 3)),
                  "steps": ("int64", ())})
STATE = {"a.bias": torch.tensor([0.5, -1.0]), "a.weight": torch.arange(6.0).reshape(2, 3),
         "steps": torch.tensor(7)}
VALID_BLOB = encode_state_dict(STATE)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:  # a length or count field rewritten to an extreme
            data[position : position + 4] = struct.pack(">I", draw(st.sampled_from(
                [0, 1, 2**16 - 1, 2**31 - 1, 2**32 - 1])))
    return bytes(data)


# --- the model codec -------------------------------------------------------------------------

tensor_entries = st.lists(
    st.tuples(
        st.sampled_from([*SPEC, "a", "zzz", ""]) | st.text(max_size=8),
        st.sampled_from(["float32", "int64", "float16", "int8", "object"]),
        st.lists(st.integers(-1, 2**40), max_size=4),
        st.binary(max_size=64),
    ).map(list),
    max_size=5,
)
model_blobs = (
    st.binary(max_size=600)
    | mutated(VALID_BLOB)
    | st.builds(lambda entries: msgpack.packb({"v": 1, "tensors": entries}), tensor_entries)
    | st.builds(lambda version, entries: msgpack.packb({"v": version, "tensors": entries}),
                st.integers(-5, 5) | st.text(max_size=3), tensor_entries)
)
# msgpack headers declaring 2^32 - 1 entries, map pairs or bytes, with none following.
HUGE = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
        b"\x82\xa1v\x01\xa7tensors\xdd\xff\xff\xff\xff",
        b"\x82\xa1v\x01\xa7tensors\x91\x94\xa6a.bias\xa7float32\x91\x02\xc6\xff\xff\xff\xff"]


@SETTINGS
@given(model_blobs)
@example(HUGE[0])
@example(HUGE[1])
@example(HUGE[2])
@example(HUGE[3])
@example(HUGE[4])
def test_model_decoder_raises_only_codec_errors_within_bounds(data: bytes) -> None:
    peak, outcome = peak_allocation(lambda: decode_state_dict(data, SPEC))
    assert_bounded(peak, len(data))
    if isinstance(outcome, Exception):
        assert isinstance(outcome, CodecError), f"{type(outcome).__name__}: {outcome}"
        return
    assert isinstance(outcome, dict) and ModelSpec.of(outcome) == SPEC
    assert encode_state_dict(outcome) == data  # only the canonical bytes decode


def test_a_blob_over_the_architectures_bound_is_refused_before_parsing() -> None:
    data = b"\xc6" + struct.pack(">I", 2**32 - 1) + bytes(SPEC.max_encoded_size())
    peak, outcome = peak_allocation(lambda: decode_state_dict(data, SPEC))
    assert isinstance(outcome, CodecError) and "over the" in str(outcome)
    assert peak < 64 * 1024


# --- the envelope ----------------------------------------------------------------------------

ALICE = generate_keypair()
BOB = generate_keypair()
VALID_ENVELOPE = seal(VALID_BLOB, [ALICE[1], BOB[1]], b"round 3")
HEADER = VALID_ENVELOPE[:7]  # magic, version, recipient count


@SETTINGS
@given(st.binary(max_size=600) | mutated(VALID_ENVELOPE)
       | st.builds(lambda count, rest: HEADER[:5] + struct.pack(">H", count) + rest,
                   st.integers(0, 2**16 - 1), st.binary(max_size=300)))
@example(HEADER[:5] + struct.pack(">H", MAX_RECIPIENTS) + bytes(100))
@example(VALID_ENVELOPE[:-8] + struct.pack(">Q", 2**64 - 1))
def test_envelope_opening_raises_only_envelope_errors_within_bounds(data: bytes) -> None:
    for decode in (lambda: open_envelope(data, ALICE[0], b"round 3"),
                   lambda: envelope_recipients(data)):
        peak, outcome = peak_allocation(decode)
        assert_bounded(peak, len(data))
        if isinstance(outcome, Exception):
            assert isinstance(outcome, EnvelopeError), f"{type(outcome).__name__}: {outcome}"
        elif isinstance(outcome, bytes):
            assert outcome == VALID_BLOB and data == VALID_ENVELOPE  # authenticated: untouched
        else:
            assert isinstance(outcome, list) and 1 <= len(outcome) <= MAX_RECIPIENTS
