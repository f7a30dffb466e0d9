"""`[data] source`: where a node's samples come from.

- a built-in dataset by name (see node.datasets.builtin);
- a folder of IDX files named like MNIST's (``*train*images*``, ``*t10k*labels*``, ...);
- an ``.npz`` file with ``x`` and ``y`` (or ``x_train``/``y_train``/``x_test``/``y_test``);
- a folder of images in class sub-folders (optionally under ``train/`` and ``test/``);
- a CSV file with a header row and a label column (``[data] label_column``);
- ``"package.module:loader"``: a function ``loader(split) -> (x, y)`` returning arrays,
  imported from this node's own configuration only.

Every source yields a Dataset with its spec (sample shape, classes, normalisation) and is
checked against it; errors name the file and the mismatch.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from node.datasets.builtin import BUILTIN, Split, load_builtin
from node.datasets.files import DEFAULT_MAX_FILE_BYTES, load_idx
from protocol.data import Dataset, DatasetSpec, check_dataset, model_input_shape
from protocol.errors import DatasetError, ProtocolError
from protocol.models import is_import_reference

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 4096 * 4096
_SPLIT_WORDS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "t10k")}


@dataclass(frozen=True)
class SourceOptions:
    """How a non-built-in source is read and fed to a model."""

    root: Path | None = None  # where built-in datasets are looked for
    label_column: str = "label"
    num_classes: int | None = None  # default: the largest label + 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    allow_download: bool = True
    progress: TextIO | None = sys.stderr


def describe_source(source: str) -> str:
    if source in BUILTIN:
        return f"built-in dataset {source!r}"
    if is_import_reference(source):
        return f"loader plugin {source!r}"
    return str(source)


def load_source(source: str, split: Split, options: SourceOptions | None = None) -> Dataset:
    """The split of ``source`` (single-set sources return their one set for any split)."""
    options = options or SourceOptions()
    if source in BUILTIN:
        return load_builtin(source, split, options.root, options.allow_download, options.progress)
    if is_import_reference(source):
        x, y = _call_loader(source, split)
        return _finish(np.asarray(x), np.asarray(y), source, options)
    path = Path(source)
    if path.is_dir():
        if any(_idx_files(path)):
            return _load_idx_folder(path, split, options)
        return _load_image_folder(path, split, options)
    if not path.is_file():
        raise DatasetError(
            f"[data] source {source!r}: no such file or folder, and not a built-in dataset "
            f"({', '.join(sorted(BUILTIN))}) or a \"package.module:loader\" reference"
        )
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, split, options)
    if suffix == ".csv":
        return _load_csv(path, options)
    raise DatasetError(
        f"{path}: unknown data file type {suffix!r}; use an .npz (x, y), a .csv with a "
        "label column, a folder of IDX files or a folder of class sub-folders of images"
    )


def _finish(images: np.ndarray, labels: np.ndarray, source: str, options: SourceOptions) -> Dataset:
    if images.ndim < 2 or labels.ndim != 1:
        raise DatasetError(
            f"{source}: x must be [N, ...] and y [N]; got x {images.shape}, y {labels.shape}"
        )
    if labels.dtype.kind not in "ui":
        raise DatasetError(f"{source}: labels have dtype {labels.dtype}; need integers")
    if len(labels) == 0:
        raise DatasetError(f"{source}: no samples")
    if len(images) != len(labels):
        raise DatasetError(f"{source}: {len(images)} samples but {len(labels)} labels")
    classes = options.num_classes or max(int(labels.max()) + 1, 2)
    integer = images.dtype.kind in "ui"
    spec = DatasetSpec(
        name=source,
        sample_shape=model_input_shape(tuple(images.shape[1:])),
        num_classes=classes,
        mean=options.mean or (0.0,),
        std=options.std or (1.0,),
        scale=1.0 / 255.0 if integer and images.dtype.itemsize == 1 else 1.0,
    )
    dataset = Dataset(images, labels, spec)
    check_dataset(dataset, spec, source)
    return dataset


# --- plugins ------------------------------------------------------------------------------


def import_reference(
    reference: str, what: str, error: type[ProtocolError] = DatasetError
) -> Callable[..., Any]:
    """The callable ``package.module:name`` names; the caller has it from its own config."""
    if not is_import_reference(reference):
        raise error(f"{what} {reference!r} is not of the form \"package.module:name\"")
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(
            f"{what} {reference!r}: cannot import {module_name!r} ({exc}); install the "
            "package that defines it, or put it on PYTHONPATH"
        ) from exc
    target = getattr(module, attribute, None)
    if not callable(target):
        raise error(f"{what} {reference!r}: {module_name} has no callable {attribute!r}")
    return target


def _call_loader(reference: str, split: Split) -> tuple[Any, Any]:
    loader = import_reference(reference, "data loader")
    result = loader(split)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise DatasetError(
            f"data loader {reference!r} returned {type(result).__name__}; it must return "
            "a tuple (x, y) of arrays"
        )
    return result


# --- IDX folders ---------------------------------------------------------------------------


def _idx_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and "idx" in p.name.lower())


def _pick(files: list[Path], split: Split, kind: tuple[str, ...], folder: Path) -> Path:
    matches = [
        p for p in files
        if any(w in p.name.lower() for w in _SPLIT_WORDS[split])
        and any(k in p.name.lower() for k in kind)
    ]
    if len(matches) != 1:
        names = ", ".join(p.name for p in files) or "none"
        raise DatasetError(
            f"{folder}: expected one {split} {kind[0]} IDX file (a name with "
            f"{'/'.join(_SPLIT_WORDS[split])} and {'/'.join(kind)}), found "
            f"{len(matches)}; IDX files there: {names}"
        )
    return matches[0]


def _load_idx_folder(folder: Path, split: Split, options: SourceOptions) -> Dataset:
    files = _idx_files(folder)
    images_path = _pick(files, split, ("images", "idx3"), folder)
    labels_path = _pick(files, split, ("labels", "idx1"), folder)
    images, labels = load_idx(images_path), load_idx(labels_path)
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path.name} has {len(images)} samples but {labels_path.name} has "
            f"{len(labels)} labels; they must come from the same split"
        )
    return _finish(images, labels, str(images_path), options)


# --- npz and CSV ---------------------------------------------------------------------------


def _check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > DEFAULT_MAX_FILE_BYTES:
        raise DatasetError(f"{path}: {size} bytes, over the {DEFAULT_MAX_FILE_BYTES}-byte bound")


def _load_npz(path: Path, split: Split, options: SourceOptions) -> Dataset:
    _check_size(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if {"x", "y"} <= keys:
                x, y = archive["x"], archive["y"]
            elif {f"x_{split}", f"y_{split}"} <= keys:
                x, y = archive[f"x_{split}"], archive[f"y_{split}"]
            else:
                raise DatasetError(
                    f"{path}: needs arrays x and y (or x_{split} and y_{split}); it has "
                    f"{sorted(keys)}"
                )
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:  # not a zip, or object arrays (pickle refused)
        raise DatasetError(f"{path}: not a readable .npz of numeric arrays ({exc})") from exc
    return _finish(x, y, str(path), options)


def _load_csv(path: Path, options: SourceOptions) -> Dataset:
    _check_size(path)
    column = options.label_column
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty CSV file")
            if column not in header:
                raise DatasetError(
                    f"{path}: no label column {column!r} in the header {header}; set "
                    "[data] label_column"
                )
            label_at = header.index(column)
            rows, labels = [], []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DatasetError(
                        f"{path}:{line}: {len(row)} fields, the header has {len(header)}"
                    )
                try:
                    labels.append(int(row[label_at]))
                    rows.append([float(v) for i, v in enumerate(row) if i != label_at])
                except ValueError as exc:
                    raise DatasetError(f"{path}:{line}: not a number ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    x = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(header) - 1)
    return _finish(x, np.asarray(labels, dtype=np.int64), str(path), options)


# --- image folders -------------------------------------------------------------------------


def _load_image_folder(folder: Path, split: Split, options: SourceOptions) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    base = folder / split if (folder / "train").is_dir() and (folder / "test").is_dir() else folder
    classes = sorted(p for p in base.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(
            f"{base}: no class sub-folders (and no IDX files); an image folder holds one "
            "sub-folder of images per class"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, str, tuple[int, int]] | None = None
    for label, class_dir in enumerate(classes):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as image:
                    if image.width * image.height > MAX_IMAGE_PIXELS:
                        raise DatasetError(f"{path}: {image.size} is over the pixel bound")
                    if first is None:
                        mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                        first = (path, mode, image.size)
                    if image.size != first[2]:
                        raise DatasetError(
                            f"{path}: size {image.size}, but {first[0]} is {first[2]}; every "
                            "image of a dataset must have the same size"
                        )
                    pixels = np.asarray(image.convert(first[1]), dtype=np.uint8)
            except (OSError, UnidentifiedImageError) as exc:
                raise DatasetError(f"{path}: not a readable image ({exc})") from exc
            images.append(pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DatasetError(f"{base}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    if options.num_classes is None:
        options = dataclasses.replace(options, num_classes=max(len(classes), 2))
    return _finish(np.stack(images), np.asarray(labels, dtype=np.int64), str(base), options)
