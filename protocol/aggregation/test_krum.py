from __future__ import annotations

import pytest
import torch

from protocol.aggregation import (
    AggregationError,
    StateDict,
    get_aggregator,
    krum_scores,
    multi_krum,
    multi_krum_select,
)
from protocol.aggregation.conftest import assert_near_honest


def points(*values: float) -> list[StateDict]:
    return [{"x": torch.tensor([v])} for v in values]


def test_scores_use_only_the_n_minus_f_minus_2_nearest_neighbours() -> None:
    # n = 5, f = 1 -> each score sums the 2 nearest squared distances.
    states = points(0.0, 1.0, 3.0, 4.0, 10.0)
    # 0: d^2 to 1,3 = 1 + 9 = 10; 1: to 0,3 = 1 + 4 = 5; 3: to 4,1 = 1 + 4 = 5;
    # 4: to 3,1 = 1 + 9 = 10; 10: to 4,3 = 36 + 49 = 85
    assert krum_scores(states, f=1) == [10.0, 5.0, 5.0, 10.0, 85.0]
    # Summing over all others instead would give 0 the score 1 + 9 + 16 + 100 = 126.


def test_krum_m1_picks_the_lowest_score_lowest_index_on_ties() -> None:
    states = points(0.0, 1.0, 3.0, 4.0, 10.0)
    assert multi_krum_select(states, f=1, m=1) == [1]
    assert torch.equal(multi_krum(states, f=1, m=1)["x"], torch.tensor([1.0]))


def test_multi_krum_averages_the_m_best() -> None:
    states = points(0.0, 1.0, 3.0, 4.0, 10.0)
    assert multi_krum_select(states, f=1, m=3) == [0, 1, 2]
    assert torch.allclose(multi_krum(states, f=1, m=3)["x"], torch.tensor([4.0 / 3]))
    # default m = n - f = 4 drops only the outlier
    assert multi_krum_select(states, f=1) == [0, 1, 2, 3]
    assert torch.equal(multi_krum(states, f=1)["x"], torch.tensor([2.0]))


def test_distances_span_every_tensor() -> None:
    states: list[StateDict] = [
        {"a": torch.tensor([0.0]), "b": torch.tensor([0.0, 0.0])},
        {"a": torch.tensor([1.0]), "b": torch.tensor([0.0, 2.0])},
        {"a": torch.tensor([0.0]), "b": torch.tensor([3.0, 0.0])},
        {"a": torch.tensor([0.0]), "b": torch.tensor([0.0, 0.0])},
        {"a": torch.tensor([2.0]), "b": torch.tensor([0.0, 0.0])},
    ]
    # f = 1 -> 2 neighbours. Update 0: squared distances 5, 9, 0, 4 -> 0 + 4 = 4.
    assert krum_scores(states, f=1)[0] == 4.0


def test_ignores_a_huge_outlier(byzantine_states: list[StateDict]) -> None:
    assert 3 not in multi_krum_select(byzantine_states, f=1)
    assert_near_honest(multi_krum(byzantine_states, f=1))
    assert_near_honest(get_aggregator("multi_krum")(byzantine_states, [1] * 7, 2))


def test_requires_n_greater_than_2f_plus_2() -> None:
    with pytest.raises(AggregationError, match="n > 2\\*1 \\+ 2 = 4 updates, got n=4"):
        krum_scores(points(0.0, 1.0, 2.0, 3.0), f=1)
    assert len(krum_scores(points(0.0, 1.0, 2.0, 3.0, 4.0), f=1)) == 5
    with pytest.raises(AggregationError, match="n > 2\\*0 \\+ 2"):
        multi_krum(points(0.0, 1.0), f=0)


@pytest.mark.parametrize("m", [0, 6, True])
def test_m_out_of_range_is_refused(m: int) -> None:
    with pytest.raises(AggregationError, match="m must be an int in \\[1, n=5\\]"):
        multi_krum(points(0.0, 1.0, 2.0, 3.0, 4.0), f=1, m=m)
