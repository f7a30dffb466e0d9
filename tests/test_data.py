from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.datasets import (
    MNIST_FILES,
    default_data_root,
    load_idx,
    load_mnist,
    mnist_available,
)
from protocol.data import (
    CIFAR10_SPEC,
    MNIST_MEAN,
    MNIST_STD,
    Dataset,
    DatasetSpec,
    decode_dataset,
    encode_dataset,
    parse_idx,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    to_tensors,
)
from protocol.errors import DatasetError

DATA_ROOT = default_data_root()
needs_mnist = pytest.mark.skipif(
    not mnist_available(DATA_ROOT), reason=f"MNIST not found at {DATA_ROOT} (set FL_NODE_DATA_ROOT)"
)


@pytest.fixture(autouse=True)
def empty_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees (or fills) the user's download cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(scope="module")
def mnist_test() -> Dataset:
    return load_mnist(DATA_ROOT, "test")


# --- IDX parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "code"),
    [
        (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
        (np.array([-3, 5], dtype=np.int8), 0x09),
        (np.array([[-300, 7]], dtype=np.int16), 0x0B),
        (np.array([1 << 20, -5], dtype=np.int32), 0x0C),
        (np.array([1.5, -2.25], dtype=np.float32), 0x0D),
        (np.array([1e300], dtype=np.float64), 0x0E),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_every_dtype_gzip_or_plain(
    tmp_path: Path, array: np.ndarray, code: int, compress: bool
) -> None:
    data = idx_bytes(array, code)
    # A misleading name: the format is detected from the magic bytes.
    path = tmp_path / ("file.idx" if compress else "file.gz")
    path.write_bytes(gzip.compress(data) if compress else data)
    loaded = load_idx(path)
    assert loaded.dtype == array.dtype and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)
    loaded[...] = 0  # an owned, writable copy


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x00\x00", "payload length mismatch"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00", "payload length mismatch"),
        (b"\x00\x00\x0c\x01" + struct.pack(">I", 2) + b"\x00" * 7, "shape \\(2,\\) of int32"),
    ],
)
def test_malformed_idx_is_rejected_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_idx(data)


def test_corrupt_gzip_and_size_bound(tmp_path: Path) -> None:
    payload = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8), 0x08))
    broken = tmp_path / "broken.gz"
    broken.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DatasetError, match="corrupt gzip stream"):
        load_idx(broken)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"\x00" * 100_000))
    with pytest.raises(DatasetError, match="more than 1000 bytes"):
        load_idx(bomb, max_bytes=1000)
    with pytest.raises(DatasetError, match="cannot read"):
        load_idx(tmp_path / "absent")


def test_sha256_mismatch_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8), 0x08))
    with pytest.raises(DatasetError, match="SHA-256 of the uncompressed file is .* expected 0+"):
        load_idx(path, expected_sha256="0" * 64)


# --- MNIST -------------------------------------------------------------------------------


@needs_mnist
def test_real_mnist_loads_with_canonical_checksums(mnist_test: Dataset) -> None:
    assert mnist_test.images.shape == (10000, 28, 28) and mnist_test.images.dtype == np.uint8
    assert mnist_test.labels.shape == (10000,) and mnist_test.labels.dtype == np.uint8
    assert np.bincount(mnist_test.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]  # fmt: skip
    assert mnist_test.labels[:5].tolist() == [7, 2, 1, 0, 4]


@needs_mnist
def test_finds_plain_files_under_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in MNIST_FILES["test"]:
        (raw / stem).write_bytes(gzip.decompress((DATA_ROOT / f"{stem}.gz").read_bytes()))
    dataset = load_mnist(tmp_path, "test")
    assert len(dataset) == 10000


def test_default_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FL_NODE_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    assert not mnist_available(tmp_path)
    monkeypatch.delenv("FL_NODE_DATA_ROOT")
    assert default_data_root().parts[-3:] == ("shared", "datasets", "mnist")


def test_missing_files_say_where_they_looked_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        load_mnist(tmp_path, "train")
    message = str(raised.value)
    assert f"\n  {tmp_path}\n" in message and str(tmp_path / "MNIST" / "raw") in message
    # each file with the checksum it is checked against and where to get it
    assert "train-images-idx3-ubyte.gz: 440fcabf" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_mnist(tmp_path, "val")  # type: ignore[arg-type]


