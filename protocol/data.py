"""Datasets as arrays: IDX parsing, dataset specs (shape, classes, normalisation), checks,
deterministic client partitions and tensor conversion.

Pure functions over bytes and arrays: nothing here opens a file, reads the environment or
touches the network (node/datasets does that and hands the bytes or arrays in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import numpy as np
import torch

from protocol.errors import DatasetError

IDX_HEADER_PREFIX = 4  # two zero bytes, dtype code, number of dimensions

# IDX dtype codes (big-endian on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Bounds a spec's class count (and so a model's output layer a spec can ask for).
MAX_CLASSES = 1 << 16
PARTITIONS = ("iid", "dirichlet", "shards")


@dataclass(frozen=True)
class DatasetSpec:
    """What a model is fed: one sample's shape, the number of classes and how raw values
    become model inputs, ``(raw * scale - mean[c]) / std[c]`` per channel ``c``.

    ``sample_shape`` is the shape the model sees per sample: ``(C, H, W)`` for images,
    ``(F,)`` for tabular rows. Raw grey images ``[N, H, W]`` fit ``(1, H, W)``.
    """

    name: str
    sample_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        if not self.sample_shape or any(d < 1 for d in self.sample_shape):
            raise DatasetError(f"dataset {self.name!r}: sample shape {self.sample_shape} is empty")
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise DatasetError(
                f"dataset {self.name!r}: {self.num_classes} classes; need 2..{MAX_CLASSES}"
            )
        channels = self.sample_shape[0] if len(self.sample_shape) == 3 else 1
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise DatasetError(
                    f"dataset {self.name!r}: {what} has {len(values)} values; give 1 or one "
                    f"per channel ({channels})"
                )
        numbers = (*self.mean, *self.std, self.scale)
        if not all(isinstance(v, float | int) and math.isfinite(v) for v in numbers):
            raise DatasetError(f"dataset {self.name!r}: mean, std and scale must be finite")
        if any(not s > 0 for s in self.std) or not self.scale > 0:
            raise DatasetError(f"dataset {self.name!r}: std and scale must be > 0")


# Per-dataset statistics of the training split (pixel values scaled to [0, 1]).
MNIST_SPEC = DatasetSpec("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,))
FASHION_MNIST_SPEC = DatasetSpec("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,))
KMNIST_SPEC = DatasetSpec("kmnist", (1, 28, 28), 10, (0.1918,), (0.3483,))
EMNIST_DIGITS_SPEC = DatasetSpec("emnist-digits", (1, 28, 28), 10, (0.1733,), (0.3317,))
CIFAR10_SPEC = DatasetSpec(
    "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
)
BUILTIN_SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (MNIST_SPEC, FASHION_MNIST_SPEC, KMNIST_SPEC, EMNIST_DIGITS_SPEC, CIFAR10_SPEC)
}

MNIST_MEAN = MNIST_SPEC.mean[0]
MNIST_STD = MNIST_SPEC.std[0]
MNIST_CLASSES = MNIST_SPEC.num_classes


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare
class Dataset:
    """Labelled samples: ``images`` [N, ...] (grey images [N, H, W], colour [N, C, H, W],
    tabular rows [N, F]) and integer ``labels`` [N]; ``spec`` says how to feed them to a
    model (MNIST's when None)."""

    images: np.ndarray
    labels: np.ndarray
    spec: DatasetSpec | None = None

    def __post_init__(self) -> None:
        if self.images.ndim < 2:
            raise DatasetError(f"images must be [N, ...], got shape {self.images.shape}")
        if self.labels.ndim != 1:
            raise DatasetError(f"labels must be [N], got shape {self.labels.shape}")
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"{len(self.images)} images but {len(self.labels)} labels; "
                "the image and label files must come from the same split"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray | Sequence[int]) -> Dataset:
        chosen = np.asarray(indices)
        return Dataset(self.images[chosen], self.labels[chosen], self.spec)


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes, checking magic, dtype code, dims and exact length."""
    if len(data) < IDX_HEADER_PREFIX:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{source}: bad IDX magic {data[:4].hex()} (must start with 0000); "
            "not an IDX file or a corrupt one"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in IDX_DTYPES)
        raise DatasetError(f"{source}: unknown IDX dtype code 0x{dtype_code:02x} (known: {known})")
    if ndim == 0:
        raise DatasetError(f"{source}: IDX header declares 0 dimensions")
    header_len = IDX_HEADER_PREFIX + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(
            f"{source}: truncated IDX header ({len(data)} bytes, {ndim} dims need {header_len})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[dtype_code]
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{source}: IDX payload length mismatch: header says shape {dims} of {dtype.name} "
            f"({expected} bytes in all) but the file has {len(data)} bytes; "
            "the file is truncated or corrupt, re-copy it"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    # Native byte order and an owned, writable copy.
    return array.astype(dtype.newbyteorder("="), copy=True)


def model_input_shape(raw_sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a model sees for one raw sample: grey [H, W] gains a channel axis."""
    return (1, *raw_sample_shape) if len(raw_sample_shape) == 2 else raw_sample_shape


