from __future__ import annotations

import pytest
import torch

from protocol.aggregation import AGGREGATORS, AggregationError, StateDict, fedavg, get_aggregator
from protocol.aggregation.conftest import make_state
from protocol.errors import ModelValidationError


def test_weighted_by_sample_count_hand_computed() -> None:
    a = make_state([0.0, 4.0], bias=1.0, counter=10)
    b = make_state([4.0, 0.0], bias=5.0, counter=20)
    result = fedavg([a, b], [1, 3])
    # weights 1/4 and 3/4
    assert torch.equal(result["layer.weight"], torch.tensor([3.0, 1.0]))
    assert torch.equal(result["layer.bias"], torch.tensor([4.0]))
    assert result["bn.num_batches_tracked"].dtype == torch.int64
    assert int(result["bn.num_batches_tracked"]) == round(10 / 4 + 20 * 3 / 4)


def test_single_update_is_returned_unchanged_as_a_copy() -> None:
    a = make_state([1.5, -2.25], bias=0.5, counter=3)
    result = fedavg([a], [100])
    for name in a:
        assert torch.equal(result[name], a[name])
        assert result[name].data_ptr() != a[name].data_ptr()


def test_keeps_dtype_and_shape() -> None:
    states: list[StateDict] = [
        {"w": torch.ones(2, 3, dtype=torch.float16)},
        {"w": torch.zeros(2, 3, dtype=torch.float16)},
    ]
    result = fedavg(states, [1, 1])
    assert result["w"].dtype == torch.float16 and result["w"].shape == (2, 3)
    assert torch.equal(result["w"], torch.full((2, 3), 0.5, dtype=torch.float16))


def test_large_tensors_match_a_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3000, 700, generator=generator)} for _ in range(5)]
    counts = [1, 2, 3, 4, 5]
    expected = torch.stack([c * s["w"].double() for c, s in zip(counts, states, strict=True)])
    expected = expected.sum(dim=0) / 15
    assert torch.allclose(fedavg(states, counts)["w"].double(), expected, atol=1e-6)


def test_zero_weight_update_does_not_count() -> None:
    a = make_state([1.0, 1.0], bias=1.0)
    b = make_state([9.0, 9.0], bias=9.0)
    assert torch.equal(fedavg([a, b], [5, 0])["layer.weight"], a["layer.weight"])


@pytest.mark.parametrize(
    ("states", "counts", "message"),
    [
        ([], [], "no updates"),
        ([{"w": torch.ones(2)}], [1, 2], "sample counts"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(2)}], [0, 0], "all sample counts are zero"),
        ([{"w": torch.ones(2)}], [-1], "non-negative int"),
        ([{"w": torch.ones(2)}], [True], "non-negative int"),
        ([{"w": torch.ones(2)}, {"v": torch.ones(2)}], [1, 1], "missing"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(3)}], [1, 1], "update 1 tensor 'w'"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.float64)}], [1, 1], "float64"),
        ([{"m": torch.ones(2, dtype=torch.bool)}], [1], "cannot be averaged"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(
    states: list[StateDict], counts: list[int], message: str
) -> None:
    with pytest.raises(AggregationError, match=message):
        fedavg(states, counts)


def test_non_finite_update_is_refused() -> None:
    bad = {"w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(ModelValidationError, match="update 1 tensor 'w'"):
        fedavg([{"w": torch.ones(2)}, bad], [1, 1])


def test_registry_names_every_rule_and_rejects_unknown_names() -> None:
    assert set(AGGREGATORS) == {"fedavg", "median", "trimmed_mean", "multi_krum"}
    a, b = make_state([0.0, 2.0], bias=0.0), make_state([2.0, 0.0], bias=2.0)
    assert torch.equal(get_aggregator("fedavg")([a, b], [1, 1])["layer.bias"], torch.tensor([1.0]))
    with pytest.raises(AggregationError, match="known: fedavg, median, multi_krum, trimmed_mean"):
        get_aggregator("mean")


def test_fedavg_is_fooled_by_an_outlier(byzantine_states: list[StateDict]) -> None:
    # The reason robust rules exist: one huge update drags the average far away.
    result = fedavg(byzantine_states, [1] * len(byzantine_states))
    assert float(result["w"].min()) > 1e5


def test_sample_counts_above_the_protocol_bound_are_refused_by_name() -> None:
    """A sample count of 2**64 - 1 (a worker's on-chain claim) does not convert to a float
    weight (OverflowError deep in tensor code): it is refused naming the bound and its source."""
    from protocol.limits import MAX_SAMPLES_PER_WORKER

    a = make_state([0.0, 4.0], bias=1.0, counter=10)
    b = make_state([4.0, 0.0], bias=5.0, counter=20)
    for huge in (2**64 - 1, MAX_SAMPLES_PER_WORKER + 1):
        with pytest.raises(AggregationError, match="sample count 0 .* above MAX_SAMPLES_PER_WORKER"):
            fedavg([a, b], [huge, 100])
    at_bound = fedavg([a, b], [MAX_SAMPLES_PER_WORKER, MAX_SAMPLES_PER_WORKER])
    assert torch.equal(at_bound["layer.weight"], torch.tensor([2.0, 2.0]))
