from __future__ import annotations

import re

import pytest
import torch

from protocol.aggregation import AggregationError, StateDict, coordinate_median, fedavg
from protocol.aggregation.conftest import assert_near_honest, make_state
from protocol.aggregation.rule import AggregationRule


@pytest.mark.parametrize(
    ("spec", "name", "f"),
    [
        ("fedavg", "fedavg", 0),
        ("median", "median", 0),
        ("median:1", "median", 1),
        ("trimmed_mean:2", "trimmed_mean", 2),
        ("multi_krum:255", "multi_krum", 255),
    ],
)
def test_parse_and_canonical_spec(spec: str, name: str, f: int) -> None:
    rule = AggregationRule.parse(spec)
    assert (rule.name, rule.f) == (name, f)
    assert AggregationRule.parse(rule.spec) == rule
    assert rule.spec == spec


def test_f_zero_is_written_without_it() -> None:
    assert AggregationRule.parse("median:0").spec == "median"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "is not '<rule>'"),
        ("mean", "unknown aggregation rule 'mean'"),
        ("median:", "is not '<rule>'"),
        ("median:-1", "is not '<rule>'"),
        ("median:01", "is not '<rule>'"),
        ("median:256", "0..255"),
        ("median:1:2", "is not '<rule>'"),
        ("Median", "is not '<rule>'"),
        (" median", "is not '<rule>'"),
        ("fedavg:1", "fedavg tolerates no Byzantine updates"),
        ("m" * 33, "at most 32 characters"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(AggregationError, match=re.escape(says)):
        AggregationRule.parse(spec)


def test_non_string_spec_is_refused() -> None:
    with pytest.raises(AggregationError, match="must be a string"):
        AggregationRule.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "n", "applied"),
    [
        ("fedavg", 1, 0),
        ("median:2", 5, 2),
        ("median:2", 4, 1),
        ("median:2", 1, 0),
        ("trimmed_mean:1", 2, 0),
        ("multi_krum:2", 7, 2),
        ("multi_krum:2", 6, 1),
        ("multi_krum:2", 3, 0),
        ("multi_krum:2", 2, None),  # multi-Krum needs three; FedAvg instead
    ],
)
def test_f_is_lowered_to_what_the_update_count_allows(spec: str, n: int, applied: int | None) -> None:
    rule = AggregationRule.parse(spec)
    assert rule.tolerated(n) == applied
    if applied is not None:
        assert n >= rule.minimum_updates(applied)


def test_a_rule_with_its_full_f_survives_the_outlier(byzantine_states: list[StateDict]) -> None:
    for spec in ("median:1", "trimmed_mean:1", "multi_krum:1"):
        assert_near_honest(AggregationRule.parse(spec)(byzantine_states, [1] * 7))


def test_with_too_few_updates_the_rule_still_aggregates() -> None:
    states = [make_state([1.0, 3.0], bias=0.0), make_state([3.0, 5.0], bias=2.0)]
    krum = AggregationRule.parse("multi_krum:1")(states, [1, 3])
    # the claims weigh at most their lower median (protocol.claims): 1 and 1
    assert torch.equal(krum["layer.weight"], fedavg(states, [1, 1])["layer.weight"])
    median = AggregationRule.parse("median:1")(states, [1, 3])  # f lowered to 0
    assert torch.equal(median["layer.weight"], coordinate_median(states)["layer.weight"])


def test_fedavg_weights_by_samples_and_no_updates_is_an_error() -> None:
    rule = AggregationRule()
    states = [make_state([0.0, 0.0], bias=0.0)] * 2 + [make_state([7.0, 14.0], bias=7.0)]
    assert torch.equal(rule(states, [3, 3, 1])["layer.weight"], torch.tensor([1.0, 2.0]))
    with pytest.raises(AggregationError, match="no updates"):
        rule([], [])
