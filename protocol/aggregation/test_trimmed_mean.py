from __future__ import annotations

import pytest
import torch

from protocol.aggregation import AggregationError, StateDict, get_aggregator, trimmed_mean
from protocol.aggregation.conftest import assert_near_honest, make_state


def test_hand_computed_trim_one_each_side() -> None:
    states = [make_state([v, 10.0 - v], bias=v) for v in (0.0, 1.0, 2.0, 6.0, 50.0)]
    result = trimmed_mean(states, f=1)
    # keeps 1, 2, 6 -> mean 3; second coordinate keeps 9, 8, 4 -> 7
    assert torch.equal(result["layer.weight"], torch.tensor([3.0, 7.0]))
    assert torch.equal(result["layer.bias"], torch.tensor([3.0]))


def test_trim_fraction_rounds_down() -> None:
    states = [make_state([v, v], bias=v) for v in (0.0, 1.0, 2.0, 3.0, 100.0)]
    # floor(0.3 * 5) = 1 trimmed from each side
    assert torch.equal(trimmed_mean(states, trim_fraction=0.3)["layer.bias"], torch.tensor([2.0]))
    # floor(0.1 * 5) = 0: the plain mean
    assert torch.equal(trimmed_mean(states, trim_fraction=0.1)["layer.bias"], torch.tensor([21.2]))


def test_ignores_a_huge_outlier(byzantine_states: list[StateDict]) -> None:
    assert_near_honest(trimmed_mean(byzantine_states, f=1))
    assert_near_honest(get_aggregator("trimmed_mean")(byzantine_states, [1] * 7, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"f": 1, "trim_fraction": 0.1}, "exactly one of"),
        ({"trim_fraction": 0.5}, "in \\[0, 0.5\\)"),
        ({"trim_fraction": -0.1}, "in \\[0, 0.5\\)"),
        ({"f": 2}, "needs n > 2\\*2 = 4 updates, got n=4"),
        ({"f": -1}, "must be an int >= 0"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    states = [make_state([1.0, 1.0], bias=1.0) for _ in range(4)]
    with pytest.raises(AggregationError, match=message):
        trimmed_mean(states, **kwargs)  # type: ignore[arg-type]
