"""Shuffled labels (data poisoning): the shard's labels permuted at random, so the images
and labels no longer match while the label distribution stays the same."""

from __future__ import annotations

import numpy as np


def shuffled_labels(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(labels)