@needs_mnist
def test_truncated_or_altered_mnist_file_is_reported(tmp_path: Path) -> None:
    for stem in MNIST_FILES["test"]:
        shutil.copy(DATA_ROOT / f"{stem}.gz", tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a valid-looking file with one wrong label
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: not the mnist file .* SHA"):
        load_mnist(tmp_path, "test")
    labels.write_bytes(gzip.compress(bytes(raw[:-10])))
    with pytest.raises(DatasetError, match="SHA-256"):
        load_mnist(tmp_path, "test")


@needs_mnist
def test_to_tensors_normalizes_and_selects(mnist_test: Dataset) -> None:
    x, y = to_tensors(mnist_test, np.array([3, 0]))
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [0, 7]
    expected = (mnist_test.images[0].astype(np.float32) / 255 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(x[1, 0].numpy(), expected, rtol=1e-6)
    full, _ = to_tensors(mnist_test)
    assert abs(float(full.mean())) < 0.05 and abs(float(full.std()) - 1) < 0.05


def test_dataset_checks_lengths() -> None:
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        Dataset(np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))


# --- partitions --------------------------------------------------------------------------


def assert_disjoint_and_covering(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    assert all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def labels_strategy() -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.integers(0, 9), min_size=30, max_size=400).map(
        lambda xs: np.array(xs, dtype=np.uint8)
    )


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), k=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_iid_partition_properties(n: int, k: int, seed: int) -> None:
    if n < k:
        with pytest.raises(DatasetError):
            partition_iid(n, k, seed)
        return
    parts = partition_iid(n, k, seed)
    assert_disjoint_and_covering(parts, n, k)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    again = partition_iid(n, k, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=60, deadline=None)
@given(
    labels=labels_strategy(),
    k=st.integers(1, 20),
    alpha=st.floats(0.01, 100),
    seed=st.integers(0, 2**32),
)
def test_dirichlet_partition_properties(
    labels: np.ndarray, k: int, alpha: float, seed: int
) -> None:
    parts = partition_dirichlet(labels, k, alpha, seed)
    assert_disjoint_and_covering(parts, len(labels), k)
    again = partition_dirichlet(labels, k, alpha, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=60, deadline=None)
