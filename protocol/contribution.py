"""Leave-one-out contribution (Refiner): how much worse the aggregate is without an update.

contribution_j = L(D; w_-j) - L(D; w), where w aggregates all qualified updates, w_-j
aggregates all but update j, and L is the validation loss. Positive means update j
helped. The loss is an injected callback, so this is pure and testable without a model;
it is called n + 1 times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from protocol.aggregation import StateDict, fedavg
from protocol.errors import ProtocolError
from protocol.fixedpoint import to_fixed

AggregateFn = Callable[[Sequence[StateDict], Sequence[int]], dict[str, torch.Tensor]]
LossFn = Callable[[Mapping[str, torch.Tensor]], float]


def _loss(loss_fn: LossFn, state: StateDict, what: str) -> float:
    value = float(loss_fn(state))
    if not math.isfinite(value):
        raise ProtocolError(f"evaluate_loss returned {value} for {what}; losses must be finite")
    return value


def leave_one_out(
    states: Sequence[StateDict],
    n_samples: Sequence[int],
    loss_fn: LossFn,
    aggregate: AggregateFn = fedavg,
    baseline: StateDict | None = None,
) -> list[float]:
    """L(D; w_-j) - L(D; w) for every update j, in the order given.

    With a single update, "all but j" is no update at all: the round's starting model.
    Pass it as baseline to get L(D; baseline) - L(D; w); without a baseline a lone
    update's contribution is defined as 0.0 (nothing to compare it with).

    For a robust rule, bind its parameters first, e.g.
    ``aggregate=lambda s, n: multi_krum(s, f=1)``; leaving one out must still meet the
    rule's own requirements (e.g. n - 1 > 2f + 2 for multi-Krum).
    """
    if len(states) == 0:
        raise ProtocolError("leave_one_out needs at least one update")
    if len(n_samples) != len(states):
        raise ProtocolError(f"{len(states)} updates but {len(n_samples)} sample counts")
    full_loss = _loss(loss_fn, aggregate(states, n_samples), "the aggregate of all updates")
    if len(states) == 1:
        if baseline is None:
            return [0.0]
        return [_loss(loss_fn, baseline, "the baseline model") - full_loss]
    contributions = []
    for j in range(len(states)):
        rest = [s for i, s in enumerate(states) if i != j]
        rest_counts = [c for i, c in enumerate(n_samples) if i != j]
        without_j = _loss(loss_fn, aggregate(rest, rest_counts), f"the aggregate without update {j}")
        contributions.append(without_j - full_loss)
    return contributions


def quantize(contributions: Sequence[float]) -> list[int]:
    """Contributions in the contract's fixed point (round(value * SCALE), half away from 0)."""
    return [to_fixed(value) for value in contributions]
