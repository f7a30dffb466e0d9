"""A Little Is Enough (Baruch et al. 2019): every colluder submits
mean - z * std of the honest deltas, per coordinate. The shift stays within the spread of
honest updates, so distance- and median-based rules keep it, yet every colluder pushes
the same way. z_max comes from the worker and attacker counts (`spec.alie_z_max`).

`deltas` are what the colluders know: their own honestly trained deltas (non-omniscient)
or every honest worker's (omniscient); the function is the same, only the input differs.
The standard deviation is the population one (ddof = 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from node.attacks._state import NewState, State, deltas_of, with_delta


def alie_delta(
    deltas: Sequence[Mapping[str, np.ndarray]], z: float
) -> dict[str, np.ndarray]:
    if not deltas:
        raise ValueError("ALIE needs at least one honest delta")
    result = {}
    for name in deltas[0]:
        stacked = np.stack([np.asarray(d[name], np.float64) for d in deltas])
        result[name] = stacked.mean(axis=0) - z * stacked.std(axis=0)
    return result


def alie(base: State, honest_updates: Sequence[State], z: float) -> NewState:
    """The malicious model: base + alie_delta of the honest updates' deltas."""
    return with_delta(base, alie_delta(deltas_of(base, honest_updates), z), honest_updates[0])
