from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import MNIST_ROOT as DATA_ROOT  # noqa: F401 - this package's tests use both
from tests.conftest import needs_mnist  # noqa: F401


@pytest.fixture
def base() -> dict[str, np.ndarray]:
    """A small model state: two float tensors and an integer buffer."""
    rng = np.random.default_rng(11)
    return {
        "w": rng.normal(size=(4, 3)).astype(np.float32),
        "b": rng.normal(size=(3,)).astype(np.float32),
        "steps": np.array(5, dtype=np.int64),
    }


def trained(base: dict[str, np.ndarray], seed: int, spread: float = 0.1) -> dict[str, np.ndarray]:
    """An update that moved away from `base` (as training would), its int buffer advanced."""
    rng = np.random.default_rng(seed)
    return {
        "w": (base["w"] + rng.normal(0.2, spread, size=base["w"].shape)).astype(np.float32),
        "b": (base["b"] + rng.normal(-0.1, spread, size=base["b"].shape)).astype(np.float32),
        "steps": base["steps"] + 3,
    }
