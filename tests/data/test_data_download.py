"""The download path of a built-in dataset against a real HTTP server on 127.0.0.1:
good files land in the cache (SHA-256 checked, once), corrupted, truncated or
unreachable ones give a clear error and leave nothing in the cache."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from node.cli import main
from node.datasets import BUILTIN, DATA_ROOT_ENV, files, load_builtin
from node.datasets.builtin import MNIST, BuiltinDataset, DataFile
from node.localnet import launcher
from node.localnet.evaluation import TestSetEvaluator
from node.localnet.launcher import LocalnetOptions
from protocol.data import DatasetSpec
from protocol.errors import DatasetError
from tests.data.conftest import idx_bytes


class Mirror:
    """A tiny HTTP mirror: serves `files`; `corrupt` flips a byte, `truncate` promises
    more bytes than it sends."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.corrupt: set[str] = set()
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                name = self.path.rsplit("/", 1)[-1]
                mirror.requests.append(name)
                body = mirror.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                if name in mirror.corrupt:
                    body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in mirror.truncate else body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tiny_files() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    files = {}
    for prefix, count in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels), mtime=0)
    return files


def served_as(name: str, served: Mirror, folder: str) -> BuiltinDataset:
    """A built-in dataset `name` laid out as MNIST, pinned to the mirror's tiny files, whose
    canonical mirrors are a closed port and then the local server."""

    def pinned(data_file: DataFile) -> DataFile:
        return DataFile(data_file.name, hashlib.sha256(served.files[data_file.name]).hexdigest())

    return dataclasses.replace(
        MNIST,
        spec=DatasetSpec(name, (1, 28, 28), 10),
        mirrors=("http://127.0.0.1:9/unreachable/", served.url),
        folder=folder,
        splits={s: tuple(pinned(f) for f in fs) for s, fs in MNIST.splits.items()},
        samples={"train": 30, "test": 10},
    )


def serving(monkeypatch: pytest.MonkeyPatch, name: str, folder: str) -> Iterator[Mirror]:
    """The built-in dataset `name` served by a local mirror while the test runs."""
    served = Mirror(tiny_files())
    monkeypatch.setitem(BUILTIN, name, served_as(name, served, folder))
    yield served
    served.close()


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """A built-in dataset 'tiny' whose canonical mirror is a local server."""
    yield from serving(monkeypatch, "tiny", "TINY")


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_download_on_first_use_then_from_the_cache(
    mirror: Mirror, empty_cache: Path, tmp_path: Path
) -> None:
    progress = io.StringIO()
    data = load_builtin("tiny", "train", root=tmp_path, progress=progress)
    assert len(data) == 30 and data.images.shape == (30, 28, 28)
    assert cache_files(empty_cache) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert "downloading train-images-idx3-ubyte.gz [" in progress.getvalue()
    assert "100.0%" in progress.getvalue()
    served = len(mirror.requests)
    again = load_builtin("tiny", "train", root=tmp_path, progress=None)
    assert len(mirror.requests) == served  # no second download
    np.testing.assert_array_equal(again.images, data.images)


def test_corrupted_download_is_refused_and_nothing_is_kept(
    mirror: Mirror, empty_cache: Path
) -> None:
    mirror.corrupt.add("t10k-images-idx3-ubyte.gz")
    with pytest.raises(DatasetError) as raised:
        load_builtin("tiny", "test", progress=None)
    message = str(raised.value)
    assert "t10k-images-idx3-ubyte.gz: the downloaded bytes have SHA-256" in message
    assert "nothing was kept" in message
    assert cache_files(empty_cache) == []  # no half-written or unchecked file, no .part
    mirror.corrupt.clear()
    assert len(load_builtin("tiny", "test", progress=None)) == 10


def test_truncated_download_is_refused_and_nothing_is_kept(
    mirror: Mirror, empty_cache: Path
) -> None:
    mirror.truncate.add("t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: cannot download"):
        load_builtin("tiny", "test", progress=None)
    assert cache_files(empty_cache) == ["t10k-images-idx3-ubyte.gz"]  # the intact one


