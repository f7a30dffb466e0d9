"""Label flipping (data poisoning): samples of the source class are relabelled as the
target class before honest training; the rest of the shard is untouched. With `fraction`
below 1 only that share of the source class is flipped (the first ones in shard order, a
shard being a random draw): the flip a validator's per-class harm bound lets through
(`protocol.work.class_harm`)."""

from __future__ import annotations

import math

import numpy as np


def label_flip(labels: np.ndarray, source: int, target: int, fraction: float = 1.0) -> np.ndarray:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    flipped = np.array(labels, copy=True)
    chosen = np.flatnonzero(labels == source)
    flipped[chosen[: math.ceil(fraction * len(chosen))]] = target
    return flipped
