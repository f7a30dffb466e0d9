"""protocol.claims and the task's aggregation rule: a worker's sample claim weighs at most
the lower median of the claims aggregated with it, so an inflated claim moves the global
model no more than an honest worker with the median's data."""

from __future__ import annotations

import pytest
import torch

from protocol.aggregation import AggregationError, fedavg
from protocol.aggregation.rule import AggregationRule
from protocol.claims import clipped_claims
from protocol.limits import MAX_SAMPLES_PER_WORKER


def test_claims_are_clipped_to_their_lower_median() -> None:
    assert clipped_claims([100, 1_000, 100]) == [100, 100, 100]
    assert clipped_claims([100, 300, 200, 5_000]) == [100, 200, 200, 200]  # lower median 200
    assert clipped_claims([7]) == [7]
    assert clipped_claims([]) == []


def _states() -> list[dict[str, torch.Tensor]]:
    return [{"w": torch.full((4,), float(value))} for value in (1.0, 2.0, 3.0, 10.0)]


def test_an_inflated_claim_moves_the_task_rule_no_more_than_the_true_claim() -> None:
    rule = AggregationRule.parse("fedavg")
    honest = rule(_states(), [600, 600, 600, 600])
    # the last worker (the outlier's update) claims 10x, then the contract's largest count
    for claim in (6_000, MAX_SAMPLES_PER_WORKER):
        inflated = rule(_states(), [600, 600, 600, claim])
        assert torch.equal(inflated["w"], honest["w"])
        # without the clip, textbook FedAvg hands the model to the inflated claim
        assert float(fedavg(_states(), [600, 600, 600, claim])["w"][0]) > float(honest["w"][0])
    # a claim below the median keeps its own (smaller) weight
    smaller = rule(_states(), [600, 600, 600, 60])
    assert float(smaller["w"][0]) < float(honest["w"][0])


def test_bad_claims_are_refused_not_clipped_away() -> None:
    rule = AggregationRule.parse("fedavg")
    with pytest.raises(AggregationError, match="above MAX_SAMPLES_PER_WORKER"):
        rule(_states(), [600, 600, 600, MAX_SAMPLES_PER_WORKER + 1])
    with pytest.raises(AggregationError, match="non-negative int"):
        rule(_states(), [600, 600, 600, -1])
