"""The built-in datasets: where their files are looked for, their checksums, and the
download of a missing one from its canonical mirror into the cache.

Checksums: ``sha256`` is of the file as its mirror publishes it (what a download is
checked against); ``content_sha256`` is of the uncompressed bytes, so a local copy that
was recompressed or unpacked (as the Debian package and ../shared are) still checks.
A local copy must match one of them; a dataset with neither published is checked by
its format alone, and is never downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, ParamSpec, TextIO

import numpy as np

from node.datasets.download import DownloadError, download
from node.datasets.files import DEFAULT_MAX_FILE_BYTES, cache_root, read_bounded, sha256_of_file
from protocol.data import (
    CIFAR10_SPEC,
    EMNIST_DIGITS_SPEC,
    FASHION_MNIST_SPEC,
    KMNIST_SPEC,
    MNIST_SPEC,
    Dataset,
    DatasetSpec,
    check_dataset,
    parse_idx,
)
from protocol.errors import DatasetError

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class DataFile:
    name: str  # as published (and as looked for, with or without .gz)
    sha256: str | None  # of the published file
    content_sha256: str | None = None  # of its uncompressed bytes

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".gz")


@dataclass(frozen=True)
class BuiltinDataset:
    spec: DatasetSpec
    mirrors: tuple[str, ...]
    folder: str  # torchvision's folder name: files are also looked for in root/folder/raw
    splits: dict[str, tuple[DataFile, ...]]  # idx: (images, labels); archive: (archive,)
    samples: dict[str, int]
    archive: bool = False
    how_to_get: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    def files(self) -> list[DataFile]:
        seen: dict[str, DataFile] = {}
        for split in SPLITS:
            for data_file in self.splits[split]:
                seen.setdefault(data_file.name, data_file)
        return list(seen.values())


def _idx_splits(
    prefix: str, sums: dict[str, tuple[str | None, str | None]]
) -> dict[str, tuple[DataFile, ...]]:
    def one(kind: str) -> DataFile:
        name = f"{prefix}{kind}.gz"
        published, content = sums[kind]
        return DataFile(name, published, content)

    return {
        "train": (one("train-images-idx3-ubyte"), one("train-labels-idx1-ubyte")),
        "test": (one("t10k-images-idx3-ubyte"), one("t10k-labels-idx1-ubyte")),
    }


# Published-file SHA-256s of MNIST, Fashion-MNIST and KMNIST and of CIFAR-10's binary
# archive are those torchvision-ruby pins; content SHA-256s were computed from
# ../shared/datasets/mnist (whose uncompressed bytes carry MNIST's published MD5s) and
# from Debian's dataset-fashion-mnist package.
MNIST = BuiltinDataset(
    MNIST_SPEC,
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "MNIST",
    _idx_splits(
        "",
        {
            "train-images-idx3-ubyte": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "train-labels-idx1-ubyte": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            "t10k-images-idx3-ubyte": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            "t10k-labels-idx1-ubyte": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
    ),
    {"train": 60_000, "test": 10_000},
)
FASHION_MNIST = BuiltinDataset(
    FASHION_MNIST_SPEC,
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "FashionMNIST",
    _idx_splits(
        "",
        {
            "train-images-idx3-ubyte": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels-idx1-ubyte": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "t10k-images-idx3-ubyte": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "t10k-labels-idx1-ubyte": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
    ),
    {"train": 60_000, "test": 10_000},
    how_to_get="Debian/Ubuntu: `apt-get install dataset-fashion-mnist` puts them under "
    "/usr/share/datasets/fashion-mnist.",
)
KMNIST = BuiltinDataset(
    KMNIST_SPEC,
    ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    "KMNIST",
    _idx_splits(
        "",
        {
            "train-images-idx3-ubyte": (
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                None,
            ),
            "train-labels-idx1-ubyte": (
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                None,
            ),
            "t10k-images-idx3-ubyte": (
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                None,
            ),
            "t10k-labels-idx1-ubyte": (
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                None,
            ),
        },
    ),
    {"train": 60_000, "test": 10_000},
)
# NIST publishes EMNIST as one 562 MB gzip.zip with an MD5 (58c8d27c78d21e728a6bc7b3cc06412e)
# and no SHA-256, so it is not downloaded; its digits files are checked by format and size.
EMNIST_DIGITS = BuiltinDataset(
    EMNIST_DIGITS_SPEC,
    (),
    "EMNIST",
    _idx_splits(
        "emnist-digits-",
        {
            "train-images-idx3-ubyte": (None, None),
            "train-labels-idx1-ubyte": (None, None),
            "t10k-images-idx3-ubyte": (None, None),
            "t10k-labels-idx1-ubyte": (None, None),
        },
    ),
    {"train": 240_000, "test": 40_000},
    how_to_get="Download https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip (check its MD5 "
    "58c8d27c78d21e728a6bc7b3cc06412e) and copy the four emnist-digits-* files from its "
    "gzip/ folder.",
)
CIFAR10_ARCHIVE = DataFile(
    "cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
)
CIFAR10 = BuiltinDataset(
    CIFAR10_SPEC,
    ("https://www.cs.toronto.edu/~kriz/",),
    "cifar-10-batches-bin",
    {"train": (CIFAR10_ARCHIVE,), "test": (CIFAR10_ARCHIVE,)},
    {"train": 50_000, "test": 10_000},
    archive=True,
)
BUILTIN: dict[str, BuiltinDataset] = {
    d.name: d for d in (MNIST, FASHION_MNIST, KMNIST, EMNIST_DIGITS, CIFAR10)
}
# EMNIST's files store each image transposed (column-major) relative to MNIST.
_TRANSPOSED = {"emnist-digits"}

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}


def search_dirs(dataset: BuiltinDataset, root: Path | str | None) -> list[Path]:
    """Where a built-in dataset's files are looked for, in order; the cache comes last."""
    dirs: list[Path] = []
    if root is not None:
        root = Path(root)
        dirs += [root, root / dataset.folder / "raw", root / dataset.folder, root / dataset.name]
    dirs.append(cache_root() / dataset.name)
    return dirs