def check_dataset(dataset: Dataset, spec: DatasetSpec, source: str) -> None:
    """Raise DatasetError naming ``source`` and the mismatch unless ``dataset`` fits ``spec``:
    sample shape, a numeric dtype, integer labels in [0, num_classes)."""
    if len(dataset) == 0:
        raise DatasetError(f"{source}: no samples")
    shape = model_input_shape(tuple(dataset.images.shape[1:]))
    if shape != spec.sample_shape:
        raise DatasetError(
            f"{source}: samples have shape {tuple(dataset.images.shape[1:])} (fed as {shape}) "
            f"but {spec.name} expects {spec.sample_shape}"
        )
    if dataset.images.dtype.kind not in "uif":
        raise DatasetError(f"{source}: sample dtype {dataset.images.dtype} is not numeric")
    if dataset.images.dtype.kind == "f" and not np.isfinite(dataset.images).all():
        raise DatasetError(f"{source}: samples contain NaN or infinite values")
    labels = dataset.labels
    if labels.dtype.kind not in "ui":
        raise DatasetError(f"{source}: labels have dtype {labels.dtype}; need integers")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= spec.num_classes:
        raise DatasetError(
            f"{source}: labels range over [{low}, {high}] but {spec.name} has "
            f"{spec.num_classes} classes (labels 0..{spec.num_classes - 1})"
        )


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


def _check_clients(n: int, k: int) -> None:
    if k < 1:
        raise DatasetError(f"number of clients must be >= 1, got {k}")
    if n < k:
        raise DatasetError(f"cannot give each of {k} clients a sample from only {n} samples")