def test_offline_error_names_files_checksums_and_folders(
    mirror: Mirror, empty_cache: Path, tmp_path: Path
) -> None:
    mirror.close()
    with pytest.raises(DatasetError) as raised:
        load_builtin("tiny", "train", root=tmp_path, progress=None)
    message = str(raised.value)
    for name, body in tiny_files().items():
        assert f"{name}: {hashlib.sha256(body).hexdigest()}" in message
    assert f"\n  {tmp_path}\n" in message and str(empty_cache / "tiny") in message
    assert "127.0.0.1:9/unreachable" in message  # every mirror tried is named
    assert cache_files(empty_cache) == []


def test_local_file_of_another_dataset_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    for name, body in tiny_files().items():
        (tmp_path / name).write_bytes(body)
    assert len(load_builtin("tiny", "train", root=tmp_path, allow_download=False)) == 30
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz: not the mnist file "
                       r"train-images-idx3-ubyte.gz: its SHA-256 is [0-9a-f]{64}"):
        load_builtin("mnist", "train", root=tmp_path, allow_download=False)
    assert mirror.requests == []


# --- the main job's data: scripts/main.sh runs `fl-node localnet` without --data-root -------

MAIN_JOB = ["localnet", "--workers", "5", "--validators", "3", "--rounds", "10", "--seed", "0"]


@pytest.fixture
def mnist_mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """MNIST itself served by the local mirror (tiny files pinned in its place)."""
    yield from serving(monkeypatch, "mnist", "MNIST")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[LocalnetOptions]:
    """What `fl-node localnet` would start the network with (nothing is started)."""
    runs: list[LocalnetOptions] = []

    def run_localnet(options: LocalnetOptions) -> int:
        runs.append(options)
        return 0

    monkeypatch.setattr(launcher, "run_localnet", run_localnet)
    return runs


def no_local_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr(files, "SHARED_DATA_ROOT", tmp_path / "fresh-clone" / "no-shared")


@pytest.mark.parametrize("named_by", ["FL_NODE_DATA_ROOT", "../shared/datasets/mnist"])
def test_the_main_job_reads_a_local_copy_as_it_is(
    named_by: str, mnist_mirror: Mirror, started: list[LocalnetOptions], empty_cache: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, body in tiny_files().items():
        (copy / name).write_bytes(body)
    no_local_copy(monkeypatch, tmp_path)
    if named_by == DATA_ROOT_ENV:
        monkeypatch.setenv(DATA_ROOT_ENV, str(copy))
    else:
        monkeypatch.setattr(files, "SHARED_DATA_ROOT", copy)
    assert main([*MAIN_JOB, "--output", str(tmp_path / "out")]) == 0
    assert started[0].data_root == copy.resolve()
    assert mnist_mirror.requests == [] and cache_files(empty_cache) == []


def test_the_main_job_without_a_local_copy_downloads_mnist_once(
    mnist_mirror: Mirror, started: list[LocalnetOptions], empty_cache: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_local_copy(monkeypatch, tmp_path)
    assert main([*MAIN_JOB, "--output", str(tmp_path / "out")]) == 0
    assert cache_files(empty_cache) == sorted(tiny_files())
    assert sorted(set(mnist_mirror.requests)) == sorted(tiny_files())
    # Every node is told that (missing) root and finds the files in the cache after it.
    (options,) = started
    train = load_builtin("mnist", "train", options.data_root, allow_download=False)
    test = load_builtin("mnist", "test", options.data_root, allow_download=False)
    assert (len(train), len(test)) == (30, 10)
    served = len(mnist_mirror.requests)
    assert main([*MAIN_JOB, "--output", str(tmp_path / "again")]) == 0
    assert len(mnist_mirror.requests) == served  # the second run reads the cache


def test_the_localnet_learning_curve_is_measured_on_the_test_split(
    mirror: Mirror, tmp_path: Path
) -> None:
    """results.json's test accuracy comes from the dataset's test split, which neither the
    workers (train split) nor the validators (a held-out slice of it) ever see."""
    for name, body in tiny_files().items():
        (tmp_path / name).write_bytes(body)
    evaluator = TestSetEvaluator(tmp_path, "mnist_2nn", dataset="tiny")
    test = load_builtin("tiny", "test", tmp_path, allow_download=False)
    assert evaluator.labels.tolist() == test.labels.tolist() and len(test) == 10
    assert mirror.requests == []
