"""A task's aggregation rule, named on chain by a short spec string.

The Task contract stores the spec (``Params.aggregator``) without reading it; every node of
the task parses it here, so every node builds the same global model and every validator
scores leave-one-out contributions with the same rule.

Spec grammar: ``<name>`` or ``<name>:<f>``, where name is one of AGGREGATORS and f (0..255)
is how many Byzantine updates the rule is asked to tolerate, e.g. ``fedavg``, ``median:1``,
``trimmed_mean:1``, ``multi_krum:2``. FedAvg tolerates none, so ``fedavg:1`` is refused.

A round can qualify fewer updates than the rule needs for its f (and leave-one-out takes
one more away), so a rule applies the largest f' <= f that its update count allows; with too
few updates even for f' = 0 (multi-Krum needs three) it falls back to FedAvg. That choice
is a pure function of the count, so every node makes the same one.

The sample counts a rule weighs by are the workers' own claims, which nobody can check, so
the rule weighs each as at most the lower median of the claims it combines
(`protocol.claims.clipped_claims`): a worker that inflates its claim moves the model no more
than a worker with the median's data, unless more than half of the combined updates inflate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from protocol.aggregation import AGGREGATORS, AggregationError, StateDict
from protocol.aggregation._common import check_weights
from protocol.claims import clipped_claims

__all__ = ["MAX_SPEC_LENGTH", "AggregationRule"]

MAX_SPEC_LENGTH = 32
_MAX_F = 255
_SPEC = re.compile(r"(?P<name>[a-z_]+)(?::(?P<f>0|[1-9][0-9]{0,2}))?")

# The fewest updates a rule needs to tolerate f Byzantine ones: n >= slope * f + base.
_MINIMUM_UPDATES: dict[str, tuple[int, int]] = {
    "fedavg": (0, 1),
    "median": (2, 1),  # an honest majority
    "trimmed_mean": (2, 1),  # f trimmed from each end, one left
    "multi_krum": (2, 3),  # n > 2f + 2 (Blanchard et al.)
}


@dataclass(frozen=True)
class AggregationRule:
    """One of AGGREGATORS with the number of Byzantine updates it is asked to tolerate."""

    name: str = "fedavg"
    f: int = 0

    def __post_init__(self) -> None:
        if self.name not in AGGREGATORS:
            known = ", ".join(sorted(AGGREGATORS))
            raise AggregationError(f"unknown aggregation rule {self.name!r}; known: {known}")
        if isinstance(self.f, bool) or not isinstance(self.f, int) or not 0 <= self.f <= _MAX_F:
            raise AggregationError(f"{self.name}: f must be an int in 0..{_MAX_F}, got {self.f!r}")
        if self.name == "fedavg" and self.f:
            raise AggregationError(
                "fedavg tolerates no Byzantine updates; write 'fedavg', or pick median, "
                "trimmed_mean or multi_krum with ':f'"
            )

    @classmethod
    def parse(cls, spec: str) -> AggregationRule:
        """The rule a spec names; AggregationError saying what is wrong otherwise."""
        if not isinstance(spec, str) or len(spec) > MAX_SPEC_LENGTH:
            raise AggregationError(
                f"aggregator spec must be a string of at most {MAX_SPEC_LENGTH} characters, "
                f"got {spec!r}"
            )
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise AggregationError(
                f"aggregator spec {spec!r} is not '<rule>' or '<rule>:<f>' "
                f"(rules: {', '.join(sorted(AGGREGATORS))}; e.g. 'median:1')"
            )
        return cls(match["name"], int(match["f"] or 0))

    @property
    def spec(self) -> str:
        """The canonical spec string (what goes on chain)."""
        return self.name if self.f == 0 else f"{self.name}:{self.f}"

    def minimum_updates(self, f: int | None = None) -> int:
        slope, base = _MINIMUM_UPDATES[self.name]
        return slope * (self.f if f is None else f) + base

    def tolerated(self, n: int) -> int | None:
        """The f this rule applies to n updates, or None when it falls back to FedAvg."""
        slope, base = _MINIMUM_UPDATES[self.name]
        if n < base:
            return None
        return self.f if slope == 0 else min(self.f, (n - base) // slope)

    def __call__(self, states: Sequence[StateDict], n_samples: Sequence[int]) -> dict[str, torch.Tensor]:
        f = self.tolerated(len(states))
        if not states:
            raise AggregationError("no updates to aggregate")
        check_weights(n_samples, len(states))  # bad claims are refused, not clipped away
        weights = clipped_claims(n_samples)
        if f is None:
            return AGGREGATORS["fedavg"](states, weights)
        return AGGREGATORS[self.name](states, weights, f)
