"""Dataset I/O for a node: files, the data root, the download cache and `[data] source`.

protocol.data holds the pure parts (IDX parsing, specs, checks, partitions, tensors);
this package reads files, the environment and the network and hands arrays over.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from node.config import HOLDOUT, DataConfig
from node.datasets.builtin import (
    BUILTIN,
    MNIST,
    SPLITS,
    Split,
    available,
    load_builtin,
    missing_files_message,
    search_dirs,
)
from node.datasets.download import DownloadError, download
from node.datasets.files import DATA_ROOT_ENV, cache_root, default_data_root, load_idx, read_bounded
from node.datasets.sources import SourceOptions, describe_source, import_reference, load_source
from protocol.data import Dataset, partition
from protocol.errors import DatasetError

__all__ = [
    "BUILTIN",
    "DATA_ROOT_ENV",
    "HOLDOUT",
    "MNIST_FILES",
    "SPLITS",
    "DownloadError",
    "SourceOptions",
    "Split",
    "cache_root",
    "default_data_root",
    "describe_source",
    "download",
    "import_reference",
    "load_builtin",
    "load_idx",
    "load_mnist",
    "load_source",
    "load_validation_set",
    "load_worker_shard",
    "missing_files_message",
    "mnist_available",
    "mnist_search_dirs",
    "read_bounded",
    "source_options",
]

MNIST_FILES: dict[str, tuple[str, str]] = {
    split: (MNIST.splits[split][0].stem, MNIST.splits[split][1].stem) for split in SPLITS
}


def load_mnist(root: str | Path, split: Split) -> Dataset:
    """MNIST's split from root (gzip or plain files, in root or root/MNIST/raw) or the
    cache, each file checked by SHA-256; never downloads."""
    return load_builtin("mnist", split, Path(root), allow_download=False)


def mnist_available(root: str | Path, split: Split = "test") -> bool:
    return available("mnist", Path(root), split)


def mnist_search_dirs(root: str | Path) -> list[Path]:
    return search_dirs(MNIST, Path(root))


def source_options(config: DataConfig, progress: TextIO | None = sys.stderr) -> SourceOptions:
    return SourceOptions(
        root=config.root if config.root is not None else default_data_root(),
        label_column=config.label_column,
        num_classes=config.num_classes,
        mean=config.mean,
        std=config.std,
        progress=progress,
    )


_HOLDOUT_STREAM = 0x686F6C64  # keeps the held-out draw independent of the partition's


def _training_split(config: DataConfig) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The source's train split (cut to max_samples), the indices workers share and the
    held-out indices no worker trains on (the same on every node: seeded by [data] seed)."""
    full = load_source(config.source, "train", source_options(config))
    if config.max_samples is not None and config.max_samples < len(full):
        full = full.subset(range(config.max_samples))
    if config.holdout_samples >= len(full):
        raise DatasetError(
            f"[data] holdout_samples {config.holdout_samples} leaves nothing to train on: "
            f"{describe_source(config.source)} has {len(full)} training samples"
        )
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _HOLDOUT_STREAM]))
    order = rng.permutation(len(full))
    held = np.sort(order[: config.holdout_samples])
    return full, np.sort(order[config.holdout_samples :]), held


def load_worker_shard(config: DataConfig) -> Dataset:
    """This worker's part of its source's training split (less the held-out slice), as the
    config partitions it."""
    full, shared, _ = _training_split(config)
    parts = partition(
        full.labels[shared], config.partition, config.num_parts, config.seed,
        alpha=config.alpha, shards_per_part=config.shards_per_part,
    )
    return full.subset(shared[parts[config.part_index]])


def load_validation_set(config: DataConfig, samples: int, source: str | None = None) -> Dataset:
    """A requester's validation set: a seeded sample of ``source`` (default: the test split
    of its [data] source; "holdout": the train split's held-out slice)."""
    if source == HOLDOUT:
        full, _, held = _training_split(config)
        if not len(held):
            raise DatasetError('[task] validation = "holdout" needs [data] holdout_samples > 0')
        test, where = full.subset(held), f"the {len(held)} held-out training samples"
    else:
        test = load_source(source or config.source, "test", source_options(config))
        where = f"the {len(test)} samples of {describe_source(source or config.source)}"
    if samples > len(test):
        raise DatasetError(f"validation_samples {samples} exceeds {where}")
    chosen = np.sort(np.random.default_rng(config.seed).permutation(len(test))[:samples])
    return test.subset(chosen)
