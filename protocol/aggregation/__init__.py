"""Aggregation rules over lists of state_dicts, selectable per task by name.

Every rule is a pure function: updates (Mapping[str, Tensor], one architecture) in, a
new state_dict out, computed in float64 and returned in each tensor's own dtype.
Integer tensors (e.g. BatchNorm counters) are aggregated like floats and rounded; bool
and complex tensors are refused. Updates with NaN/inf raise ModelValidationError.

AGGREGATORS gives every rule one signature, ``rule(states, n_samples, f)``, where f is
the number of Byzantine updates the task tolerates (rules that cannot use f ignore it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from protocol.aggregation._common import AggregationError, StateDict, check_byzantine
from protocol.aggregation.fedavg import fedavg
from protocol.aggregation.krum import krum_scores, multi_krum, multi_krum_select
from protocol.aggregation.median import coordinate_median
from protocol.aggregation.trimmed_mean import trimmed_mean

__all__ = [
    "AGGREGATORS",
    "AggregationError",
    "Aggregator",
    "StateDict",
    "coordinate_median",
    "fedavg",
    "get_aggregator",
    "krum_scores",
    "multi_krum",
    "multi_krum_select",
    "trimmed_mean",
]


class Aggregator(Protocol):
    def __call__(
        self, states: Sequence[StateDict], n_samples: Sequence[int], f: int = 0
    ) -> dict[str, torch.Tensor]: ...


def _fedavg(
    states: Sequence[StateDict], n_samples: Sequence[int], f: int = 0
) -> dict[str, torch.Tensor]:
    return fedavg(states, n_samples)


def _median(
    states: Sequence[StateDict], n_samples: Sequence[int], f: int = 0
) -> dict[str, torch.Tensor]:
    # The median is right while honest updates are a majority.
    check_byzantine(f, len(states), 2 * f + 1, "coordinate_median", f"n > 2*{f} = {2 * f}")
    return coordinate_median(states)


def _trimmed_mean(
    states: Sequence[StateDict], n_samples: Sequence[int], f: int = 0
) -> dict[str, torch.Tensor]:
    return trimmed_mean(states, f=f)


def _multi_krum(
    states: Sequence[StateDict], n_samples: Sequence[int], f: int = 0
) -> dict[str, torch.Tensor]:
    return multi_krum(states, f=f)


AGGREGATORS: dict[str, Aggregator] = {
    "fedavg": _fedavg,
    "median": _median,
    "trimmed_mean": _trimmed_mean,
    "multi_krum": _multi_krum,
}


def get_aggregator(name: str) -> Aggregator:
    try:
        return AGGREGATORS[name]
    except KeyError:
        known = ", ".join(sorted(AGGREGATORS))
        raise AggregationError(f"unknown aggregation rule {name!r}; known: {known}") from None
