"""Label flipping (data poisoning): every sample of the source class is relabelled as the
target class before honest training; the rest of the shard is untouched."""

from __future__ import annotations

import numpy as np


def label_flip(labels: np.ndarray, source: int, target: int) -> np.ndarray:
    flipped = np.array(labels, copy=True)
    flipped[labels == source] = target
    return flipped
