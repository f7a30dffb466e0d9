"""State dicts as the attacks see them: parameter name -> numpy array.

Only floating-point entries are attacked; integer buffers (e.g. a batch-norm step count)
are carried over unchanged, since averaging or negating a counter means nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

State = Mapping[str, np.ndarray]
"""A model's parameters by name (numpy arrays; the runtime converts from torch)."""

NewState = dict[str, np.ndarray]
"""A state an attack builds (fresh arrays, never views of its inputs)."""


def is_attacked(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating))


def check_like(base: State, other: State, what: str) -> None:
    """`other` has exactly `base`'s names and shapes; ValueError naming the first mismatch."""
    if set(other) != set(base):
        missing, extra = sorted(set(base) - set(other)), sorted(set(other) - set(base))
        raise ValueError(f"{what} does not match the base: missing {missing}, extra {extra}")
    for name, array in base.items():
        if np.shape(other[name]) != np.shape(array):
            raise ValueError(
                f"{what}: {name} has shape {np.shape(other[name])}, the base {np.shape(array)}"
            )


def delta_of(base: State, update: State) -> dict[str, np.ndarray]:
    """update - base over the attacked entries, in float64 (the attacks' arithmetic)."""
    check_like(base, update, "update")
    return {
        name: np.asarray(update[name], np.float64) - np.asarray(array, np.float64)
        for name, array in base.items()
        if is_attacked(array)
    }


def deltas_of(base: State, updates: Sequence[State]) -> list[dict[str, np.ndarray]]:
    if not updates:
        raise ValueError("need at least one update to estimate from")
    return [delta_of(base, update) for update in updates]


def with_delta(
    base: State, delta: Mapping[str, np.ndarray], carry: State | None = None
) -> NewState:
    """base + delta, each entry in the base's dtype; entries without a delta come from
    `carry` (the honest update they were trained into) or else the base."""
    source = base if carry is None else carry
    return {
        name: (np.asarray(array, np.float64) + delta[name]).astype(array.dtype)
        if name in delta
        else np.array(source[name], copy=True)
        for name, array in base.items()
    }