@given(labels=labels_strategy(), k=st.integers(1, 10), s=st.integers(1, 3), seed=st.integers(0, 2**32))
def test_shard_partition_properties(labels: np.ndarray, k: int, s: int, seed: int) -> None:
    parts = partition_shards(labels, k, s, seed)
    assert_disjoint_and_covering(parts, len(labels), k)
    again = partition_shards(labels, k, s, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@needs_mnist
def test_skewed_partitions_are_actually_skewed(mnist_test: Dataset) -> None:
    labels = mnist_test.labels

    def classes_per_client(parts: list[np.ndarray], minimum_share: float) -> list[int]:
        return [
            int((np.bincount(labels[p], minlength=10) > minimum_share * len(p)).sum())
            for p in parts
        ]

    iid = classes_per_client(partition_iid(len(labels), 10, seed=1), 0.05)
    assert iid == [10] * 10
    shards = partition_shards(labels, 10, 2, seed=1)
    # Two label-sorted shards of 500 span at most 2 classes each, so at most 4 per client.
    assert max(classes_per_client(shards, 0.0)) <= 4
    skewed = classes_per_client(partition_dirichlet(labels, 10, alpha=0.1, seed=1), 0.05)
    assert sum(skewed) / 10 < 5
    seeds_differ = partition_dirichlet(labels, 10, 0.1, seed=2)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(seeds_differ, partition_dirichlet(labels, 10, 0.1, seed=1), strict=True)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: partition_iid(3, 0, 0), "clients must be >= 1"),
        (lambda: partition_iid(3, 5, 0), "5 clients a sample from only 3"),
        (lambda: partition_dirichlet([0, 1, 2], 2, 0.0, 0), "alpha must be a positive"),
        (lambda: partition_dirichlet([0, 1, 2], 2, float("nan"), 0), "alpha must be a positive"),
        (lambda: partition_shards([0, 1, 2, 3], 2, 3, 0), "cannot fill 6 shards"),
        (lambda: partition_shards([0, 1], 1, 0, 0), "shards_per_client must be >= 1"),
    ],
)
def test_partition_parameters_are_checked(call: object, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        call()  # type: ignore[operator]


# --- the dataset wire codec ----------------------------------------------------------------


def _wire(dataset: Dataset) -> dict[str, object]:
    raw = msgpack.unpackb(encode_dataset(dataset), raw=False)
    assert isinstance(raw, dict)
    return raw


def test_wire_codec_round_trips_samples_and_spec() -> None:
    rng = np.random.default_rng(0)
    colour = Dataset(
        rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8), np.array([0, 9, 3, 3, 1]), CIFAR10_SPEC
    )
    back = decode_dataset(encode_dataset(colour))
    assert back.spec == CIFAR10_SPEC and np.array_equal(back.images, colour.images)
    assert back.labels.tolist() == [0, 9, 3, 3, 1]
    rows_spec = DatasetSpec("rows.csv", (4,), 3, (1.0,), (2.0,), 1.0)
    rows = Dataset(rng.normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2]), rows_spec)
    back = decode_dataset(encode_dataset(rows))
    assert back.images.dtype == np.float32 and back.spec == rows_spec
    np.testing.assert_allclose(back.images, rows.images.astype(np.float32))
    # Validators normalise what they evaluate on as the data's owner does.
    assert torch.equal(to_tensors(back)[0], to_tensors(rows.subset(range(6)), spec=rows_spec)[0])


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (lambda raw: raw.update(v=1), "format 1 unsupported"),
        (lambda raw: raw.update(extra=1), "must be a map of"),
        (lambda raw: raw["spec"].update(mean=[float("nan")]), "must be finite"),
        (lambda raw: raw["spec"].update(std=[0.0]), "std and scale must be > 0"),
        (lambda raw: raw["spec"].update(sample_shape=[3, 16, 16]), r"expects \(3, 16, 16\)"),
        (lambda raw: raw["spec"].update(classes=2), r"labels range over \[0, 9\]"),
        (lambda raw: raw.update(dtype="float64"), "dtype 'float64' is not one of"),
        (lambda raw: raw.update(shape=[61_000, 3, 32, 32]), "is not \\[N <= 60000"),
        (lambda raw: raw.update(shape=[2, 3, 32, 32]), "images do not match its shape"),
        (lambda raw: raw.update(labels=raw["labels"][:-1]), "labels do not match"),
        (lambda raw: raw.update(shape=[5, True, 32, 32]), "not a short list of ints"),
    ],
)
def test_wire_codec_refuses_tampered_blobs(tamper: object, says: str) -> None:
    rng = np.random.default_rng(1)
    dataset = Dataset(
        rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8), np.array([0, 9, 3, 3, 1]), CIFAR10_SPEC
    )
    raw = _wire(dataset)
    tamper(raw)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=says):
        decode_dataset(msgpack.packb(raw, use_bin_type=True))


def test_wire_codec_size_bound_comes_first() -> None:
    blob = encode_dataset(Dataset(np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8)))
    with pytest.raises(DatasetError, match="over the 100-byte bound"):
        decode_dataset(blob, max_bytes=100)


@settings(max_examples=50, deadline=None)
@given(cut=st.integers(min_value=0, max_value=2000))
def test_wire_codec_truncation_is_always_a_dataset_error(cut: int) -> None:
    blob = encode_dataset(Dataset(np.ones((2, 28, 28), np.uint8), np.array([1, 2])))
    with pytest.raises(DatasetError):
        decode_dataset(blob[: min(cut, len(blob) - 1)])


def test_wire_codec_sends_a_file_name_not_the_owners_path() -> None:
    spec = DatasetSpec("/home/clinic/private/patients.csv", (2,), 2, scale=1.0)
    data = Dataset(np.zeros((2, 2), np.float32), np.array([0, 1]), spec)
    assert decode_dataset(encode_dataset(data)).spec == DatasetSpec("patients.csv", (2,), 2, scale=1.0)
