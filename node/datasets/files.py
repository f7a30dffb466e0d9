"""Reading dataset files: bounded reads (gzip detected by its magic bytes, never the
name), IDX files and the data root the environment names."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from protocol.data import parse_idx
from protocol.errors import DatasetError

GZIP_MAGIC = b"\x1f\x8b"
# Large enough for any MNIST-style file (EMNIST digits' train images are 188 MB); bounds
# what a corrupt or hostile gzip stream can make us allocate.
DEFAULT_MAX_FILE_BYTES = 1 << 30
DATA_ROOT_ENV = "FL_NODE_DATA_ROOT"


def read_bounded(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES, hint: str = "") -> bytes:
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
        raise DatasetError(f"{path}: corrupt gzip stream ({exc}); re-copy the file. {hint}") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if len(data) > max_bytes:
        raise DatasetError(
            f"{path}: more than {max_bytes} bytes uncompressed; not a file this loader "
            "accepts (raise max_bytes if it really is that large)"
        )
    return data


def load_idx(
    path: str | Path,
    expected_sha256: str | None = None,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    hint: str = "",
) -> np.ndarray:
    """Read an IDX file (gzip or plain), optionally checking the SHA-256 of its
    uncompressed bytes (the same whatever compressed them)."""
    path = Path(path)
    data = read_bounded(path, max_bytes, hint)
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise DatasetError(
                f"{path}: SHA-256 of the uncompressed file is {actual}, expected "
                f"{expected_sha256}; the file is corrupt or not the canonical one, re-copy "
                f"it. {hint}"
            )
    return parse_idx(data, source=str(path))


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ../shared/datasets/mnist beside the repository checkout, where a team keeps one copy.
SHARED_DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"


def default_data_root() -> Path:
    """$FL_NODE_DATA_ROOT, else SHARED_DATA_ROOT (present or not: what a root lacks is looked
    for in the cache, and a built-in dataset is downloaded there)."""
    return Path(os.environ.get(DATA_ROOT_ENV, SHARED_DATA_ROOT))


def cache_root() -> Path:
    """Where downloaded datasets go: $XDG_CACHE_HOME/fl-node (default ~/.cache/fl-node)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fl-node"