def partition_iid(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Shuffle range(n) and split it into k near-equal parts (sizes differ by at most 1)."""
    _check_clients(n, k)
    order = _rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def partition_dirichlet(
    labels: np.ndarray | Sequence[int], k: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Label-skewed split: each class is spread over clients by proportions ~ Dirichlet(alpha).

    Smaller alpha means more skew. A client left empty by the draw gets one sample from the
    largest client, so every client is non-empty (needs len(labels) >= k).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetError(f"labels must be 1-D, got shape {labels.shape}")
    if not alpha > 0 or not np.isfinite(alpha):
        raise DatasetError(f"Dirichlet alpha must be a positive finite number, got {alpha}")
    _check_clients(len(labels), k)
    rng = _rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    result = [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in parts]
    for client in range(k):
        if len(result[client]) == 0:
            donor = max(range(k), key=lambda c: (len(result[c]), -c))
            result[client] = result[donor][-1:]
            result[donor] = result[donor][:-1]
    return [np.sort(part).astype(np.int64) for part in result]


def partition_shards(
    labels: np.ndarray | Sequence[int], k: int, shards_per_client: int, seed: int
) -> list[np.ndarray]:
    """McMahan et al.'s pathological non-IID split: sort by label, cut into k*s shards,
    give each client s random shards."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetError(f"labels must be 1-D, got shape {labels.shape}")
    if shards_per_client < 1:
        raise DatasetError(f"shards_per_client must be >= 1, got {shards_per_client}")
    _check_clients(len(labels), k)
    n_shards = k * shards_per_client
    if len(labels) < n_shards:
        raise DatasetError(
            f"{len(labels)} samples cannot fill {n_shards} shards ({k} clients x "
            f"{shards_per_client}); use fewer clients or shards"
        )
    rng = _rng(seed)
    # Random tie-break inside a class, then a stable sort by label.
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    assignment = rng.permutation(n_shards).reshape(k, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in assignment]


def partition(
    labels: np.ndarray,
    scheme: str,
    k: int,
    seed: int,
    alpha: float = 0.5,
    shards_per_part: int = 2,
) -> list[np.ndarray]:
    """Sample indices of k clients under ``scheme`` (one of PARTITIONS)."""
    if scheme == "iid":
        return partition_iid(len(labels), k, seed)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, k, alpha, seed)
    if scheme == "shards":
        return partition_shards(labels, k, shards_per_part, seed)
    raise DatasetError(f"unknown partition {scheme!r}; use one of {list(PARTITIONS)}")


