"""Every `[data] source` kind on small files the tests make, and the errors that name
the file and the mismatch."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from node.config import DataConfig
from node.datasets import SourceOptions, load_source, load_validation_set, load_worker_shard
from node.models import data_problem
from protocol.data import Dataset, DatasetSpec, check_dataset, to_tensors
from protocol.errors import DatasetError
from tests.data.conftest import idx_bytes

QUIET = SourceOptions(progress=None, allow_download=False)


def write_idx_folder(folder: Path, n: int = 12, compress: bool = True) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    arrays = {}
    for split, count in (("train", n), ("t10k", n // 2)):
        images = rng.integers(0, 256, size=(count, 5, 7), dtype=np.uint8)
        labels = rng.integers(0, 3, size=count).astype(np.uint8)
        arrays[split] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{split}-{kind}-ubyte" + (".gz" if compress else "")
            (folder / name).write_bytes(gzip.compress(data) if compress else data)
    return (*arrays["train"], *arrays["t10k"])


def test_idx_folder_any_shape_no_pinning(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = write_idx_folder(tmp_path)
    train = load_source(str(tmp_path), "train", QUIET)
    test = load_source(str(tmp_path), "test", QUIET)
    np.testing.assert_array_equal(train.images, train_x)
    np.testing.assert_array_equal(test.labels, test_y)
    assert train.spec is not None and train.spec.sample_shape == (1, 5, 7)
    assert train.spec.num_classes == max(int(train_y.max()) + 1, 2)
    x, y = to_tensors(train)
    assert x.shape == (12, 1, 5, 7) and float(x.max()) <= 1.0 and y.dtype == torch.int64


def test_idx_folder_errors_name_the_files(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="expected one test labels IDX file .* found 0"):
        load_source(str(tmp_path), "test", QUIET)
    # Labels of another split: the counts differ and both files are named.
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz has 6 samples but "
                       "t10k-labels-idx1-ubyte.gz has 5"):
        load_source(str(tmp_path), "test", QUIET)


def test_npz_flat_and_split_keys(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    y = np.arange(20) % 5
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=x, y=y)
    loaded = load_source(str(flat), "train", QUIET)
    np.testing.assert_array_equal(loaded.images, x)
    assert loaded.spec is not None and loaded.spec.scale == 1.0 and loaded.spec.num_classes == 5
    split = tmp_path / "split.npz"
    np.savez(split, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    assert len(load_source(str(split), "test", QUIET)) == 4
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=x, y=y)
    with pytest.raises(DatasetError, match=r"wrong.npz: needs arrays x and y .* \['features', 'y'\]"):
        load_source(str(wrong), "train", QUIET)


def test_npz_object_arrays_are_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="objects.npz: not a readable .npz"):
        load_source(str(path), "train", QUIET)


def test_npz_float_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "floats.npz"
    np.savez(path, x=np.zeros((3, 2), np.float32), y=np.array([0.0, 1.5, 1.0]))
    with pytest.raises(DatasetError, match="floats.npz: labels have dtype float64"):
        load_source(str(path), "train", QUIET)


def write_image_folder(base: Path, mode: str, size: tuple[int, int], per_class: int = 3) -> None:
    for label, name in enumerate(("cat", "dog")):
        (base / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (label * 100 + i) if mode == "L" else (label * 100, i, 7)
            Image.new(mode, size, colour).save(base / name / f"{i}.png")


def test_image_folder_grey_and_rgb_with_splits(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "grey", "L", (6, 4))
    grey = load_source(str(tmp_path / "grey"), "train", QUIET)
    assert grey.images.shape == (6, 4, 6) and grey.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert grey.images[4, 0, 0] == 101
    write_image_folder(tmp_path / "rgb" / "train", "RGB", (5, 5))
    write_image_folder(tmp_path / "rgb" / "test", "RGB", (5, 5), per_class=1)
    rgb = load_source(str(tmp_path / "rgb"), "train", QUIET)
    assert rgb.images.shape == (6, 3, 5, 5)  # channels first, as the models take them
    assert rgb.images[3, :, 0, 0].tolist() == [100, 0, 7]
    assert len(load_source(str(tmp_path / "rgb"), "test", QUIET)) == 2


def test_image_folder_size_mismatch_names_the_file(tmp_path: Path) -> None:
    write_image_folder(tmp_path, "L", (6, 4))
    Image.new("L", (5, 4)).save(tmp_path / "dog" / "odd.png")
    with pytest.raises(DatasetError, match=r"odd.png: size \(5, 4\), but .*0.png is \(6, 4\)"):
        load_source(str(tmp_path), "train", QUIET)
    (tmp_path / "dog" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="odd.png: not a readable image"):
        load_source(str(tmp_path), "train", QUIET)


def test_csv_with_a_named_label_column(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_text("age,outcome,dose\n61,1,0.5\n47,0,1.25\n\n52,2,0.0\n")
    options = SourceOptions(label_column="outcome", progress=None)
    data = load_source(str(path), "train", options)
    assert data.images.tolist() == [[61.0, 0.5], [47.0, 1.25], [52.0, 0.0]]
    assert data.labels.tolist() == [1, 0, 2]
    with pytest.raises(DatasetError, match=r"patients.csv: no label column 'label' in the header"):
        load_source(str(path), "train", QUIET)
    path.write_text("age,outcome\n61,1\n47,yes\n")
    with pytest.raises(DatasetError, match="patients.csv:3: not a number"):
        load_source(str(path), "train", options)
    path.write_text("age,outcome\n61,1,3\n")
    with pytest.raises(DatasetError, match="patients.csv:2: 3 fields, the header has 2"):
        load_source(str(path), "train", options)


def test_loader_plugin(plugins: Path) -> None:
    data = load_source("fl_test_plugins:load_blobs", "train", QUIET)
    assert data.images.shape == (400, 6) and set(data.labels.tolist()) == {0, 1, 2, 3}
    with pytest.raises(DatasetError, match="returned list; it must return a tuple"):
        load_source("fl_test_plugins:load_wrong", "train", QUIET)
    with pytest.raises(DatasetError, match="cannot import 'no_such_plugin_module'"):
        load_source("no_such_plugin_module:load", "train", QUIET)
    with pytest.raises(DatasetError, match="has no callable 'absent'"):
        load_source("fl_test_plugins:absent", "train", QUIET)


def test_unknown_sources_say_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder, and not a built-in dataset "
                       r"\(cifar10, emnist-digits, fashion-mnist, kmnist, mnist\)"):
        load_source(str(tmp_path / "absent"), "train", QUIET)
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match="unknown data file type '.parquet'"):
        load_source(str(tmp_path / "data.parquet"), "train", QUIET)


def test_dataset_is_checked_against_its_spec() -> None:
    spec = DatasetSpec("cifar-like", (3, 32, 32), 10)
    grey = Dataset(np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DatasetError, match=r"f.bin: samples have shape \(28, 28\) \(fed as "
                       r"\(1, 28, 28\)\) but cifar-like expects \(3, 32, 32\)"):
        check_dataset(grey, spec, "f.bin")
    labels = Dataset(np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 10]))
    with pytest.raises(DatasetError, match=r"f.bin: labels range over \[0, 10\] but cifar-like "
                       "has 10 classes"):
        check_dataset(labels, spec, "f.bin")


def test_data_that_does_not_fit_the_model_is_named(tmp_path: Path) -> None:
    write_image_folder(tmp_path, "RGB", (32, 32))
    data = load_source(str(tmp_path), "train", QUIET)
    assert data.spec is not None
    problem = data_problem("mnist_cnn", data.spec, str(tmp_path))
    assert problem is not None and str(tmp_path) in problem
    assert "samples of shape (3, 32, 32) do not fit model 'mnist_cnn'" in problem
    assert data_problem("cifar_cnn", data.spec, str(tmp_path)) is None
    many = DatasetSpec("tabular", (6,), 7)
    assert "7 classes but model 'tabular_mlp(classes=4, features=6)' outputs only 4" in str(
        data_problem("tabular_mlp(classes=4, features=6)", many, "rows.csv")
    )


def test_worker_shard_partitions_its_source(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(40, dtype=np.float32).reshape(20, 2), y=np.arange(20) % 4)
    parts = [
        load_worker_shard(DataConfig(source=str(path), num_parts=3, part_index=i, seed=1))
        for i in range(3)
    ]
    rows = sorted(int(r[0]) for part in parts for r in part.images)
    assert rows == list(range(0, 40, 2))  # disjoint and covering
    assert all(p.spec is not None and p.spec.sample_shape == (2,) for p in parts)


def test_held_out_slice_is_the_validation_set_and_no_worker_trains_on_it(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(200, dtype=np.float32).reshape(100, 2), y=np.arange(100) % 4,
             x_test=np.zeros((5, 2), np.float32), y_test=np.zeros(5, np.int64))
    common: dict[str, Any] = {"source": str(path), "num_parts": 3, "seed": 4, "holdout_samples": 20}
    trained = {
        int(row[0]) // 2
        for i in range(3)
        for row in load_worker_shard(DataConfig(**common, part_index=i)).images
    }
    validation = load_validation_set(DataConfig(**common), 20, "holdout")
    held = {int(row[0]) // 2 for row in validation.images}
    assert len(held) == 20 and len(trained) == 80 and not held & trained
    assert held | trained == set(range(100))
    # The default validation data is the source's test split, untouched by the above.
    assert len(load_validation_set(DataConfig(**common), 5)) == 5
    with pytest.raises(DatasetError, match="validation_samples 21 exceeds the 20 held-out"):
        load_validation_set(DataConfig(**common), 21, "holdout")
    with pytest.raises(DatasetError, match="holdout_samples 100 leaves nothing to train on"):
        load_worker_shard(DataConfig(**{**common, "holdout_samples": 100}))


def test_a_requesters_own_validation_source(tmp_path: Path) -> None:
    """[task] validation names other data than the requester's [data] source: a file of
    its own, read as that source's test split and normalised as its [data] says."""
    training = tmp_path / "train.npz"
    np.savez(training, x=np.zeros((30, 2), np.float32), y=np.arange(30) % 3)
    own = tmp_path / "held.csv"
    own.write_text("a,b,label\n" + "".join(f"{i},{-i},{i % 3}\n" for i in range(12)))
    config = DataConfig(source=str(training), mean=(1.0,), std=(2.0,))
    validation = load_validation_set(config, 12, str(own))
    assert sorted(int(a) for a, _ in validation.images) == list(range(12))
    assert validation.spec is not None and validation.spec.mean == (1.0,)
    with pytest.raises(DatasetError, match=f"validation_samples 13 exceeds the 12 samples of {own}"):
        load_validation_set(config, 13, str(own))