def find_file(dataset: BuiltinDataset, data_file: DataFile, root: Path | None) -> Path | None:
    for directory in search_dirs(dataset, root):
        for name in (data_file.name, data_file.stem):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def available(name: str, root: Path | None, split: Split = "test") -> bool:
    """Whether every file of the split is present locally (not whether it is intact)."""
    dataset = _dataset(name)
    if dataset.archive:
        unpacked = any(
            all((d / b).is_file() for b in CIFAR_BATCHES[split]) for d in search_dirs(dataset, root)
        )
        return unpacked or find_file(dataset, dataset.splits[split][0], root) is not None
    return all(find_file(dataset, f, root) is not None for f in dataset.splits[split])


def missing_files_message(dataset: BuiltinDataset, root: Path | None, why: str) -> str:
    """The offline error: which files, their checksums, where to put them."""
    lines = [f"dataset {dataset.name!r}: {why}. Put these files into one of:"]
    lines += [f"  {d}" for d in search_dirs(dataset, root)]
    lines.append("files (gzip-compressed or plain), with the SHA-256 they are checked against:")
    for data_file in dataset.files():
        sums = [s for s in (data_file.sha256, data_file.content_sha256) if s]
        checked = " or ".join(sums) if sums else "no published SHA-256 (checked by format)"
        urls = [m + data_file.name for m in dataset.mirrors]
        where = f" from {urls[0]}" if urls else ""
        lines.append(f"  {data_file.name}: {checked}{where}")
    if dataset.how_to_get:
        lines.append(dataset.how_to_get)
    return "\n".join(lines)


def _dataset(name: str) -> BuiltinDataset:
    try:
        return BUILTIN[name]
    except KeyError:
        raise DatasetError(
            f"unknown built-in dataset {name!r}; known: {', '.join(sorted(BUILTIN))}"
        ) from None


def _verified_bytes(path: Path, data_file: DataFile, dataset: BuiltinDataset) -> bytes:
    """The file's uncompressed bytes once one of its checksums matches."""
    data = read_bounded(path, DEFAULT_MAX_FILE_BYTES, dataset.how_to_get)
    if data_file.sha256 is None and data_file.content_sha256 is None:
        return data
    content = hashlib.sha256(data).hexdigest()
    if data_file.content_sha256 == content:
        return data
    published = sha256_of_file(path)
    if data_file.sha256 == published:
        return data
    expected = " or ".join(s for s in (data_file.content_sha256, data_file.sha256) if s)
    raise DatasetError(
        f"{path}: not the {dataset.name} file {data_file.name}: its SHA-256 is {published} "
        f"(uncompressed {content}), expected {expected}; replace it with the published file, "
        "or name the folder itself as [data] source to load any IDX files unchecked"
    )


def ensure_files(
    dataset: BuiltinDataset,
    split: Split,
    root: Path | None,
    allow_download: bool,
    progress: TextIO | None,
) -> list[Path]:
    """Local paths of the split's files, downloading missing ones into the cache."""
    paths: list[Path] = []
    for data_file in dataset.splits[split]:
        found = find_file(dataset, data_file, root)
        if found is None:
            found = _download(dataset, data_file, root, allow_download, progress)
        paths.append(found)
    return paths


def _download(
    dataset: BuiltinDataset,
    data_file: DataFile,
    root: Path | None,
    allow_download: bool,
    progress: TextIO | None,
) -> Path:
    if not allow_download:
        raise DatasetError(missing_files_message(dataset, root, "files not found locally"))
    if data_file.sha256 is None or not dataset.mirrors:
        raise DatasetError(
            missing_files_message(dataset, root, "not found locally and not downloadable "
                                  "(no published SHA-256 to check a download against)")
        )
    destination = cache_root() / dataset.name / data_file.name
    failures: list[str] = []
    for mirror in dataset.mirrors:
        try:
            return download(mirror + data_file.name, destination, data_file.sha256,
                            DEFAULT_MAX_FILE_BYTES, progress)
        except DownloadError as exc:
            failures.append(str(exc))
    why = "not found locally, and the download failed: " + "; ".join(failures)
    raise DatasetError(missing_files_message(dataset, root, why))


