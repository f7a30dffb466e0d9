"""Krum and multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries")."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from protocol.aggregation._common import (
    AggregationError,
    StateDict,
    check_byzantine,
    check_states,
    chunks,
    per_tensor,
)


def squared_distances(states: Sequence[StateDict], names: list[str]) -> torch.Tensor:
    """[n, n] squared Euclidean distances between the updates over all their tensors."""
    n = len(states)
    total = torch.zeros(n, n, dtype=torch.float64)
    for name in names:
        for _, stack in chunks(states, name):
            # Exact differences, not |a|^2 + |b|^2 - 2ab, which cancels badly for close updates.
            total += torch.cdist(stack, stack, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    return total


def krum_scores(states: Sequence[StateDict], f: int) -> list[float]:
    """score_i = sum of squared distances from update i to its n - f - 2 nearest others.

    Needs n > 2f + 2 (Blanchard et al.'s condition: n - f - 2 > f neighbours).
    """
    names = check_states(states)
    n = len(states)
    check_byzantine(f, n, 2 * f + 3, "multi_krum", f"n > 2*{f} + 2 = {2 * f + 2}")
    distances = squared_distances(states, names)
    distances.fill_diagonal_(float("inf"))  # a point is not its own neighbour
    neighbours = n - f - 2
    nearest = distances.topk(neighbours, dim=1, largest=False).values
    return [float(score) for score in nearest.sum(dim=1)]


def multi_krum_select(states: Sequence[StateDict], f: int, m: int | None = None) -> list[int]:
    """Indices of the m updates with the lowest Krum scores (ties: lower index first)."""
    n = len(states)
    if m is None:
        m = n - f
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise AggregationError(f"multi_krum: m must be an int in [1, n={n}], got {m!r}")
    scores = krum_scores(states, f)
    return sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])


def multi_krum(
    states: Sequence[StateDict], f: int, m: int | None = None
) -> dict[str, torch.Tensor]:
    """Average (unweighted) of the m updates Krum scores best; m=1 is plain Krum.

    m defaults to n - f.
    """
    chosen = [states[i] for i in multi_krum_select(states, f, m)]
    return per_tensor(chosen, lambda stack: stack.mean(dim=0))
