from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
import torch

from protocol.aggregation import StateDict, coordinate_median, fedavg
from protocol.contribution import leave_one_out, quantize
from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE

TARGET = torch.tensor([1.0, 2.0])


def squared_error(state: Mapping[str, torch.Tensor]) -> float:
    """A toy validation loss: squared distance of the model to a known optimum."""
    return float(((state["w"] - TARGET) ** 2).sum())


def states_of(*rows: list[float]) -> list[StateDict]:
    return [{"w": torch.tensor(row)} for row in rows]


def test_hand_computed_fedavg_contributions() -> None:
    states = states_of([1.0, 2.0], [1.0, 2.0], [4.0, 2.0])
    counts = [1, 1, 1]
    # all: w = [2, 2] -> loss 1. without 0 or 1: [2.5, 2] -> 2.25. without 2: [1, 2] -> 0.
    assert leave_one_out(states, counts, squared_error) == pytest.approx([1.25, 1.25, -1.0])


def test_sample_counts_weight_the_aggregates() -> None:
    states = states_of([1.0, 2.0], [3.0, 2.0])
    # all: (3*1 + 1*3) / 4 = 1.5 -> 0.25. without 0: [3, 2] -> 4. without 1: [1, 2] -> 0.
    assert leave_one_out(states, [3, 1], squared_error) == pytest.approx([3.75, -0.25])


def test_a_harmful_outlier_gets_the_most_negative_contribution() -> None:
    states = states_of([1.1, 2.0], [0.9, 2.1], [1.0, 1.9], [40.0, -30.0])
    contributions = leave_one_out(states, [10, 10, 10, 10], squared_error)
    assert min(range(4), key=contributions.__getitem__) == 3
    assert contributions[3] < 0 < min(contributions[:3])


def test_other_aggregators_are_injected() -> None:
    states = states_of([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [50.0, 50.0])
    calls: list[int] = []

    def median(s: Sequence[StateDict], n: Sequence[int]) -> dict[str, torch.Tensor]:
        calls.append(len(s))
        return coordinate_median(s)

    # The median ignores the outlier whether or not it is left out.
    assert leave_one_out(states, [1] * 4, squared_error, aggregate=median) == [0.0] * 4
    assert calls == [4, 3, 3, 3, 3]


def test_a_single_update_compares_with_the_baseline_or_counts_zero() -> None:
    [state] = states_of([2.0, 2.0])
    assert leave_one_out([state], [5], squared_error) == [0.0]
    baseline = {"w": torch.tensor([4.0, 2.0])}
    assert leave_one_out([state], [5], squared_error, baseline=baseline) == [9.0 - 1.0]


def test_quantized_to_the_contract_fixed_point() -> None:
    assert quantize([1.25, -0.25, 1e-7, -0.0000015]) == [
        int(1.25 * SCALE),
        -int(0.25 * SCALE),
        0,
        -2,
    ]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ProtocolError, match="at least one update"):
        leave_one_out([], [], squared_error)
    with pytest.raises(ProtocolError, match="2 updates but 1 sample counts"):
        leave_one_out(states_of([1.0, 1.0], [2.0, 2.0]), [1], squared_error)
    with pytest.raises(ProtocolError, match="without update 0; losses must be finite"):
        leave_one_out(
            states_of([1.0, 1.0], [2.0, 2.0]),
            [1, 1],
            lambda s: float("nan") if float(s["w"][0]) == 2.0 else 0.0,
            aggregate=fedavg,
        )
    with pytest.raises(ValueError, match="non-finite"):
        quantize([float("inf")])
