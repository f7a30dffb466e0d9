"""Coordinate-wise median (Yin et al. 2018): robust to fewer than half Byzantine updates."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from protocol.aggregation._common import StateDict, per_tensor


def median_of_stack(stack: torch.Tensor) -> torch.Tensor:
    """Median along dim 0; for an even count, the mean of the two middle values."""
    ordered = stack.sort(dim=0).values
    n = ordered.shape[0]
    if n % 2 == 1:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def coordinate_median(states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Each coordinate is the median of that coordinate over the updates (unweighted)."""
    return per_tensor(states, median_of_stack)
