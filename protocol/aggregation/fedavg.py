"""Data-size weighted federated averaging (McMahan et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from protocol.aggregation._common import StateDict, check_states, check_weights, restore_dtype


def fedavg(states: Sequence[StateDict], n_samples: Sequence[int]) -> dict[str, torch.Tensor]:
    """sum_i (n_i / sum_j n_j) * w_i, tensor by tensor (accumulated in float64)."""
    names = check_states(states)
    weights = check_weights(n_samples, len(states)).tolist()
    result = {}
    for name in names:
        # A running sum, not a stack of all updates: memory stays one tensor's worth.
        total = torch.zeros(states[0][name].shape, dtype=torch.float64)
        for weight, state in zip(weights, states, strict=True):
            if weight:
                total.add_(state[name].detach().to(torch.float64), alpha=weight)
        result[name] = restore_dtype(total, states[0][name])
    return result
