"""Built-in datasets from local copies, checked by SHA-256 (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.datasets import SourceOptions, default_data_root, load_source
from node.datasets.builtin import CIFAR_RECORD, _parse_cifar
from protocol.data import FASHION_MNIST_SPEC, MNIST_SPEC, to_tensors
from protocol.errors import DatasetError

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@pytest.mark.skipif(not (FASHION_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_a_local_root() -> None:
    options = SourceOptions(root=FASHION_ROOT, allow_download=False, progress=None)
    test = load_source("fashion-mnist", "test", options)
    assert test.spec is FASHION_MNIST_SPEC and test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    x, _ = to_tensors(test)  # normalised with Fashion-MNIST's statistics, not MNIST's
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02
    # The same files are not MNIST: refused by checksum, naming the file.
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: not the mnist file"):
        load_source("mnist", "test", options)


@pytest.mark.skipif(not (default_data_root() / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="MNIST not found (set FL_NODE_DATA_ROOT)")
def test_mnist_by_name_from_the_default_root() -> None:
    options = SourceOptions(root=default_data_root(), allow_download=False, progress=None)
    test = load_source("mnist", "test", options)
    assert test.spec is MNIST_SPEC and test.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_cifar_binary_records_parse_channels_first() -> None:
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, size=(4, CIFAR_RECORD), dtype=np.uint8)
    records[:, 0] = [3, 0, 9, 1]
    data = _parse_cifar([records[:3].tobytes(), records[3:].tobytes()], "batches")
    assert data.images.shape == (4, 3, 32, 32) and data.labels.tolist() == [3, 0, 9, 1]
    assert data.images[2, 1, 0, 0] == records[2, 1 + 1024]  # green plane follows red
    with pytest.raises(DatasetError, match="not a whole number of 3073-byte CIFAR-10 records"):
        _parse_cifar([records.tobytes()[:-1]], "batches")
