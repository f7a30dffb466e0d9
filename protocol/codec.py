"""Model state dicts to bytes and back, without pickle.

Format, version 1: a msgpack map ``{"v": 1, "tensors": [[name, dtype, shape, data], ...]}``
with the tensors sorted by name, ``dtype`` a name from :data:`ALLOWED_DTYPES`, ``shape`` a
list of ints and ``data`` the tensor's raw little-endian bytes (C order). Same tensors give
the same bytes, so a CID identifies a model.

A peer's blob is decoded only against the architecture the task names (:class:`ModelSpec`):
the size bound is checked before parsing, and every name, dtype, shape and byte length
must match. Nothing is ever unpickled.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import msgpack
import torch
from torch import nn

from protocol.errors import CodecError, ModelValidationError

__all__ = [
    "ALLOWED_DTYPES",
    "FORMAT_VERSION",
    "ModelSpec",
    "TensorSpec",
    "check_finite",
    "decode_state_dict",
    "encode_state_dict",
]

FORMAT_VERSION = 1
# Floating weights and the int64 counters some layers keep (BatchNorm's
# num_batches_tracked). No bool/complex/quantized types: nothing a model here needs.
ALLOWED_DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
        "float64": torch.float64,
        "int64": torch.int64,
    }
)
_DTYPE_NAMES = {dtype: name for name, dtype in ALLOWED_DTYPES.items()}
# Bytes of msgpack framing per tensor beyond its name, dtype name, shape and data:
# entry array header, str/bin/array headers (at most 5 bytes each) and slack.
_ENTRY_OVERHEAD = 32
_SHAPE_DIM_OVERHEAD = 9  # one uint64 shape entry
_BLOB_OVERHEAD = 32  # the top-level map, "v" and "tensors"
_MAX_NAME_LENGTH = 1024
_MAX_DIMS = 32

TensorSpec = tuple[str, tuple[int, ...]]


def _dtype_name(dtype: torch.dtype, tensor_name: str) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        raise CodecError(
            f"tensor {tensor_name!r} has dtype {dtype}, not one of {sorted(ALLOWED_DTYPES)}; "
            "convert it (for example .float()) before encoding"
        )
    return name


class ModelSpec(Mapping[str, TensorSpec]):
    """An architecture's tensors: name -> (dtype name, shape). Immutable and hashable."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, tuple[str, tuple[int, ...] | list[int]]]) -> None:
        checked: dict[str, TensorSpec] = {}
        for name, (dtype, shape) in entries.items():
            if not isinstance(name, str) or not name or len(name) > _MAX_NAME_LENGTH:
                raise CodecError(
                    f"tensor name {name!r} must be a non-empty str of at most "
                    f"{_MAX_NAME_LENGTH} characters"
                )
            if dtype not in ALLOWED_DTYPES:
                raise CodecError(
                    f"tensor {name!r}: dtype {dtype!r} is not one of {sorted(ALLOWED_DTYPES)}"
                )
            dims = tuple(shape)
            if len(dims) > _MAX_DIMS or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
            ):
                raise CodecError(f"tensor {name!r}: shape {shape!r} must be non-negative ints")
            checked[name] = (dtype, dims)
        self._entries: Mapping[str, TensorSpec] = MappingProxyType(dict(sorted(checked.items())))

    @classmethod
    def of(cls, module_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> ModelSpec:
        """The spec of a module's state_dict or of a state dict."""
        state = (
            module_or_state_dict.state_dict()
            if isinstance(module_or_state_dict, nn.Module)
            else module_or_state_dict
        )
        entries: dict[str, tuple[str, tuple[int, ...]]] = {}
        for name, tensor in state.items():
            _check_tensor(name, tensor)
            entries[name] = (_dtype_name(tensor.dtype, name), tuple(tensor.shape))
        return cls(entries)

    def __getitem__(self, name: str) -> TensorSpec:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ModelSpec):
            return dict(self._entries) == dict(other._entries)
        return NotImplemented

    def __repr__(self) -> str:
        return f"ModelSpec({dict(self._entries)!r})"

    def tensor_nbytes(self, name: str) -> int:
        dtype, shape = self._entries[name]
        count = 1
        for dim in shape:
            count *= dim
        return count * ALLOWED_DTYPES[dtype].itemsize

    def data_size(self) -> int:
        """Total bytes of tensor data."""
        return sum(self.tensor_nbytes(name) for name in self._entries)

    def max_encoded_size(self) -> int:
        """An upper bound on the encoded size of a state dict of this spec."""
        framing = sum(
            _ENTRY_OVERHEAD + len(name.encode()) + len(dtype) + _SHAPE_DIM_OVERHEAD * len(shape)
            for name, (dtype, shape) in self._entries.items()
        )
        return _BLOB_OVERHEAD + framing + self.data_size()


def _check_tensor(name: object, tensor: object) -> None:
    if not isinstance(name, str) or not name:
        raise CodecError(f"state dict key {name!r} must be a non-empty str")
    if not isinstance(tensor, torch.Tensor):
        raise CodecError(f"state dict entry {name!r} is {type(tensor).__name__}, not a tensor")
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise CodecError(f"tensor {name!r} has layout {tensor.layout}; only dense tensors encode")


def _swap_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """Reverse each element's bytes (native <-> little-endian on big-endian hosts)."""
    itemsize = tensor.element_size()
    if itemsize == 1 or tensor.numel() == 0:
        return tensor
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).reshape(-1, itemsize)
    return raw.flip(1).contiguous().view(tensor.dtype).reshape(tensor.shape)


