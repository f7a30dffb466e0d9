"""Gaussian attack: the delta is pure noise, base + N(0, sigma^2) in every coordinate.

Nothing is trained, so it also serves the noisy free rider (a tiny sigma makes the
submission differ from the base without doing work).
"""

from __future__ import annotations

import numpy as np

from node.attacks._state import NewState, State, is_attacked, with_delta


def gaussian(base: State, sigma: float, rng: np.random.Generator) -> NewState:
    noise = {
        name: rng.normal(0.0, sigma, size=np.shape(array))
        for name, array in sorted(base.items())  # draw order fixed by name, not dict order
        if is_attacked(array)
    }
    return with_delta(base, noise)
