from __future__ import annotations

import pytest
import torch

from protocol.aggregation import AggregationError, StateDict, coordinate_median, get_aggregator
from protocol.aggregation.conftest import assert_near_honest, make_state


def test_odd_count_hand_computed() -> None:
    states = [
        make_state([1.0, 9.0], bias=3.0, counter=1),
        make_state([5.0, 2.0], bias=-1.0, counter=7),
        make_state([3.0, 4.0], bias=8.0, counter=4),
    ]
    result = coordinate_median(states)
    assert torch.equal(result["layer.weight"], torch.tensor([3.0, 4.0]))
    assert torch.equal(result["layer.bias"], torch.tensor([3.0]))
    assert int(result["bn.num_batches_tracked"]) == 4


def test_even_count_averages_the_two_middle_values() -> None:
    states = [make_state([v, -v], bias=v) for v in (1.0, 2.0, 6.0, 100.0)]
    result = coordinate_median(states)
    assert torch.equal(result["layer.weight"], torch.tensor([4.0, -4.0]))
    assert torch.equal(result["layer.bias"], torch.tensor([4.0]))


def test_integer_median_of_even_count_is_rounded_back_to_int() -> None:
    states: list[StateDict] = [{"c": torch.tensor([v])} for v in (1, 2, 4, 9)]
    result = coordinate_median(states)
    assert result["c"].dtype == torch.int64 and int(result["c"]) == 3  # (2 + 4) / 2


def test_ignores_a_huge_outlier(byzantine_states: list[StateDict]) -> None:
    assert_near_honest(coordinate_median(byzantine_states))


def test_registry_checks_honest_majority() -> None:
    states = [make_state([1.0, 1.0], bias=1.0) for _ in range(4)]
    with pytest.raises(AggregationError, match="n > 2\\*2"):
        get_aggregator("median")(states, [1] * 4, 2)
    assert torch.equal(get_aggregator("median")(states, [1] * 4, 1)["layer.bias"], torch.ones(1))
