"""Model codec: state_dict <-> canonical msgpack bytes, no pickle, strict decoding."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from protocol.codec import (
    ALLOWED_DTYPES,
    ModelSpec,
    _swap_bytes,
    check_finite,
    decode_state_dict,
    encode_state_dict,
)
from protocol.errors import CodecError, ModelValidationError


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)  # brings an int64 buffer (num_batches_tracked)
        self.fc = nn.Linear(16, 3)


def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return SmallNet().state_dict()


def assert_same_tensors(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert list(left) == sorted(right)
    for name, tensor in right.items():
        decoded = left[name]
        assert decoded.dtype == tensor.dtype and decoded.shape == tensor.shape
        # Bitwise, so NaN payloads and -0.0 count too.
        assert torch.equal(
            decoded.reshape(-1).view(torch.uint8), tensor.contiguous().reshape(-1).view(torch.uint8)
        )


def blob(entries: list[Any], version: Any = 1) -> bytes:
    packed: bytes = msgpack.packb({"v": version, "tensors": entries}, use_bin_type=True)
    return packed


def test_round_trip_module_state() -> None:
    state = small_state()
    spec = ModelSpec.of(SmallNet())
    assert spec["norm.num_batches_tracked"] == ("int64", ())
    assert spec["conv.weight"] == ("float32", (4, 1, 3, 3))
    decoded = decode_state_dict(encode_state_dict(state), spec)
    assert_same_tensors(decoded, state)
    model = SmallNet()
    model.load_state_dict(decoded)


def test_round_trip_mnist_cnn() -> None:
    from protocol.models import MnistCNN

    model = MnistCNN()
    spec = ModelSpec.of(model)
    data = encode_state_dict(model.state_dict())
    assert spec.data_size() == 1_663_370 * 4
    assert spec.data_size() < len(data) <= spec.max_encoded_size()
    assert_same_tensors(decode_state_dict(data, spec), model.state_dict())


def test_canonical_bytes_independent_of_insertion_order_and_layout() -> None:
    state = small_state()
    reversed_state = dict(reversed(list(state.items())))
    reversed_state["fc.weight"] = state["fc.weight"].t().contiguous().t()  # non-contiguous view
    assert not reversed_state["fc.weight"].is_contiguous()
    assert encode_state_dict(reversed_state) == encode_state_dict(state)


def test_all_allowed_dtypes_round_trip() -> None:
    state = {
        name: (torch.arange(6, dtype=torch.float64) - 2.5).to(dtype).reshape(2, 3)
        for name, dtype in ALLOWED_DTYPES.items()
    }
    state["scalar"] = torch.tensor(7.25)
    state["empty"] = torch.zeros(0, 5)
    decoded = decode_state_dict(encode_state_dict(state), ModelSpec.of(state))
    assert_same_tensors(decoded, state)


def test_decoded_tensors_are_writable_and_independent() -> None:
    state = {"w": torch.ones(4)}
    data = bytearray(encode_state_dict(state))
    decoded = decode_state_dict(bytes(data), ModelSpec.of(state))
    decoded["w"].add_(1)  # would fail or warn on a read-only buffer
    assert torch.equal(decoded["w"], torch.full((4,), 2.0))
    again = decode_state_dict(bytes(data), ModelSpec.of(state))
    assert torch.equal(again["w"], torch.ones(4))


def test_little_endian_on_the_wire() -> None:
    data = encode_state_dict({"x": torch.tensor([1.0], dtype=torch.float32)})
    assert b"\x00\x00\x80\x3f" in data
    entry = msgpack.unpackb(data)["tensors"][0]
    assert entry == ["x", "float32", [1], b"\x00\x00\x80\x3f"]


def test_swap_bytes_reverses_each_element() -> None:
    # The path a big-endian host takes; checked here on its own.
    tensor = torch.tensor([1.0, -2.0], dtype=torch.float32)  # LE: 00 00 80 3f, 00 00 00 c0
    swapped = _swap_bytes(tensor)
    assert swapped.view(torch.uint8).tolist() == [0x3F, 0x80, 0, 0, 0xC0, 0, 0, 0]
    assert torch.equal(_swap_bytes(swapped).view(torch.uint8), tensor.view(torch.uint8))
    assert _swap_bytes(torch.zeros(0)).numel() == 0


# --- encode rejections ------------------------------------------------------------------------


def test_encode_rejects_disallowed_dtype() -> None:
    with pytest.raises(CodecError, match="tensor 'mask' has dtype torch.bool"):
        encode_state_dict({"mask": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(CodecError, match="int32"):
        ModelSpec.of({"i": torch.ones(2, dtype=torch.int32)})


def test_encode_rejects_non_tensors_and_sparse() -> None:
    with pytest.raises(CodecError, match="'x' is list, not a tensor"):
        encode_state_dict({"x": [1.0]})  # type: ignore[dict-item]
    with pytest.raises(CodecError, match="only dense"):
        encode_state_dict({"s": torch.eye(3).to_sparse()})
    with pytest.raises(CodecError, match="must be a mapping"):
        encode_state_dict([torch.ones(1)])  # type: ignore[arg-type]


def test_spec_validation() -> None:
    with pytest.raises(CodecError, match="dtype 'int8'"):
        ModelSpec({"a": ("int8", (1,))})
    with pytest.raises(CodecError, match="non-negative ints"):
        ModelSpec({"a": ("float32", (-1,))})
    with pytest.raises(CodecError, match="non-empty str"):
        ModelSpec({"": ("float32", (1,))})
    spec = ModelSpec({"b": ("float32", [2, 3]), "a": ("int64", ())})
    assert list(spec) == ["a", "b"] and spec["b"] == ("float32", (2, 3))
    assert spec == ModelSpec({"a": ("int64", ()), "b": ("float32", (2, 3))})
    assert len({spec, ModelSpec({"a": ("int64", ()), "b": ("float32", (2, 3))})}) == 1


# --- decode rejections ------------------------------------------------------------------------

SPEC = ModelSpec({"a.bias": ("float32", (2,)), "a.weight": ("float32", (2, 3))})
A_BIAS = ["a.bias", "float32", [2], bytes(8)]
A_WEIGHT = ["a.weight", "float32", [2, 3], bytes(24)]


def test_decode_valid_hand_built_blob() -> None:
    decoded = decode_state_dict(blob([A_BIAS, A_WEIGHT]), SPEC)
    assert decoded["a.weight"].shape == (2, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xc1", "not valid msgpack"),
        (blob([A_BIAS, A_WEIGHT])[:-1], "not valid msgpack"),
        (blob([A_BIAS, A_WEIGHT]) + b"\x00", "trailing bytes"),
        (msgpack.packb([A_BIAS, A_WEIGHT]), "exactly the keys"),
        (msgpack.packb({"v": 1, "tensors": [], "x": 1}), "exactly the keys"),
        (blob([A_BIAS, A_WEIGHT], version=2), "format version 2 unsupported"),
        (blob([A_BIAS, A_WEIGHT], version=True), "format version True unsupported"),
        (msgpack.packb({"v": 1, "tensors": {"a": 1}}), '"tensors" must be a list'),
        (blob([A_BIAS]), r"missing tensor\(s\) \['a.weight'\]"),
        (blob([A_BIAS, A_WEIGHT, ["b", "float32", [1], bytes(4)]]), "tensor 'b': not in this"),
        (blob([A_WEIGHT, A_BIAS]), "tensor 'a.bias': out of order"),
        (blob([A_BIAS, A_BIAS, A_WEIGHT]), "tensor 'a.bias': out of order or repeated"),
        (blob([A_BIAS, ["a.weight", "float64", [2, 3], bytes(48)]]), "'a.weight': dtype 'float64'"),
        (blob([A_BIAS, ["a.weight", "float32", [3, 2], bytes(24)]]), r"'a.weight': shape \[3, 2\]"),
        (blob([A_BIAS, ["a.weight", "float32", [True, 3], bytes(24)]]), "'a.weight': shape"),
        (blob([A_BIAS, ["a.weight", "float32", (2, 3), "x" * 24]]), "'a.weight': data must be"),
        (blob([A_BIAS, ["a.weight", "float32", [2, 3], bytes(23)]]), "'a.weight': 23 data bytes"),
        (blob([A_BIAS, ["a.weight", "float32", [2, 3]]]), "entry 1: must be"),
        (blob([A_BIAS, [7, "float32", [2, 3], bytes(24)], A_WEIGHT]), "entry 1: tensor name"),
        (blob([A_BIAS, "a.weight"]), r"missing tensor\(s\) \['a.weight'\]"),
        (blob([A_BIAS, A_WEIGHT, "a.weight"]), "entry 2: must be"),
    ],
)
def test_decode_rejects(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_state_dict(data, SPEC)


def test_decode_size_bound_checked_before_parsing() -> None:
    data = blob([A_BIAS, A_WEIGHT])
    assert len(data) <= SPEC.max_encoded_size()
    with pytest.raises(CodecError, match="over the 10-byte bound"):
        decode_state_dict(data, SPEC, max_bytes=10)
    # Oversized junk is refused by length alone, before msgpack sees it.
    junk = b"\xc1" * (SPEC.max_encoded_size() + 1)
    with pytest.raises(CodecError, match="over the .*-byte bound for this architecture"):
        decode_state_dict(junk, SPEC)


def test_decode_against_wrong_architecture() -> None:
    from protocol.models import Mnist2NN

    data = encode_state_dict(small_state())
    with pytest.raises(CodecError):
        decode_state_dict(data, ModelSpec.of(Mnist2NN()))


def test_decode_type_errors() -> None:
    with pytest.raises(CodecError, match="must be bytes"):
        decode_state_dict("blob", SPEC)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="must be a ModelSpec"):
        decode_state_dict(blob([]), {"a": ("float32", (1,))})  # type: ignore[arg-type]


# --- check_finite -----------------------------------------------------------------------------


def test_check_finite() -> None:
    state = small_state()
    check_finite(state)
    state["fc.bias"] = state["fc.bias"].clone()
    state["fc.bias"][1] = float("nan")
    state["fc.bias"][2] = float("inf")
    with pytest.raises(ModelValidationError, match=r"tensor 'fc.bias' has 2 NaN or infinite"):
        check_finite(state)
    check_finite({"n": torch.tensor(5, dtype=torch.int64)})
    with pytest.raises(ModelValidationError, match="'h'"):
        check_finite({"h": torch.tensor([float("-inf")], dtype=torch.bfloat16)})


# --- properties -------------------------------------------------------------------------------

names = st.text(alphabet="abcdefghij._0123456789", min_size=1, max_size=12)
shapes = st.lists(st.integers(min_value=0, max_value=4), max_size=3).map(tuple)


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name in draw(st.lists(names, min_size=1, max_size=5, unique=True)):
        dtype = ALLOWED_DTYPES[draw(st.sampled_from(sorted(ALLOWED_DTYPES)))]
        shape = draw(shapes)
        count = 1
        for dim in shape:
            count *= dim
        raw = bytearray(
            draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
        )
        tensor = (
            torch.frombuffer(raw, dtype=dtype).reshape(shape)
            if count
            else torch.empty(shape, dtype=dtype)
        )
        state[name] = tensor
    return state


@settings(max_examples=150, deadline=None)
@given(state_dicts())
def test_round_trip_exact(state: dict[str, torch.Tensor]) -> None:
    spec = ModelSpec.of(state)
    data = encode_state_dict(state)
    assert len(data) <= spec.max_encoded_size()
    decoded = decode_state_dict(data, spec)
    assert_same_tensors(decoded, state)
    assert encode_state_dict(decoded) == data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_state_dict(data, SPEC, max_bytes=1000)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_blobs_only_raise_codec_error_or_decode(data: st.DataObject) -> None:
    encoded = bytearray(blob([A_BIAS, A_WEIGHT]))
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = decode_state_dict(bytes(encoded), SPEC)
    except CodecError:
        return
    assert ModelSpec.of(decoded) == SPEC
