"""Data-size weighted federated averaging (McMahan et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from protocol.aggregation._common import StateDict, check_states, check_weights, per_tensor


def fedavg(states: Sequence[StateDict], n_samples: Sequence[int]) -> dict[str, torch.Tensor]:
    """sum_i (n_i / sum_j n_j) * w_i, tensor by tensor (computed in float64)."""
    check_states(states)
    weights = check_weights(n_samples, len(states))

    def weighted_mean(stack: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(weights, stack, dims=1)

    return per_tensor(states, weighted_mean)