def _little_endian(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if sys.byteorder == "little" else _swap_bytes(tensor)


def encode_state_dict(state: Mapping[str, torch.Tensor]) -> bytes:
    """Canonical bytes of a state dict (tensors sorted by name; CPU, contiguous)."""
    if not isinstance(state, Mapping):
        raise CodecError(f"state must be a mapping of name to tensor, got {type(state).__name__}")
    entries = []
    for name in sorted(state, key=lambda key: str(key)):
        tensor = state[name]
        _check_tensor(name, tensor)
        dtype = _dtype_name(tensor.dtype, name)
        flat = _little_endian(tensor.detach().cpu().contiguous()).reshape(-1)
        # A uint8 numpy view goes to msgpack through the buffer protocol: no extra copy.
        data = flat.view(torch.uint8).numpy().data
        entries.append([name, dtype, list(tensor.shape), data])
    packed: bytes = msgpack.packb({"v": FORMAT_VERSION, "tensors": entries}, use_bin_type=True)
    return packed


def _fail(where: str, problem: str) -> CodecError:
    return CodecError(f"model blob: {where}: {problem}")


def _decode_entry(
    index: int, entry: object, spec: ModelSpec, previous: str | None
) -> tuple[str, torch.Tensor]:
    if not isinstance(entry, list) or len(entry) != 4:
        raise _fail(f"entry {index}", "must be [name, dtype, shape, data]")
    name, dtype, shape, data = entry
    if not isinstance(name, str):
        raise _fail(f"entry {index}", f"tensor name must be str, got {type(name).__name__}")
    if name not in spec:
        raise _fail(f"tensor {name!r}", "not in this architecture (wrong model?)")
    if previous is not None and name <= previous:
        raise _fail(f"tensor {name!r}", "out of order or repeated; tensors must be sorted by name")
    expected_dtype, expected_shape = spec[name]
    if dtype != expected_dtype:
        raise _fail(f"tensor {name!r}", f"dtype {dtype!r}, expected {expected_dtype!r}")
    if (
        not isinstance(shape, list)
        or any(isinstance(d, bool) or not isinstance(d, int) for d in shape)
        or tuple(shape) != expected_shape
    ):
        raise _fail(f"tensor {name!r}", f"shape {shape!r}, expected {list(expected_shape)}")
    if not isinstance(data, bytes):
        raise _fail(f"tensor {name!r}", f"data must be bytes, got {type(data).__name__}")
    expected_size = spec.tensor_nbytes(name)
    if len(data) != expected_size:
        raise _fail(f"tensor {name!r}", f"{len(data)} data bytes, expected {expected_size}")
    torch_dtype = ALLOWED_DTYPES[expected_dtype]
    if expected_size == 0:
        return name, torch.empty(expected_shape, dtype=torch_dtype)
    # The bytearray is a private writable copy; the tensor is its only owner.
    tensor = torch.frombuffer(bytearray(data), dtype=torch_dtype).reshape(expected_shape)
    return name, _little_endian(tensor)


def decode_state_dict(
    data: bytes, spec: ModelSpec, max_bytes: int | None = None
) -> dict[str, torch.Tensor]:
    """Decode a blob that must hold exactly the tensors of ``spec``.

    ``max_bytes`` bounds the blob before it is parsed; it defaults to the largest size a
    blob of this spec can have.
    """
    if not isinstance(spec, ModelSpec):
        raise CodecError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"model blob must be bytes, got {type(data).__name__}")
    limit = spec.max_encoded_size() if max_bytes is None else max_bytes
    if len(data) > limit:
        raise CodecError(
            f"model blob is {len(data)} bytes, over the {limit}-byte bound for this "
            "architecture (wrong model, or raise max_bytes)"
        )
    try:
        blob = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData as exc:
        raise CodecError("model blob: trailing bytes after the msgpack data") from exc
    # msgpack raises assorted ValueError/TypeError subclasses on hostile input.
    except Exception as exc:
        raise CodecError(f"model blob is not valid msgpack ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or set(blob) != {"v", "tensors"}:
        raise CodecError('model blob must be a map with exactly the keys "v" and "tensors"')
    version = blob["v"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise CodecError(
            f"model blob format version {version!r} unsupported; this node reads {FORMAT_VERSION}"
        )
    entries = blob["tensors"]
    if not isinstance(entries, list):
        raise CodecError('model blob: "tensors" must be a list')
    present = {
        entry[0]
        for entry in entries
        if isinstance(entry, list) and entry and isinstance(entry[0], str)
    }
    missing = [name for name in spec if name not in present]
    if missing:
        raise CodecError(f"model blob: missing tensor(s) {missing[:8]} of the architecture")
    state: dict[str, torch.Tensor] = {}
    previous: str | None = None
    for index, entry in enumerate(entries):
        name, tensor = _decode_entry(index, entry, spec, previous)
        state[name] = tensor
        previous = name
    # Every spec name is present, each entry is a spec name and names strictly increase:
    # state holds exactly the spec's tensors.
    return state


def check_finite(state: Mapping[str, torch.Tensor]) -> None:
    """Raise ModelValidationError naming the first tensor (by name) with NaN or inf."""
    for name in sorted(state):
        tensor = state[name]
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int(finite.numel() - int(finite.sum()))
                raise ModelValidationError(
                    f"tensor {name!r} has {bad} NaN or infinite value(s); the update is unusable"
                )
