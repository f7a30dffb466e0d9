"""A validator's verdict under the WORK reward policy: an update is paid for the work it
shows, its sample claim (clipped to the round's median claim by the contract) times its
quality, and an update that shows no work is REJECTED, so the contract slashes it.

An update's quality is the cosine of its delta from the round's base with the
coordinate-wise median of the deltas of the round's other agreeing updates (leave-one-out),
quantized to QUANTUM. Honest workers of an IID task descend the same loss from the same
base: their deltas share a direction however good the model is, while the noise of each
one's SGD is its own. An update shows no work, and is rejected with quality 0, when
- its delta is shorter than MIN_NORM_RATIO x the round's median delta norm, or zero (the
  base resubmitted, a token step);
- its delta is longer than MAX_NORM_RATIO x that median (a boosted update: model
  replacement, large noise);
- its delta's cosine with the previous round's global step (public) is above REPLAY_COSINE:
  it resubmits that step instead of training;
- its quality is below `agreement_bound` (noise: a random direction has a cosine of mean 0
  and deviation 1/sqrt(parameters) with anything; a reversed update: negative);
- a STEP of its delta raises the validation loss by more than MAX_LOSS_INCREASE (far beyond
  the honest spread measured below: a second signal for what agrees yet harms).
The agreeing updates (`agreeing`) are those that passed the first three checks, less their
least agreeing member, one at a time, until each agrees with the median of the rest, so a
minority of noise, boosted or reversed updates does not drag the reference. Copies of an
earlier submission are dropped before (`protocol.verdict.near_duplicates`).

Fewer than MIN_PEERS agreeing updates (a round of one, two that disagree, one worker among
free riders) leave nothing to agree with: an update that passed the first three checks is
then scored by its validation gain, the validation loss of the base minus that of the base
moved by STEP of the update's delta, and accepted from MIN_IMPROVEMENT. That measure
separates work from free riders only while a round still improves the model measurably (up
to ~98.6% on MNIST, 1,000 validation samples; at 99.1% honest updates scored -461..1,420 and
the base plus noise of sigma 1e-2 +65), which is why it is the fallback only. With two
updates the norm bounds compare each with their mean: a boosted one of two is not caught.

Determinism: validators must reveal the same numbers. The coordinate-wise median is exact
(a sort, and the mean of two middle float32 values), cosines sum in float64, and qualities
are rounded to QUANTUM (1e-4), far inside the task's score tolerance; the order in which
updates are listed does not change any of them.

Measured (`python -m bench.work_quality`, mnist_cnn, 5 honest workers and one attacker of
6,000 MNIST samples each, one epoch of the node's SGD, 1,000 validation samples; qualities in
fixed point): from a 36% base honest updates score 769,700..799,300 and every attack but ALIE
(843,200) and label flipping (720,300) is rejected; from a 93.9% base (3,000 samples each)
honest 439,100..458,900, ALIE 462,400 and label flipping 367,500 accepted, the rest rejected.
From a 99.1% base this measure fails too: honest updates score -14,900..55,800 (median norm
ratio 0.86..1.46), two of five fall under the bound and are rejected, and a replayer that
adds noise as long as the replayed step (cosine 0.707 with it) scores 82,600, above every
honest one, and is accepted. Near 99% one epoch's delta is mostly SGD noise: honest workers
no longer share a direction the validators can see. So the policy is not the default.

What still passes: ALIE (mean - z x std of honest deltas the attacker trains itself) agrees
with the honest updates by construction and is accepted and paid; so is label flipping of
one class, whose delta is mostly honest work. A worker that trains on part of its data and
claims all of it is paid its claim times a lower quality: it earns more per unit of work
than an honest one. A replayer that adds noise long enough to bring its cosine with the
previous step under REPLAY_COSINE is judged by its agreement with this round, which the
previous step keeps early in a task. A Sybil majority of the round's updates sets the
median. A validator that restarted and has not rebuilt the previous global model does not
see replays (`node.runtime.learning.ModelBook.before`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE, to_fixed
from protocol.verdict import Verdict, clamp_score, cosine, qualifies, round_accuracy

STEP = 0.125
"""The fraction of an update's delta the validators apply to the base to measure its
validation gain."""

MIN_IMPROVEMENT = 1_000
"""Without MIN_PEERS updates that agree: the least validation gain (fixed point: nats x
SCALE) an update must show to be accepted."""

MIN_PEERS = 2
"""Updates that must agree with each other for a round to be judged by agreement."""

MIN_AGREEMENT = 10_000
"""The least quality (cosine with the others' median delta, fixed point) that shows work,
for any model size (see `agreement_bound`)."""

NOISE_DEVIATIONS = 6
"""How many standard deviations of a random direction's cosine (1 / sqrt(parameters)) the
agreement bound sits above 0."""

MAX_NORM_RATIO = 3.0
"""An update whose delta is longer than this times the round's median delta norm is
rejected (a boosted update: model replacement)."""

MIN_NORM_RATIO = 0.1
"""An update whose delta is shorter than this times the round's median delta norm shows no
work."""

REPLAY_COSINE = 0.9
"""A delta whose cosine with the previous round's global step is above this replays it."""

MAX_LOSS_INCREASE = 20_000
"""An update whose STEP of its delta raises the validation loss by more than this (fixed
point) is rejected even when it agrees with the others."""

QUANTUM = 100
"""Qualities are multiples of this (fixed point), so that validators whose float sums
differ in the last bits reveal the same number."""


@dataclass(frozen=True)
class Judgement:
    """What a validator makes of one update under the WORK policy: its quality (the
    manifest's score, fixed point) and why it shows no work (None: it does)."""

    quality: int
    problem: str | None = None

    @property
    def shows_work(self) -> bool:
        return self.problem is None


UNUSABLE = Judgement(0, "could not be used")


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


def quantized(value: float) -> int:
    """`value` in fixed point, rounded to a multiple of QUANTUM."""
    return to_fixed(value / QUANTUM) * QUANTUM


def coordinate_median(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """The coordinate-wise median of flat deltas of one shape; for an even count the mean
    of the two middle values (exact in any order, so every validator gets the same)."""
    if not deltas:
        raise ProtocolError("median of no deltas")
    ordered = torch.stack([d.to(torch.float32) for d in deltas]).sort(dim=0).values
    count = len(deltas)
    if count % 2:
        return ordered[count // 2]
    return (ordered[count // 2 - 1] + ordered[count // 2]) / 2


def agreement_bound(parameters: int) -> int:
    """The least quality that shows work for deltas of `parameters` numbers: a delta of
    noise has a cosine with any fixed direction of mean 0 and deviation 1 / sqrt(parameters)."""
    if parameters < 1:
        raise ProtocolError("agreement of empty deltas")
    return max(MIN_AGREEMENT, quantized(NOISE_DEVIATIONS / math.sqrt(parameters)))


def norm(delta: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(delta.to(torch.float64)))


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def implausible(
    deltas: Mapping[int, torch.Tensor], previous_step: torch.Tensor | None
) -> dict[int, str]:
    """The updates that show no work whatever the others did, with why: a delta that is
    zero or short, boosted, or the previous round's global step replayed."""
    norms = {i: norm(d) for i, d in deltas.items()}
    typical = _median(list(norms.values())) if norms else 0.0
    problems: dict[int, str] = {}
    for i, delta in deltas.items():
        if norms[i] == 0.0 or norms[i] < MIN_NORM_RATIO * typical:
            problems[i] = f"delta norm {norms[i]:.4g} below {MIN_NORM_RATIO} x the median {typical:.4g}"
        elif norms[i] > MAX_NORM_RATIO * typical:
            problems[i] = f"delta norm {norms[i]:.4g} above {MAX_NORM_RATIO} x the median {typical:.4g}"
        elif previous_step is not None and previous_step.shape == delta.shape and (
            cosine(delta, previous_step) > REPLAY_COSINE
        ):
            problems[i] = "replays the previous round's global step"
    return problems


def _qualities(
    deltas: Mapping[int, torch.Tensor], references: Sequence[int], scored: Sequence[int]
) -> dict[int, int]:
    """The cosine of each `scored` delta with the median of the references other than
    itself, quantized."""
    whole = coordinate_median([deltas[j] for j in references]) if references else None
    result = {}
    for i in scored:
        if i not in references:
            result[i] = 0 if whole is None else quantized(cosine(deltas[i], whole))
            continue
        others = [deltas[j] for j in references if j != i]
        result[i] = quantized(cosine(deltas[i], coordinate_median(others))) if others else 0
    return result


def agreeing(deltas: Mapping[int, torch.Tensor], candidates: Sequence[int], bound: int) -> list[int]:
    """The reference set: `candidates` losing their least agreeing member, one at a time,
    until each agrees (to `bound`) with the median of the rest. With few updates that median
    is nearly their mean, which one reversed or noisy update would drag."""
    members = list(candidates)
    while members:
        within = _qualities(deltas, members, members)
        worst = min(members, key=lambda i: (within[i], i))
        if within[worst] >= bound:
            break
        members.remove(worst)
    return members


def judge(
    deltas: Sequence[torch.Tensor | None],
    gains: Sequence[int | None],
    previous_step: torch.Tensor | None = None,
) -> list[Judgement]:
    """Every update's judgement (see the module's docstring). `deltas`: flat deltas from
    the base (None: unusable); `gains`: their validation gains (`improvement`);
    `previous_step`: the previous round's global step, flat, when there was one."""
    if len(gains) != len(deltas):
        raise ProtocolError(f"{len(deltas)} deltas but {len(gains)} validation gains")
    present = {i: d for i, d in enumerate(deltas) if d is not None}
    problems = implausible(present, previous_step)
    bound = agreement_bound(next(iter(present.values())).numel()) if present else SCALE
    references = agreeing(present, [i for i in present if i not in problems], bound)
    by_agreement = len(references) >= MIN_PEERS
    final = _qualities(present, references, list(present)) if by_agreement else {}
    judgements = []
    for i, gain in enumerate(gains):
        if i not in present:
            judgements.append(UNUSABLE)
        elif i in problems:
            judgements.append(Judgement(0, problems[i]))
        elif not by_agreement:
            judgements.append(
                Judgement(gain) if gain is not None and gain >= MIN_IMPROVEMENT
                else Judgement(0, f"validation gain {gain} below {MIN_IMPROVEMENT}")
            )
        elif final[i] < bound:
            judgements.append(Judgement(0, f"agreement {final[i] / SCALE:.4f} below {bound / SCALE}"))
        elif gain is not None and gain < -MAX_LOSS_INCREASE:
            judgements.append(Judgement(0, f"validation loss worse by {-gain} (fixed point)"))
        else:
            judgements.append(Judgement(final[i]))
    return judgements


def working_indices(
    accuracies: Sequence[float | None], judgements: Sequence[Judgement], threshold: int
) -> list[int]:
    """The positions of the updates that show work and qualify on accuracy, in manifest order."""
    if len(judgements) != len(accuracies):
        raise ProtocolError(f"{len(accuracies)} accuracies but {len(judgements)} judgements")
    return [
        index
        for index, (accuracy, judgement) in enumerate(zip(accuracies, judgements, strict=True))
        if judgement.shows_work and qualifies(accuracy, threshold)
    ]


def work_verdict(
    workers: Sequence[bytes],
    accuracies: Sequence[float | None],
    judgements: Sequence[Judgement],
    threshold: int,
    global_accuracy: float,
) -> Verdict:
    """The manifest of a round: updates that show work and qualify are accepted and scored
    by their quality (clamped to what the contract accepts), the others rejected with score
    0. `global_accuracy` is that of the aggregate of the accepted ones."""
    if len(accuracies) != len(workers):
        raise ProtocolError(f"{len(workers)} workers but {len(accuracies)} accuracies")
    accepted = set(working_indices(accuracies, judgements, threshold))
    return Verdict(
        workers=tuple(workers),
        scores=tuple(
            clamp_score(j.quality) if i in accepted else 0 for i, j in enumerate(judgements)
        ),
        accepts=tuple(index in accepted for index in range(len(workers))),
        global_accuracy=round_accuracy(global_accuracy),
    )
