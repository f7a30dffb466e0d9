"""Free riders: paid for showing up, not for training.

- `free_rider` resubmits the round's base model;
- `free_rider_noise` submits the base plus tiny Gaussian noise so the submission is not an
  exact copy of the base (the Gaussian attack with a small sigma).
"""

from __future__ import annotations

import numpy as np

from node.attacks._state import NewState, State
from node.attacks.gaussian import gaussian


def free_rider(base: State) -> NewState:
    return {name: np.array(array, copy=True) for name, array in base.items()}


def free_rider_noise(base: State, sigma: float, rng: np.random.Generator) -> NewState:
    return gaussian(base, sigma, rng)
