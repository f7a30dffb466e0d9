"""Coordinate-wise trimmed mean (Yin et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from protocol.aggregation._common import AggregationError, StateDict, check_byzantine, per_tensor


def trimmed_mean(
    states: Sequence[StateDict], trim_fraction: float | None = None, f: int | None = None
) -> dict[str, torch.Tensor]:
    """Per coordinate, drop the b largest and b smallest values and average the rest.

    Give exactly one of f (b = f) or trim_fraction (b = floor(trim_fraction * n), with
    0 <= trim_fraction < 0.5). Needs n > 2b so something is left to average.
    """
    n = len(states)
    if (trim_fraction is None) == (f is None):
        raise AggregationError("trimmed_mean: give exactly one of trim_fraction or f")
    if f is not None:
        trim = f
    else:
        assert trim_fraction is not None
        if not 0 <= trim_fraction < 0.5:
            raise AggregationError(
                f"trimmed_mean: trim_fraction must be in [0, 0.5), got {trim_fraction}"
            )
        trim = math.floor(trim_fraction * n)
    check_byzantine(trim, n, 2 * trim + 1, "trimmed_mean", f"n > 2*{trim} = {2 * trim}")

    def trimmed(stack: torch.Tensor) -> torch.Tensor:
        ordered = stack.sort(dim=0).values
        return ordered[trim : n - trim].mean(dim=0)

    return per_tensor(states, trimmed)
