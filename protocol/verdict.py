"""A validator's verdict on one round, as pure rules over what its evaluation measured.

The node measures (opens each update, computes its accuracy, the leave-one-out losses and
the aggregate's accuracy); these functions decide what the manifest says:

- an update qualifies when it could be used at all and its accuracy, in the contract's
  fixed point, reaches the task's qualification threshold; an update that could not be
  fetched or opened never qualifies and scores 0;
- qualified updates are scored by their leave-one-out contribution (`protocol.contribution`),
  quantized and clamped to what the contract accepts (`MAX_ABS_SCORE`): a reveal with a
  score outside it would revert and cost the validator its stake;
- the round's accuracy is the aggregate of the qualified updates (or the base model when
  none qualified), clamped to 0..SCALE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE, to_fixed
from protocol.manifest import MAX_ABS_SCORE


@dataclass(frozen=True)
class Verdict:
    """What a manifest says about a round, in the order of its workers."""

    workers: tuple[bytes, ...]
    scores: tuple[int, ...]
    accepts: tuple[bool, ...]
    global_accuracy: int


def qualifies(accuracy: float | None, threshold: int) -> bool:
    """An update counts when it was usable (`accuracy` not None) and its accuracy in fixed
    point reaches `threshold` (the task's qualification threshold, fixed point)."""
    return accuracy is not None and to_fixed(accuracy) >= threshold


def qualified_indices(accuracies: Sequence[float | None], threshold: int) -> list[int]:
    """The positions of the qualifying updates, in manifest order."""
    return [i for i, accuracy in enumerate(accuracies) if qualifies(accuracy, threshold)]


def clamp_score(score: int) -> int:
    """A score the contract accepts: within ±MAX_ABS_SCORE."""
    return max(-MAX_ABS_SCORE, min(MAX_ABS_SCORE, score))


def round_accuracy(accuracy: float) -> int:
    """The round's accuracy as the manifest carries it: fixed point in 0..SCALE."""
    return min(max(to_fixed(accuracy), 0), SCALE)


def verdict(
    workers: Sequence[bytes],
    accuracies: Sequence[float | None],
    threshold: int,
    contributions: Sequence[float],
    global_accuracy: float,
) -> Verdict:
    """The manifest of a round: `accuracies` per worker (None: unusable), `contributions`
    the leave-one-out values of the qualified updates in their order (see
    `qualified_indices`), `global_accuracy` that of the aggregate of the qualified ones."""
    if len(accuracies) != len(workers):
        raise ProtocolError(f"{len(workers)} workers but {len(accuracies)} accuracies")
    qualified = qualified_indices(accuracies, threshold)
    if len(contributions) != len(qualified):
        raise ProtocolError(
            f"{len(qualified)} qualified updates but {len(contributions)} contributions"
        )
    scores = [0] * len(workers)
    for index, contribution in zip(qualified, contributions, strict=True):
        scores[index] = clamp_score(to_fixed(contribution))
    accepted = set(qualified)
    return Verdict(
        workers=tuple(workers),
        scores=tuple(scores),
        accepts=tuple(i in accepted for i in range(len(workers))),
        global_accuracy=round_accuracy(global_accuracy),
    )
