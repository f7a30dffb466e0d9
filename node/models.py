"""Building a task's model from its reference, on this node: built-ins, imported
``package.module:factory`` references and entry points in the group ``fl_node.models``.

A reference is only ever taken from this node's own configuration or from a task this
node chose to follow; what it imports is what this node has installed. Nothing a peer
sends is imported or unpickled.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection
from importlib.metadata import entry_points

from torch import nn

from node.config import DataConfig, TrainingConfig
from node.datasets import describe_source, load_source, source_options
from node.datasets.sources import import_reference
from protocol.data import MNIST_SPEC, Dataset, DatasetSpec
from protocol.errors import ProtocolError
from protocol.models import (
    ENTRY_POINT_GROUP,
    MODELS,
    ArchitectureSpec,
    ModelReference,
    ModelReferenceError,
    build_with,
    check_model_accepts,
    spec_hash_problem,
)
from protocol.training import TrainConfig

__all__ = [
    "architecture_of",
    "build_model",
    "data_problem",
    "model_problem",
    "resolve_factory",
    "train_config",
    "worker_data_problem",
]


def resolve_factory(reference: ModelReference) -> Callable[..., nn.Module]:
    """The factory a parsed reference names; ModelReferenceError saying why not."""
    if reference.builtin:
        return MODELS[reference.target]
    if reference.imported:
        return import_reference(reference.target, "model", ModelReferenceError)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == reference.target]
    if not found:
        raise ModelReferenceError(
            f"model {reference.target!r} is not one this node knows: not built in "
            f"({', '.join(sorted(MODELS))}), not \"package.module:factory\", and no installed "
            f"package has an entry point of that name in the group {ENTRY_POINT_GROUP!r}"
        )
    try:
        factory = found[0].load()
    except Exception as exc:  # an installed plugin failing to import: name it
        raise ModelReferenceError(
            f"model {reference.target!r}: entry point {found[0].value!r} fails to load ({exc})"
        ) from exc
    if not callable(factory):
        raise ModelReferenceError(f"model {reference.target!r}: entry point is not callable")
    return factory


def build_model(reference: str, seed: int | None = None) -> nn.Module:
    """A fresh model from any reference (seeded: identical weights on every node)."""
    parsed = ModelReference.parse(reference)
    return build_with(resolve_factory(parsed), parsed.kwargs, seed, reference)


def train_config(training: TrainingConfig, seed: int) -> TrainConfig:
    """The local training loop's settings for a node's [training] section, with `seed`
    ordering its batches: what a worker trains with, and what benches that train as a worker
    must use."""
    return TrainConfig(
        epochs=training.epochs,
        batch_size=training.batch_size,
        lr=training.lr,
        momentum=training.momentum,
        prox_mu=training.prox_mu,
        seed=seed,
        average_tail=training.average_tail,
    )


def architecture_of(reference: str) -> ArchitectureSpec:
    return ArchitectureSpec.of(build_model(reference))


@functools.lru_cache(maxsize=64)
def _built_hash(reference: str) -> bytes:
    """A reference's spec hash, built once: nodes ask for every open task on every poll."""
    return architecture_of(reference).hash()


def model_problem(
    reference: str, pinned_spec_hash: bytes = bytes(32), trusted: Collection[str] = ()
) -> str | None:
    """Why this node cannot work on a task with this model reference and pinned spec hash
    (all zero: not pinned), or None; checked before any deposit. The text names the fix.

    A task's reference comes from the chain, so a ``package.module:factory`` one is only
    imported when ``trusted`` (this node's own config) names that factory: otherwise any
    requester could make every joining node import and call whatever is installed
    (``os:abort``). Built-ins and entry points the operator installed need no listing."""
    parsed: ModelReference | None = None
    try:
        parsed = ModelReference.parse(reference)
        if parsed.imported and parsed.target not in trusted_targets(trusted):
            return (
                f"model {reference!r} would import and call {parsed.target!r}, which this "
                "node's config does not trust; add it to [node] trusted_models if you "
                "installed that package for this, or pick another task"
            )
        built = _built_hash(reference)
    except ProtocolError as exc:
        # a trusted factory's own error already says which package to install
        fix = "or pick" if parsed is not None and parsed.imported else "upgrade fl-node or pick"
        return f"{exc}; {fix} another task"
    return spec_hash_problem(reference, pinned_spec_hash, built)


def trusted_targets(trusted: Collection[str]) -> set[str]:
    return {ModelReference.parse(reference).target for reference in trusted}


def data_problem(reference: str, data: DatasetSpec | Dataset, source: str) -> str | None:
    """Why these samples (a dataset or its spec) cannot go through the task's model
    (shapes, classes), or None."""
    spec = data if isinstance(data, DatasetSpec) else (data.spec or MNIST_SPEC)
    try:
        check_model_accepts(build_model(reference), spec, reference, source)
    except ProtocolError as exc:
        return str(exc)
    return None


# A node looking for a task asks about every open task on every poll: the answer is kept
# (a failure only for a while, so files copied in or a network back are noticed).
_DATA_CHECKS: dict[tuple[DataConfig, str], tuple[float, str | None]] = {}
_DATA_CHECKS_LOCK = threading.Lock()
RETRY_DATA_CHECK_S = 60.0


def worker_data_problem(config: DataConfig, reference: str) -> str | None:
    """Why this worker's [data] source cannot train the task's model (unreadable,
    unreachable, wrong shape or classes), or None: checked before the deposit."""
    key = (config, reference)
    with _DATA_CHECKS_LOCK:
        known = _DATA_CHECKS.get(key)
    if known is not None and (known[1] is None or time.monotonic() < known[0] + RETRY_DATA_CHECK_S):
        return known[1]
    try:
        data = load_source(config.source, "train", source_options(config))
    except ProtocolError as exc:
        problem: str | None = _one_line(str(exc))
    else:
        assert data.spec is not None  # every source attaches its spec
        problem = data_problem(reference, data.spec, describe_source(config.source))
        if problem is not None:
            problem = (
                f"{_one_line(problem)}; point [data] source at samples this model takes, "
                "or pick another task"
            )
    with _DATA_CHECKS_LOCK:
        _DATA_CHECKS[key] = (time.monotonic(), problem)
    return problem


def _one_line(text: str) -> str:
    """A multi-line error (a list of files and folders) as the one line a node's stop
    reason or skip notice is."""
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    line = parts[0] if parts else ""
    for part in parts[1:]:
        line += (" " if line.endswith(":") else "; ") + part
    return line
