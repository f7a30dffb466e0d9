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
(the last SGD steps on its shard), and once the global model is good it is often worse than
the base on the validation set: accuracy is useless for the same reason, and near 99% an
improvement in accuracy is a handful of samples. A short step along the delta keeps the
first-order gain (-STEP * gradient . delta) and shrinks the second-order cost of the noise by
STEP^2.

Measured (`python -m bench.work_quality`, mnist_cnn, 5 IID workers of 6,000 MNIST samples,
one epoch of the node's default SGD, FedAvg, 1,000 validation samples of the test split,
improvements in fixed point, i.e. micro-nats):
- from the initial model (10.9%): each update itself improves by 2.14M-2.15M;
- from a 97.0% base: the updates themselves 25,582-53,542, but from a 98.0% base every
  update itself is worse than the base (-18,012 to -92,994) and loses up to 2.7 accuracy
  points, so the update itself cannot be the measure;
- from a 98.6% base (`--pretrain-epochs 2`), a step of 1/8: 7,571-8,984 (of 5 updates), all
  above MIN_IMPROVEMENT; the base plus noise of sigma 1e-4, 1e-3, 1e-2: -2, -23, -266; one
  epoch on 1% of a shard (60 samples): 21. All three rejected;
- from a 99.1% base, a step of 1/8: -461 to 1,420, so some honest updates are REJECTED,
  and no step fraction helps (1/16: -205 to 780; 1/2: -3,738 to 2,701): with ~9
  misclassified samples among 1,000 the validation loss cannot tell one honest update's
  gain from noise (the base plus noise of sigma 1e-2 scored +65 there). On 10,000
  validation samples (`--validation 10000`, same run from a 98.5% then 99.1% base) a step
  of 1/8 scores 5,950-7,225 at 98.5%, and 58-707 at 99.1%: every honest update improves, but
  below the bound, and the base plus noise of sigma 1e-2 scores 116, above the weakest
  honest update. This is the limit of the measure: it separates honest work from free
  riders while a round still improves the model measurably on the validation set (here up
  to ~98.6%), and not at ~99%, where another measure is needed.
The in-process test (`tests/node/test_inprocess_work.py`, mnist_2nn, 500 samples a worker,
500 validation samples, 3 rounds) accepts and pays both honest workers in every round.

What the bound stops: a free rider submits the base (improvement exactly 0) or the base plus
small noise (a random direction: its first-order gain is as likely negative as positive and
tiny, and its second-order cost is positive), both below the bound: REJECTED and slashed.
What it does not stop: a worker that trains on a few samples gets a descent direction; it
is accepted when that clears the bound, and paid in proportion to its smaller improvement.
Cheaper still, and not caught: a replayer that submits the base plus the previous round's
global step (public, no training) improves on the base like a worker does early in a task
(bench: 21,647 at step 1/8 against 54,333-63,405 for honest workers, 2 workers of 200
samples, round 2), so it is accepted and paid.
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