def to_tensors(
    dataset: Dataset,
    indices: np.ndarray | Sequence[int] | None = None,
    mean: float | None = None,
    std: float | None = None,
    spec: DatasetSpec | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float32 inputs [N, *spec.sample_shape] and int64 labels [N] for the
    selected indices. The spec is the argument's, else the dataset's, else MNIST's; mean
    and std, when given, override its (single-channel) statistics."""
    spec = spec or dataset.spec or MNIST_SPEC
    images = dataset.images if indices is None else dataset.images[np.asarray(indices)]
    labels = dataset.labels if indices is None else dataset.labels[np.asarray(indices)]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).mul_(spec.scale)
    x = x.reshape(len(images), *model_input_shape(tuple(images.shape[1:])))
    means = (mean,) if mean is not None else spec.mean
    stds = (std,) if std is not None else spec.std
    if len(spec.sample_shape) == 3 and x.ndim == 4:
        channel = (1, -1, 1, 1)
        x = x.sub_(torch.tensor(means).reshape(channel)).div_(torch.tensor(stds).reshape(channel))
    else:
        x = x.sub_(means[0]).div_(stds[0])
    y = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)
    return x, y


# --- the dataset wire codec --------------------------------------------------------------

DATASET_WIRE_VERSION = 2
MAX_WIRE_SAMPLES = 60_000
# 60,000 CIFAR-sized uint8 samples fit; bounds what a requester's blob can make us hold.
MAX_DATASET_WIRE_BYTES = 256 << 20
_WIRE_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("u1"), "float32": np.dtype("<f4")}
_WIRE_LABELS = np.dtype("<u2")  # MAX_CLASSES labels fit
_MAX_WIRE_DIMS = 4
_MAX_NAME = 256
_WIRE_KEYS = {"v", "spec", "dtype", "shape", "images", "labels"}
_SPEC_KEYS = {"name", "sample_shape", "classes", "mean", "std", "scale"}


def encode_dataset(dataset: Dataset) -> bytes:
    """A labelled set with its spec as canonical msgpack: uint8 samples as they are, any
    other numbers as float32 (the precision models train in), uint16 labels, all raw
    little-endian bytes."""
    spec = dataset.spec or MNIST_SPEC
    check_dataset(dataset, spec, "dataset to encode")
    kind = "uint8" if dataset.images.dtype == np.uint8 else "float32"
    images = np.ascontiguousarray(dataset.images, dtype=_WIRE_DTYPES[kind])  # training precision
    packed: bytes = msgpack.packb(
        {
            "v": DATASET_WIRE_VERSION,
            "spec": {
                # a file name, not the owner's local path
                "name": spec.name.rsplit("/", 1)[-1][:_MAX_NAME],
                "sample_shape": list(spec.sample_shape),
                "classes": spec.num_classes,
                "mean": list(spec.mean),
                "std": list(spec.std),
                "scale": spec.scale,
            },
            "dtype": kind,
            "shape": list(images.shape),
            "images": images.tobytes(),
            "labels": np.ascontiguousarray(dataset.labels, dtype=_WIRE_LABELS).tobytes(),
        },
        use_bin_type=True,
    )
    return packed


def _ints(value: object, what: str, low: int, high: int) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= _MAX_WIRE_DIMS + 1
        or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                   for v in value)
    ):
        raise DatasetError(f"dataset blob: {what} {value!r} is not a short list of ints")
    return tuple(value)


def _floats(value: object, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= 4096 or not all(
        isinstance(v, float | int) and not isinstance(v, bool) for v in value
    ):
        raise DatasetError(f"dataset blob: {what} is not a list of numbers")
    return tuple(float(v) for v in value)


def decode_dataset(data: bytes, max_bytes: int = MAX_DATASET_WIRE_BYTES) -> Dataset:
    """Strict inverse of encode_dataset: size bounded before parsing, every field checked,
    the samples checked against the spec they came with."""
    if len(data) > max_bytes:
        raise DatasetError(f"dataset blob of {len(data)} bytes is over the {max_bytes}-byte bound")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises assorted ValueError/TypeError subclasses
        raise DatasetError(f"dataset blob is not valid msgpack: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) != _WIRE_KEYS:
        raise DatasetError(f"dataset blob must be a map of {sorted(_WIRE_KEYS)}")
    if raw["v"] != DATASET_WIRE_VERSION:
        raise DatasetError(f"dataset blob format {raw['v']!r} unsupported")
    fields = raw["spec"]
    if not isinstance(fields, dict) or set(fields) != _SPEC_KEYS:
        raise DatasetError(f"dataset blob: spec must be a map of {sorted(_SPEC_KEYS)}")
    name, classes, scale = fields["name"], fields["classes"], fields["scale"]
    if not isinstance(name, str) or len(name) > _MAX_NAME or not isinstance(classes, int):
        raise DatasetError("dataset blob: spec name or classes malformed")
    if not isinstance(scale, float | int) or isinstance(scale, bool):
        raise DatasetError("dataset blob: spec scale is not a number")
    spec = DatasetSpec(
        name=name,
        sample_shape=_ints(fields["sample_shape"], "sample shape", 1, 1 << 16),
        num_classes=classes,
        mean=_floats(fields["mean"], "mean"),
        std=_floats(fields["std"], "std"),
        scale=float(scale),
    )
    kind = raw["dtype"]
    if kind not in _WIRE_DTYPES:
        raise DatasetError(f"dataset blob: dtype {kind!r} is not one of {sorted(_WIRE_DTYPES)}")
    shape = _ints(raw["shape"], "shape", 1, 1 << 16)
    if len(shape) < 2 or shape[0] > MAX_WIRE_SAMPLES:
        raise DatasetError(f"dataset blob: shape {list(shape)} is not [N <= {MAX_WIRE_SAMPLES}, ...]")
    dtype = _WIRE_DTYPES[kind]
    images, labels = raw["images"], raw["labels"]
    if not isinstance(images, bytes) or len(images) != math.prod(shape) * dtype.itemsize:
        raise DatasetError("dataset blob: images do not match its shape")
    if not isinstance(labels, bytes) or len(labels) != shape[0] * _WIRE_LABELS.itemsize:
        raise DatasetError("dataset blob: labels do not match its shape")
    dataset = Dataset(
        np.frombuffer(images, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("=")),
        np.frombuffer(labels, dtype=_WIRE_LABELS).astype(np.int64),
        spec,
    )
    check_dataset(dataset, spec, "dataset blob")
    return dataset
