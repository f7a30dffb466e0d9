"""Noise worker: submit a model of pure N(0, 1) weights, unrelated to the base."""

from __future__ import annotations

import numpy as np

from node.attacks._state import NewState, State, is_attacked


def random_model(base: State, rng: np.random.Generator) -> NewState:
    drawn = {  # drawn in name order so the result does not depend on the dict's order
        name: rng.standard_normal(np.shape(base[name])).astype(base[name].dtype)
        for name in sorted(base)
        if is_attacked(base[name])
    }
    return {name: drawn[name] if name in drawn else np.array(a, copy=True) for name, a in base.items()}
