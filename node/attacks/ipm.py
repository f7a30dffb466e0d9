"""Inner product manipulation (Xie et al. 2020): submit -epsilon times the mean of the
honest deltas. With a small epsilon the update is short and close to the honest ones, yet
its inner product with the true mean is negative, so the aggregate drifts backwards when
the rule lets it dominate.

As with ALIE, `deltas` are the colluders' own honest deltas or every honest worker's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from node.attacks._state import NewState, State, deltas_of, with_delta


def ipm_delta(
    deltas: Sequence[Mapping[str, np.ndarray]], epsilon: float
) -> dict[str, np.ndarray]:
    if not deltas:
        raise ValueError("IPM needs at least one honest delta")
    return {
        name: -epsilon * np.mean([np.asarray(d[name], np.float64) for d in deltas], axis=0)
        for name in deltas[0]
    }


def ipm(base: State, honest_updates: Sequence[State], epsilon: float) -> NewState:
    return with_delta(base, ipm_delta(deltas_of(base, honest_updates), epsilon), honest_updates[0])
