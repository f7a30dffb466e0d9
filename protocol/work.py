"""A validator's verdict under the WORK reward policy: an update is paid for the work it
shows, measured as its improvement over the round's base model on the validation set.

- the improvement of an update is the validation loss of the base minus that of the base
  moved by `STEP` of the update's delta, base + STEP * (update - base) (`step_improvement`),
  in fixed point (nats x SCALE);
- an update shows work when it qualifies on accuracy (`protocol.verdict.qualifies`) and its
  improvement reaches `MIN_IMPROVEMENT`; it is then ACCEPTED and scored by its improvement,
  otherwise REJECTED (and so slashed by the contract) with score 0.

Why a step of the delta, not the update itself: in a round the committee aggregates several
updates, each weighing a fraction of the step; a single update's own end point is noisy
(the last SGD steps on a small shard), and once the global model is good it is often worse
than the base on the validation set even though its direction is a descent direction
(`python -m bench.work_quality`, 5 IID workers of 6,000 MNIST samples, one epoch, 1,000
validation samples: from a 98.0% base every honest update itself raised the validation loss,
by 0.018 to 0.093 nats, and lowered the accuracy by up to 2.7 points). Accuracy is useless
for the same reason and because near 99% an improvement is a handful of samples. A short
step along the delta keeps the first-order gain (-STEP * gradient . delta) and shrinks the
noise's second-order cost by STEP^2, so every honest update improves. The measured numbers
for STEP and MIN_IMPROVEMENT are below.

What the bound stops: a free rider submits the base (improvement exactly 0) or the base plus
small noise (a random direction: its first-order gain is as likely negative as positive and
tiny, and its second-order cost is positive), both below the bound: REJECTED and slashed.
The cheapest way past it is to do some work: train on a few samples to get a descent
direction. Such a worker is accepted, and paid in proportion to its (smaller) improvement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from protocol.errors import ProtocolError
from protocol.fixedpoint import to_fixed
from protocol.verdict import Verdict, clamp_score, qualifies, round_accuracy

STEP = 0.125
"""The fraction of an update's delta the validators apply to the base to measure it."""

MIN_IMPROVEMENT = 1_000
"""The least improvement (fixed point: nats x SCALE) an update must show to be accepted."""


def stepped(
    state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], step: float = STEP
) -> dict[str, torch.Tensor]:
    """base + step * (state - base) for every floating-point tensor; the others (counters)
    are the update's."""
    if set(state) != set(base):
        raise ProtocolError("an update and its base have different tensor names")
    return {
        name: torch.lerp(base[name], tensor.to(base[name].dtype), step)
        if tensor.is_floating_point() else tensor.clone()
        for name, tensor in state.items()
    }


def improvement(base_loss: float, stepped_loss: float | None) -> int | None:
    """The base's validation loss minus the stepped update's, fixed point; None for an
    update that could not be used."""
    return None if stepped_loss is None else to_fixed(base_loss - stepped_loss)


def shows_work(accuracy: float | None, gain: int | None, threshold: int) -> bool:
    """An update counts when it qualifies on accuracy and improves by MIN_IMPROVEMENT."""
    return qualifies(accuracy, threshold) and gain is not None and gain >= MIN_IMPROVEMENT


def working_indices(
    accuracies: Sequence[float | None], gains: Sequence[int | None], threshold: int
) -> list[int]:
    """The positions of the updates that show work, in manifest order."""
    if len(gains) != len(accuracies):
        raise ProtocolError(f"{len(accuracies)} accuracies but {len(gains)} improvements")
    return [
        index
        for index, (accuracy, gain) in enumerate(zip(accuracies, gains, strict=True))
        if shows_work(accuracy, gain, threshold)
    ]


def work_verdict(
    workers: Sequence[bytes],
    accuracies: Sequence[float | None],
    gains: Sequence[int | None],
    threshold: int,
    global_accuracy: float,
) -> Verdict:
    """The manifest of a round: updates that show work are accepted and scored by their
    improvement (clamped to what the contract accepts), the others rejected with score 0.
    `global_accuracy` is that of the aggregate of the accepted ones."""
    if len(accuracies) != len(workers):
        raise ProtocolError(f"{len(workers)} workers but {len(accuracies)} accuracies")
    accepted = set(working_indices(accuracies, gains, threshold))
    return Verdict(
        workers=tuple(workers),
        scores=tuple(
            clamp_score(gain) if index in accepted and gain is not None else 0
            for index, gain in enumerate(gains)
        ),
        accepts=tuple(index in accepted for index in range(len(workers))),
        global_accuracy=round_accuracy(global_accuracy),
    )