P = ParamSpec("P")
_shared: dict[tuple[str, str, Path | None], Dataset] | None = None
_shared_lock = threading.Lock()


@contextmanager
def shared_loads() -> Iterator[None]:
    """Within it, each built-in split is read, checked and parsed once and shared read-only
    by every node of the process (the in-process localnet: a hundred workers each read the
    whole training split twice). Outside, nothing is kept: a lone node keeps only its shard."""
    global _shared
    outermost = _shared is None
    if outermost:
        _shared = {}
    try:
        yield
    finally:
        if outermost:
            _shared = None


def _shared_within_loads(load: Callable[P, Dataset]) -> Callable[P, Dataset]:
    """`load`, answered from the process's shared splits inside `shared_loads()`."""

    @functools.wraps(load)
    def shared(*args: P.args, **kwargs: P.kwargs) -> Dataset:
        if _shared is None:
            return load(*args, **kwargs)
        called = inspect.signature(load).bind(*args, **kwargs)
        called.apply_defaults()
        key = (called.arguments["name"], called.arguments["split"], called.arguments["root"])
        with _shared_lock:
            if key not in _shared:
                loaded = load(*args, **kwargs)
                loaded.images.setflags(write=False)
                loaded.labels.setflags(write=False)
                _shared[key] = loaded
            return _shared[key]

    return shared


@_shared_within_loads
def load_builtin(
    name: str,
    split: Split,
    root: Path | None = None,
    allow_download: bool = True,
    progress: TextIO | None = sys.stderr,
) -> Dataset:
    """A built-in dataset's split, from the root, the cache, or (once) its mirror."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use 'train' or 'test'")
    dataset = _dataset(name)
    if dataset.archive:
        loaded = _load_cifar(dataset, split, root, allow_download, progress)
    else:
        images_path, labels_path = ensure_files(dataset, split, root, allow_download, progress)
        images = parse_idx(_verified_bytes(images_path, dataset.splits[split][0], dataset),
                           str(images_path))
        labels = parse_idx(_verified_bytes(labels_path, dataset.splits[split][1], dataset),
                           str(labels_path))
        if name in _TRANSPOSED and images.ndim == 3:
            images = np.ascontiguousarray(images.transpose(0, 2, 1))
        source = f"{dataset.name} {split} ({images_path.parent})"
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise DatasetError(
                f"{source}: expected uint8 images and labels, got {images.dtype} and "
                f"{labels.dtype}"
            )
        loaded = Dataset(images, labels, dataset.spec)
    source = f"{dataset.name} {split}"
    if len(loaded) != dataset.samples[split]:
        raise DatasetError(
            f"{source}: {len(loaded)} samples, expected {dataset.samples[split]}; "
            "the files are truncated or of another dataset"
        )
    check_dataset(loaded, dataset.spec, source)
    return loaded


def _load_cifar(
    dataset: BuiltinDataset,
    split: Split,
    root: Path | None,
    allow_download: bool,
    progress: TextIO | None,
) -> Dataset:
    """CIFAR-10's binary version (no pickle): records of a label byte and 3x32x32 pixels,
    read from the unpacked batches in a search folder or straight out of the archive."""
    for directory in search_dirs(dataset, root):
        if all((directory / b).is_file() for b in CIFAR_BATCHES[split]):
            chunks = [read_bounded(directory / b, 64 << 20) for b in CIFAR_BATCHES[split]]
            return _parse_cifar(chunks, str(directory))
    (archive,) = ensure_files(dataset, split, root, allow_download, progress)
    data = _verified_bytes(archive, CIFAR10_ARCHIVE, dataset)
    chunks = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for batch in CIFAR_BATCHES[split]:
                member = tar.getmember(f"cifar-10-batches-bin/{batch}")
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is None or member.size > 64 << 20:
                    raise DatasetError(f"{archive}: {batch} is not a regular file of sane size")
                chunks.append(extracted.read())
    except (tarfile.TarError, KeyError) as exc:
        raise DatasetError(f"{archive}: not the CIFAR-10 binary archive ({exc})") from exc
    return _parse_cifar(chunks, str(archive))


def _parse_cifar(chunks: list[bytes], source: str) -> Dataset:
    records = b"".join(chunks)
    if len(records) % CIFAR_RECORD:
        raise DatasetError(
            f"{source}: {len(records)} bytes is not a whole number of {CIFAR_RECORD}-byte "
            "CIFAR-10 records"
        )
    table = np.frombuffer(records, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    images = table[:, 1:].reshape(-1, 3, 32, 32).copy()
    return Dataset(images, table[:, 0].copy(), CIFAR10_SPEC)
