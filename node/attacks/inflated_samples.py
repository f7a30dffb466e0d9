"""Inflated sample count: train honestly but claim `factor` times the true sample count,
which weighs the update that much more in FedAvg and in any pay proportional to data.
Combined with a boost (`scale` > 1) it is a model replacement that also claims the weight."""

from __future__ import annotations

from node.attacks.spec import MAX_SAMPLE_FACTOR


def inflated_samples(true_samples: int, factor: int) -> int:
    """The sample count the worker claims on chain."""
    if true_samples < 0 or not 1 <= factor <= MAX_SAMPLE_FACTOR:
        raise ValueError(
            f"need true_samples >= 0 and 1 <= factor <= {MAX_SAMPLE_FACTOR}, "
            f"got {true_samples} and {factor}"
        )
    return true_samples * factor
