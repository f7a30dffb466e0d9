"""protocol.verdict: qualification, leave-one-out scores and the round's accuracy, as the
manifest will carry them (and as the contract accepts them)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE
from protocol.manifest import MAX_ABS_SCORE, check_manifest
from protocol.verdict import clamp_score, qualified_indices, qualifies, round_accuracy, verdict

WORKERS = tuple(bytes([0x10 + i]) * 20 for i in range(4))
THRESHOLD = 500_000  # 0.5 in fixed point


def test_qualification_is_the_fixed_point_accuracy_against_the_threshold() -> None:
    assert qualifies(0.5, THRESHOLD)  # exactly at the bar counts
    assert not qualifies(0.4999994, THRESHOLD)  # rounds to 499_999
    assert qualifies(0.4999995, THRESHOLD)  # rounds half away from zero to 500_000
    assert not qualifies(None, 0)  # an update we could not use never qualifies
    assert qualified_indices([0.9, None, 0.2, 0.7], THRESHOLD) == [0, 3]


def test_scores_go_to_the_qualified_in_manifest_order_others_score_zero() -> None:
    result = verdict(WORKERS, [0.9, None, 0.2, 0.7], THRESHOLD, [0.0123, -0.5], 0.91)
    assert result.workers == WORKERS
    assert result.accepts == (True, False, False, True)
    assert result.scores == (12_300, 0, 0, -500_000)
    assert result.global_accuracy == 910_000


def test_scores_and_accuracy_are_clamped_to_what_the_contract_accepts() -> None:
    huge = 1e30  # a loss blown up by a wild update: to_fixed gives 10**36
    result = verdict(WORKERS[:2], [0.9, 0.8], THRESHOLD, [huge, -huge], 1.5)
    assert result.scores == (MAX_ABS_SCORE, -MAX_ABS_SCORE)
    assert result.global_accuracy == SCALE
    assert round_accuracy(-0.1) == 0
    assert clamp_score(MAX_ABS_SCORE + 1) == MAX_ABS_SCORE


def test_mismatched_measurements_are_refused_with_the_counts() -> None:
    with pytest.raises(ProtocolError, match="2 qualified updates but 1 contributions"):
        verdict(WORKERS[:2], [0.9, 0.8], THRESHOLD, [0.1], 0.9)
    with pytest.raises(ProtocolError, match="2 workers but 1 accuracies"):
        verdict(WORKERS[:2], [0.9], THRESHOLD, [0.1], 0.9)


@given(
    accuracies=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=1, max_size=4),
    threshold=st.integers(0, SCALE),
    loss=st.floats(-1e40, 1e40),
    accuracy=st.floats(-2, 2),
)
def test_every_verdict_is_a_manifest_the_contract_accepts(
    accuracies: list[float | None], threshold: int, loss: float, accuracy: float
) -> None:
    workers = WORKERS[: len(accuracies)]
    qualified = qualified_indices(accuracies, threshold)
    result = verdict(workers, accuracies, threshold, [loss] * len(qualified), accuracy)
    check_manifest(list(result.workers), list(result.scores), list(result.accepts), result.global_accuracy)
    assert all(s == 0 for s, a in zip(result.scores, result.accepts, strict=True) if not a)
