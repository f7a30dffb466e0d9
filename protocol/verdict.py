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
  none qualified), clamped to 0..SCALE;
- a near-duplicate never qualifies (`near_duplicates`): an update whose delta from the
  round's base points the same way as that of an update submitted earlier on chain
  (cosine similarity above `DUPLICATE_COSINE`) is a copy, and only the earlier one counts.

Why cosine of deltas, and why 0.9999: a copy scaled towards the base (base + a*delta) keeps
cosine 1, and a copy with noise n added keeps cosine 1/sqrt(1 + (|n|/|delta|)^2), so the
bound catches any copy whose noise is under 0.014x the copied delta's norm. Noise costs a
copy nothing (on MNIST a copy with noise of 4x the delta's norm still scores within a point
of the original, `python -m bench.near_duplicates`), so no bound stops a copycat that adds
it: the defence against copying is that no worker can read another's update while it could
still submit it (protocol/__init__.py), and this rule is the backstop for plain and scaled
copies (two identities submitting one training, as colluding ALIE attackers do). A looser
bound would stop no rational copier more, and honest workers do agree closely: IID workers
training from the same base share the data distribution, not the samples, yet their deltas
agree more the fewer parameters and steps they have and the farther the base is from a good
model. On real MNIST (mnist_cnn, 5 workers) the largest honest pairwise cosine was 0.797 with
1,200 samples each, 0.887 with 300 each and 0.726 with 100 each; on a 34-parameter linear
model of four Gaussian blobs (the plugin task of `tests/data`), 0.9964 between two workers
of 150 to 200 samples, where the former bound of 0.97 took the second honest worker for a
copy and slashed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

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


DUPLICATE_COSINE = 0.9999
"""Deltas from the base with a cosine similarity above this are one update copied."""


def flat_delta(state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """An update's change from the base, its floating-point tensors flattened in name order
    (float32, as the tensors are; `cosine` sums in float64)."""
    if set(state) != set(base):
        raise ProtocolError("an update and its base have different tensor names")
    parts = [
        (state[name].detach().to(torch.float32) - base[name].detach().to(torch.float32)).flatten()
        for name in sorted(base)
        if base[name].is_floating_point()
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine similarity of two flat deltas; 0 when either is all zeros (a free
    rider's: nothing to copy, and nothing the rule here should say about it)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    norm = float(torch.linalg.vector_norm(a)) * float(torch.linalg.vector_norm(b))
    if norm == 0.0:
        return 0.0
    return float(torch.dot(a, b)) / norm


def near_duplicates(
    deltas: Sequence[torch.Tensor | None], bound: float = DUPLICATE_COSINE
) -> dict[int, int]:
    """Which updates copy an earlier one: position -> position of the earlier update it
    copies. `deltas` are the updates' flat deltas from the base (`flat_delta`) in on-chain
    submission order (the order of UpdateSubmitted logs, as the manifest lists workers);
    None for an update that could not be used, which copies nothing and is copied by none.

    An update is compared with every earlier one that is not itself a copy, so of a group
    of copies only the first submitted stands."""
    if not -1.0 <= bound <= 1.0:
        raise ProtocolError(f"duplicate cosine bound {bound} is outside -1..1")
    originals: list[int] = []
    copies: dict[int, int] = {}
    for index, delta in enumerate(deltas):
        if delta is None:
            continue
        for earlier in originals:
            other = deltas[earlier]
            assert other is not None
            if other.shape == delta.shape and cosine(delta, other) > bound:
                copies[index] = earlier
                break
        else:
            originals.append(index)
    return copies


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
