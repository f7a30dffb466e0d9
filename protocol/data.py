"""MNIST-format (IDX) datasets, deterministic client partitions, and tensor conversion.

Pure functions over local files and arrays: nothing here downloads. IDX files may be
gzip-compressed or plain; the format is detected from the magic bytes, never the name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from protocol.errors import DatasetError

GZIP_MAGIC = b"\x1f\x8b"
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

# Large enough for any MNIST-style file (train images are 47 MB); bounds what a
# corrupt or hostile gzip stream can make us allocate.
DEFAULT_MAX_IDX_BYTES = 1 << 30

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Canonical MD5s of the uncompressed files, as published with MNIST.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_CLASSES = 10

HOW_TO_GET_MNIST = (
    "Get the four MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzip-compressed or plain) from "
    "http://yann.lecun.com/exdb/mnist (or a mirror) and copy them into the data root, or "
    "`pip install fl-node[vision]` and run "
    "`python -c \"import torchvision; torchvision.datasets.MNIST('<root>', download=True)\"`, "
    "which puts them under <root>/MNIST/raw."
)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare
class Dataset:
    """An image classification dataset: uint8 images [N, H, W] and uint8 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise DatasetError(f"images must be [N, H, W], got shape {self.images.shape}")
        if self.labels.ndim != 1:
            raise DatasetError(f"labels must be [N], got shape {self.labels.shape}")
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"{len(self.images)} images but {len(self.labels)} labels; "
                "the image and label files must come from the same split"
            )

    def __len__(self) -> int:
        return len(self.labels)


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, gunzipped if it starts with the gzip magic, at most max_bytes."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            if head == GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    data = unzipped.read(max_bytes + 1)
            else:
                data = raw.read(max_bytes + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: corrupt gzip stream ({exc}); re-copy the file. {HOW_TO_GET_MNIST}"
        ) from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if len(data) > max_bytes:
        raise DatasetError(
            f"{path}: more than {max_bytes} bytes uncompressed; not an IDX file this loader "
            "accepts (raise max_bytes if it really is that large)"
        )
    return data


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


def load_idx(
    path: str | Path, expected_md5: str | None = None, max_bytes: int = DEFAULT_MAX_IDX_BYTES
) -> np.ndarray:
    """Read an IDX file (gzip or plain), optionally checking the MD5 of its uncompressed bytes."""
    path = Path(path)
    data = _read_bounded(path, max_bytes)
    if expected_md5 is not None:
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if actual != expected_md5:
            raise DatasetError(
                f"{path}: MD5 of the uncompressed file is {actual}, expected {expected_md5}; "
                f"the file is corrupt or not the canonical one, re-copy it. {HOW_TO_GET_MNIST}"
            )
    return parse_idx(data, source=str(path))


DATA_ROOT_ENV = "FL_NODE_DATA_ROOT"


def default_data_root() -> Path:
    """$FL_NODE_DATA_ROOT, else ../shared/datasets/mnist beside the repository checkout."""
    fallback = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "mnist"
    return Path(os.environ.get(DATA_ROOT_ENV, fallback))


def mnist_available(root: str | Path, split: Literal["train", "test"] = "test") -> bool:
    """Whether every file of the split is present under root (not whether it is intact)."""
    return all(_find_file(Path(root), stem)[0] is not None for stem in MNIST_FILES[split])


def mnist_search_dirs(root: str | Path) -> list[Path]:
    """Where load_mnist looks, in order: root itself, then torchvision's root/MNIST/raw."""
    root = Path(root)
    return [root, root / "MNIST" / "raw"]


def _find_file(root: Path, stem: str) -> tuple[Path | None, list[Path]]:
    candidates = [d / name for d in mnist_search_dirs(root) for name in (stem + ".gz", stem)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, candidates
    return None, candidates


def load_mnist(root: str | Path, split: Literal["train", "test"]) -> Dataset:
    """Load an MNIST split from root (files gzip or plain, in root or root/MNIST/raw)."""
    if split not in MNIST_FILES:
        raise DatasetError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    root = Path(root)
    arrays: list[np.ndarray] = []
    for stem in MNIST_FILES[split]:
        found, looked = _find_file(root, stem)
        if found is None:
            places = "\n  ".join(str(p) for p in looked)
            raise DatasetError(
                f"MNIST file {stem} not found; looked at:\n  {places}\n{HOW_TO_GET_MNIST}"
            )
        arrays.append(load_idx(found, expected_md5=MNIST_MD5[stem]))
    images, labels = arrays
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(
            f"MNIST {split} files have unexpected layout: images {images.dtype}{images.shape}, "
            f"labels {labels.dtype}{labels.shape}"
        )
    return Dataset(images=images, labels=labels)


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


def to_tensors(
    dataset: Dataset,
    indices: np.ndarray | Sequence[int] | None = None,
    mean: float = MNIST_MEAN,
    std: float = MNIST_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized float32 images [N, 1, H, W] and int64 labels [N], for the selected indices."""
    images = dataset.images if indices is None else dataset.images[np.asarray(indices)]
    labels = dataset.labels if indices is None else dataset.labels[np.asarray(indices)]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    x = x.sub_(mean).div_(std).unsqueeze(1)
    y = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)
    return x, y
