"""protocol.work: the WORK policy's verdict. An update is measured by how much a step along
its delta lowers the base's validation loss; one that shows no work (a free rider, with or
without noise) is rejected, so the contract slashes it."""

from __future__ import annotations

import pytest
import torch

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE
from protocol.manifest import MAX_ABS_SCORE, check_manifest
from protocol.work import MIN_IMPROVEMENT, STEP, improvement, stepped, work_verdict

WORKERS = tuple(bytes([0x10 + i]) * 20 for i in range(5))
THRESHOLD = 500_000  # 0.5 in fixed point


def test_stepped_moves_float_tensors_a_step_towards_the_update() -> None:
    base = {"w": torch.zeros(3), "n": torch.tensor(5)}
    update = {"w": torch.tensor([8.0, -8.0, 0.0]), "n": torch.tensor(7)}
    moved = stepped(update, base, 0.25)
    assert torch.equal(moved["w"], torch.tensor([2.0, -2.0, 0.0]))
    assert int(moved["n"]) == 7  # a counter is the update's, not interpolated
    assert torch.equal(stepped(base, base)["w"], base["w"])  # a free rider moves nothing
    assert 0 < STEP < 1
    with pytest.raises(ProtocolError, match="different tensor names"):
        stepped({"v": torch.zeros(3)}, base)


def test_work_accepts_only_updates_that_improve_on_the_base_by_the_bound() -> None:
    base_loss = 0.0400
    # honest; free rider (the base itself); free rider with noise (slightly worse);
    # unusable; exactly at the bound
    losses = [0.0150, 0.0400, 0.0401, None, 0.0400 - MIN_IMPROVEMENT / SCALE]
    gains = [improvement(base_loss, loss) for loss in losses]
    assert gains == [25_000, 0, -100, None, MIN_IMPROVEMENT]
    result = work_verdict(WORKERS, [0.99, 0.99, 0.99, None, 0.99], gains, THRESHOLD, 0.991)
    assert result.accepts == (True, False, False, False, True)
    assert result.scores == (25_000, 0, 0, 0, MIN_IMPROVEMENT)
    assert result.global_accuracy == 991_000
    check_manifest(list(WORKERS), list(result.scores), list(result.accepts), result.global_accuracy)
    # an update that improves but fails the accuracy threshold is rejected too
    assert work_verdict(WORKERS[:1], [0.2], [50_000], THRESHOLD, 0.2).accepts == (False,)


def test_work_scores_are_clamped_and_lengths_checked() -> None:
    huge = work_verdict(WORKERS[:1], [1.0], [10 * MAX_ABS_SCORE], THRESHOLD, 1.0)
    assert huge.scores == (MAX_ABS_SCORE,)
    with pytest.raises(ProtocolError, match="2 accuracies but 1 improvements"):
        work_verdict(WORKERS[:2], [0.9, 0.9], [5_000], THRESHOLD, 0.9)
    with pytest.raises(ProtocolError, match="1 workers but 2 accuracies"):
        work_verdict(WORKERS[:1], [0.9, 0.9], [5_000, 5_000], THRESHOLD, 0.9)
