"""A validator's verdict under the WORK reward policy: an update is paid for the work it
shows, its sample claim (clipped to the round's median claim by the contract) times its
quality, and an update that shows no work is REJECTED, so the contract slashes it.

An update's quality is the sign agreement of its delta from the round's base with the
coordinate-wise median of the deltas of the round's other agreeing updates (leave-one-out):
the coordinates where the delta has the median's sign less those where it has the opposite
sign, over all coordinates (`sign_agreement`), quantized to QUANTUM. Honest workers of an
IID task descend the same loss from the same base, so on most coordinates their steps lean
the same way however good the model is, while the noise of each one's SGD is its own.
Counting signs, not summing products, is what holds near convergence: there one epoch's
delta is mostly SGD noise, heavy-tailed, and a cosine is carried by the few coordinates
where that noise is largest (from 98.9..99.0% bases honest cosines with the median fell to
-0.003 and 0.006, under the bound), while each coordinate casts one vote in a sign count
(honest 0.029..0.14 at 99.0..99.3%, noise within +-0.0011; 1/sqrt(parameters) is 0.0008
for mnist_cnn).
An update shows no work, and is rejected with quality 0, when
- its delta is shorter than MIN_NORM_RATIO x the round's median delta norm, or zero (the
  base resubmitted, a token step);
- its delta is longer than MAX_NORM_RATIO x that median (a boosted update: model
  replacement, large noise);
- its delta's cosine with the previous round's global step (public) is above REPLAY_COSINE:
  it resubmits that step instead of training;
- its quality is below `agreement_bound` (noise: a random delta's sign agreement with
  anything has mean 0 and deviation 1/sqrt(parameters); a reversed update: negative);
- the whole update raises the validation loss by more than MAX_LOSS_INCREASE (agrees, yet
  harms: label flipping from a 76% base on; `whole_gains`);
- its whole update leaves the validation loss more than MAX_LOSS_LAG above the median loss
  of the round's updates that claim no more samples than it (`lagging`: agrees and
  descends, yet trains for something else, as a backdoor with 30% of its images triggered
  does; or claims more samples than it trained on); a lag over DOUBTFUL_LAG and up to
  MAX_LOSS_LAG leaves it UNDECIDED (the longest honest lags reach there);
- it leans one way from the median of the round's other updates (each divided by its
  length along that median first) on more than MAX_LEAN of the coordinates where they
  spread (`leans`: ALIE's shift of every coordinate by z x the honest spread); a lean over
  DOUBTFUL_LEAN and up to MAX_LEAN leaves it UNDECIDED. The references it leans from leave
  the most leaning update out first, so updates shifted one way cannot tilt honest ones;
- it raises the validation loss of one class (the validation samples of one true label) by
  more than `class_loss_bound` over the base: MAX_CLASS_LOSS_INCREASE + CLASS_LOSS_NOISE /
  sqrt(the class's samples), 0.5 nats + 11 / sqrt(n), 2.06 nats for a class of 50 samples,
  1.6 for 100 (`class_harm`; per-class losses from the evaluation's own pass, `measure`).
  A flipped class agrees with the others on every other class's coordinates and, from a
  weak base, barely moves the whole loss; its own class's loss is what it raises.
The agreeing updates (`agreeing`) are those that passed the first three checks, less their
least agreeing member, one at a time, until each agrees with the median of the rest, so a
minority of noise, boosted or reversed updates does not drag the reference. Copies of an
earlier submission are dropped before (`protocol.verdict.near_duplicates`).

Fewer than MIN_PEERS agreeing updates (a round of one, two that disagree, one worker among
free riders) leave nothing to agree with: an update that passed the first three checks is
then scored by its validation gain, the validation loss of the base minus that of the base
moved by STEP of the update's delta, and paid from MIN_IMPROVEMENT. That separates work
from free riders only while a round still improves the model measurably (at 99.1% honest
updates scored -461..1,420 and the base plus noise of sigma 1e-2 +65), which is why it is
the fallback only, and why an update gaining less is rejected only while the lower median
gain of the round's updates is CLEAR_GAIN; otherwise it is UNDECIDED (`_by_gain`): the validator marks it
UNAVAILABLE, so it is neither averaged, paid nor slashed. The same holds for an update below
the agreement bound in a round whose references agree weakly (`weakly_agreeing`) and whose
lower median gain is under CLEAR_GAIN: agreement measures work only while a round descends. Near a fixed
point of FedAvg each worker's delta moves towards its own data's optimum and together they
sum to about zero, so honest updates point against each other; there the agreement rule
rejected, and slashed, honest workers in 37, 41, 80 and 50 (of 168) of 280 rounds with 1,
2, 3 and 7 honest mnist_2nn workers of 500 samples over 14 rounds, 0 with this rule
(`python -m bench.work_rounds --workers N --rounds 14 --free-rider noise`). The price: an
attacker that disagrees in such a round (noise, sign flip, IPM) is undecided too, unpaid and
unslashed rather than rejected (`python -m bench.work_quality --model mnist_2nn --workers
10 --samples 500 --validation 500 --levels 0:1:500`: the 93% base), and a free rider beside
a single worker is never rejected for its gain (the lower median of two is the lower gain). With fewer than
MIN_NORM_PEERS usable updates the norm bounds do not apply (the median of two is their mean:
a noise update of norm 445 beside an honest one of 2.9 made the honest one "short" and
rejected it in an in-process round); a boosted one of two is then left to the gain and harm
checks.

Determinism: validators must reveal the same numbers. The deltas are float32 differences,
the coordinate-wise median is exact (a sort, and the mean of two middle float32 values), a
sign agreement is an exact count, and qualities are rounded to QUANTUM (1e-4); the order in
which updates are listed does not change any of them. A lean is an exact count of coordinates
of deltas each divided by one float64 length (`_along`). The norm, replay and loss checks use
float sums, far from their bounds for what they catch; a class's loss is a float64 sum of
the per-sample losses in sample order, its rise quantized to QUANTUM before it meets the
bound (the closest honest rise stayed 0.46 nats under it, the closest caught flip 0.28 over).

Measured (`python -m bench.work_quality`, mnist_cnn, 5 honest workers and one attacker of
6,000 MNIST samples each, one epoch of the node's SGD, 1,000 validation samples, 9 bases of
two seeds from 36% to 99.3%): every honest worker is paid at every base, qualities
467,700..483,200 at 36%, 239,800..252,500 at 94.9%, 28,700..139,600 at 99.0..99.3%, against
a bound of 10,000. Rejected at every base: free riders (the base; base + noise, tiny or
scaled to the honest norm, white or shaped per tensor like the previous step), sign flip,
IPM, scaled, Gaussian, copies, replays; label flipping from 76% on.

What still passes, and why: a backdoor of 10% of a worker's images, and a flip of half of
one class, lag the round by less than DOUBTFUL_LAG in most rounds (`python -m
bench.loss_lag`); ALIE at half its z_max or less (mean - z x std of deltas the attacker
trains itself) agrees by construction and leans within the bound in most rounds (`python -m
bench.lean`); at z_max it is rejected, paid 0.35..1.6x an honest quality before; label
flipping of one class from a 36% base (mostly honest work; its loss rise is caught from
76%). Near convergence (95% and up) a replay of the previous global step with noise added
to bring its cosine with that step to 0.71..0.85 (under REPLAY_COSINE) is paid 0.2..1.3x
an honest quality, since the previous step still leans the way this round's steps lean
(projecting that step out of the deltas before counting signs stops it, but was measured to
reject honest workers too: agreement -0.106 and -0.051 for one of five at two 99.0% bases);
and a worker that computes one gradient on 100 public samples at the base and submits it
scaled to 0.2x the honest norm is paid 0.44..1.4x an honest quality from 99% up (rejected by
the loss check below, where such a step overshoots): both are cheap work the measure cannot
tell from an epoch on 6,000 samples, as is a worker that trains on part of its data and
claims all of it (1% of a shard passed the norm bound once, at 99.3%, paid 13,700). A Sybil majority of the round's updates sets the median. A validator that
restarted and has not rebuilt the previous global model does not see replays
(`node.runtime.learning.ModelBook.before`).

The per-class bound, measured (`python -m bench.work_quality --model mnist_2nn --workers 10
--samples 500 --validation 500 --seed S --levels 10:1:20,120:1:60,120:1:500,0:1:500,0:3:500
--attacks "label_flip:source=1,target=7;...,fraction=F"`, seeds 0..2: bench.attacks' size,
15 bases from 10% to 95%, 150 honest updates; and mnist_cnn, 5 workers of 6,000 samples, 1,000
validation samples, a 99.2% base): the largest honest rise of one class's loss was 1.13 nats
(a class of 54 samples from a 70% base: 0.71 of its bound of 1.59), no other above 0.53 of
its bound; from 99.2% (mnist_cnn, the smallest classes 85 samples) 0.15 nats, 0.11 of the
bound. Early training moves single classes: from 10..30% bases one class (5, the last
learned) rose by up to 0.59 for most honest workers, and from 70% single classes by 0.85
and 1.13. A flip of the whole of class 1 to 7 raised class 1's loss by 2.26..3.17 nats from
10..30% bases (1.5..2.1x the bound), 6.1..12.6 from 64% on, 13.5 at 99.2%: rejected at every
base. The cheapest way around it is to flip part of the class: 90% of it was caught at every
base (1.79..9.7 nats, 1.2..6.6x); 75% from 64% on (1.76..4.2) but not from 10..30% bases
(0.86..1.46, 0.58..0.99x), where it was paid 0.78..0.87x an honest quality; 60% and half of the
class passed below 90% (half raised class 1 by at most 0.30 nats there), paid 0.83..0.92x and 0.88..0.96x,
while from 92% on the longer deltas of partial flips were mostly rejected by the norm,
agreement or whole-loss checks, and half of it by its class once (1.51 nats at 92%); at
99.2% (mnist_cnn) a quarter flip passed, paid 0.49..0.61x. Such a flipper still trains the
rest of the class correctly, so its update lowers that class's loss less than honest work
rather than raising it: its harm to the global model is the `label_flip_half` cell of
`python -m bench.attacks`.

The harm bound (MAX_LOSS_INCREASE) assumes local training that does not overshoot the base:
with SGD lr 0.05 and momentum 0.9 (the in-process localnet's default), two mnist_2nn workers
of 500 samples each often end their epoch worse than the base they started from, and 7 of 30
rounds rejected an honest worker for a loss rise of 0.23..0.57 nats; at the node's default
lr of 0.02, none of 30 (`python -m bench.work_rounds --trials 10 [--lr 0.05]`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE, to_fixed
from protocol.training import EVALUATION_BATCH
from protocol.verdict import Verdict, clamp_score, cosine, qualifies, round_accuracy

STEP = 0.125
"""The fraction of an update's delta the validators apply to the base to measure its
validation gain when nothing agrees (`judge`'s fallback): a short step's gain is mostly the
first-order descent, which honest work shows where the whole update would overfit."""

MIN_IMPROVEMENT = 1_000
"""Without MIN_PEERS updates that agree: the least validation gain (fixed point: nats x
SCALE) an update must show to be accepted."""

CLEAR_GAIN = 25_000
"""Without MIN_PEERS agreeing updates: an update whose gain is under MIN_IMPROVEMENT is
rejected only when the lower median gain of the round's updates is at least this (fixed
point: 0.025 nats), or its own gain is this much below 0; otherwise nothing in the round shows work
measurably and it is UNDECIDED. References whose lower median gain is this much keep a
weakly agreeing round judged by agreement.
Measured (`python -m bench.work_rounds --workers 2`, mnist_2nn, 500 samples a worker): two
honest workers stop agreeing once their data is fitted (an 85-90% base), where their gains
were -2,700..12,504 and one of them under MIN_IMPROVEMENT in about one round of four (it
was slashed for it); one honest worker alone gained 38,712..103,480 in rounds 1-3 and
14,653..37,187 in rounds 4-5. A median, not the largest gain: one update gaining on data
like the validation set's (a gradient step on 100 public samples gained 66,300 from a 93%
base, `bench.work_quality`'s `grad_step`) would otherwise get honest updates of a converged
round rejected."""

CLEAR_AGREEMENT = 200_000
"""A round whose agreeing updates' median quality is under this (fixed point: 0.2), their
lower median gain under CLEAR_GAIN, agrees too weakly to reject an update for disagreeing: there the
gain decides (`_by_gain`). With three honest mnist_2nn workers of 500 samples from 85-90%
bases two agreed at 0.024..0.116 and the third scored -0.073..0.009, under the bound
(`python -m bench.work_rounds --workers 3 --rounds 14`); with seven, the references'
median was 0.052..0.115 where up to four of the seven fell under it. Honest updates of
rounds that still descend agree at 0.3..0.7 (`python -m bench.work_quality`, 10% to 69%
bases)."""

MIN_PEERS = 2
"""Updates that must agree with each other for a round to be judged by agreement."""

MIN_AGREEMENT = 10_000
"""The least quality (sign agreement with the others' median delta, fixed point) that shows
work, for any model size (see `agreement_bound`)."""

NOISE_DEVIATIONS = 6
"""How many standard deviations of a random delta's sign agreement (1 / sqrt(parameters))
the agreement bound sits above 0."""

MAX_NORM_RATIO = 3.0
"""An update whose delta is longer than this times the round's median delta norm is
rejected (a boosted update: model replacement)."""

MIN_NORM_RATIO = 0.1
"""An update whose delta is shorter than this times the round's median delta norm shows no
work."""

MIN_NORM_PEERS = 3
"""The norm bounds apply from this many usable updates on: with two, neither norm tells which
one is off (the gain fallback and the harm checks judge them)."""

REPLAY_COSINE = 0.9
"""A delta whose cosine with the previous round's global step is above this replays it."""

MAX_LOSS_INCREASE = 500_000
"""An update whose whole delta raises the validation loss by more than this (fixed point:
0.5 nats) is rejected even when it agrees with the others. Honest mnist_cnn updates
raised it by at most 0.064 nats (98.8% base); honest mnist_2nn updates of 500 and 1,000
samples from a good base overshoot: at most 0.359 nats in 2,400 (`bench.work_rounds`,
rounds 1-3), where a bound of 0.2 rejected 12 of them. A label flip of one class raised it by
0.76..2.4 from a 76% base on; from a weaker base `class_harm` catches the flip."""

DOUBTFUL_LAG = 200_000
"""An update whose whole delta leaves the validation loss more than this (fixed point: 0.2
nats) above the median loss of the round's updates that claim no more samples than it does
is UNDECIDED (neither averaged, paid nor slashed), and rejected above MAX_LOSS_LAG
(`lagging`): it agrees with them and lowers the loss, yet trains for something other than
the task (a backdoor's relabelled share, half of a class flipped). Compared only with
updates claiming no more samples, so an honest worker with less data is held to what its
claim promises, and an attacker that claims less to be compared with fewer gets that claim's
weight in the average and its pay.
Measured (`python -m bench.loss_lag`, mnist_2nn, 7 honest workers of 500 samples, one of 125
and 3 attackers, 60 tasks of 8 rounds from 7% to 90% bases): honest updates lagged by at
most 0.144 nats (3,360 updates, 90% under 0.023), the worker of 125 samples claiming 125
never (nothing claims less), claiming 500 by 0.256..0.755 in rounds 1-3 and at most 0.133
later; a backdoor trained with 30% of its images triggered by 0.190..0.872 (287 of 288 over
0.2, 155 of them over 0.4); a full flip of one class 280 of 288 (250 over 0.4). The
cheaper attacks, which move the model less, mostly pass: a backdoor of 10% (15 of 288 over
0.2), a flip of half of one class (26 of 288), colluding ALIE (at most 0.040). The honest tail is long: with 10 honest workers of 500
(`python -m bench.loss_lag --workers 10 --attackers 0 --trials 40 --rounds 6 --seed 1000`)
one update of 2,400 lagged by 0.258, in rounds 4-6 (rounds 1-3: at most 0.160): why a lag
between this and MAX_LOSS_LAG costs a round's pay and weight, not a deposit."""

MAX_LOSS_LAG = 400_000
"""Above DOUBTFUL_LAG: the lag (fixed point: 0.4 nats) over which an update is rejected and
slashed, 1.55x the largest honest lag measured (0.258)."""

DOUBTFUL_LEAN = 200_000
"""An update that leans one way from its references' coordinate-wise median on more than
this share of the coordinates (fixed point: 0.2, `leans`) is UNDECIDED, and rejected above
MAX_LEAN: "A Little Is Enough" (ALIE, Baruch et al. 2019) moves every coordinate of the mean
of honest deltas by z x their spread in one direction, so it lies below the others on most
coordinates where they spread, while an honest update lies above as often as below. Every
delta is first divided by its length along the others' median, so a longer or shorter step
(more epochs, another learning rate, less data) leans no more than its noise does.
Measured (`python -m bench.lean`, mnist_2nn, 7 honest workers of 500 samples beside one of
125, one training 3 epochs, one 5, one at twice and one at half the learning rate, and 3
attackers of one kind, 18 tasks of 8 rounds, 10%-92% bases): 1,723 honest updates of every
setting leaned -0.149..+0.154; lone ALIE at z_max (each attacker estimating the mean and
spread from deltas it trains on parts of its own shard; the `alie` cell of `bench.attacks`)
-0.328..-0.511, 72 of 72 rejected; colluding ALIE at z_max (the three pooling their honest
updates, one of the identical three counted) -0.170..-0.400, 13 of 24 rejected and 10
undecided. The cheaper ways around it pass: at half of z_max lone ALIE is undecided in 52 of
72 and rejected in 4, colluding passes in 23 of 24; at a quarter all pass (-0.045..-0.194).
On Fashion-MNIST (`--source fashion-mnist`, 79% final accuracy): honest -0.129..+0.141 of
1,727, lone ALIE at z_max 72 of 72 rejected, colluding 19 of 24 rejected and 5 undecided."""

MAX_LEAN = 300_000
"""Above DOUBTFUL_LEAN: the lean (fixed point: 0.3) over which an update is rejected and
slashed, 1.9x the largest honest lean measured (0.154)."""

MIN_LEAN_PEERS = 4
"""References needed for an update's lean to be measured: their median and spread are what
it leans from; with fewer, one worker's own noise sets them."""

MAX_CLASS_LOSS_INCREASE = 500_000
"""An update whose delta raises the validation loss of one class (the validation samples of
that true label) by more than this plus CLASS_LOSS_NOISE / sqrt(the class's samples) over
the base is rejected (fixed point: nats), even when it agrees with the others and the whole
validation loss barely moves: what flipping one class's labels does (`class_harm`)."""

CLASS_LOSS_NOISE = 11_000_000
"""The part of the per-class bound that shrinks with the class's validation samples (fixed
point: nats x sqrt(samples)): a class's mean loss over n samples moves by a few hard samples
whose loss jumps, more the fewer samples it has. An honest mnist_2nn update of 500 samples
from a ~78% base raised a class of 54 samples by 1.591 nats (the in-process work test), above
the bound 8 gave (1.589); 11 gives 2.00 there, and a full flip of one class still exceeds it
from a 10% base on (2.26-3.17 nats where 8 gave 1.5-2.1 of its bound)."""

QUANTUM = 100
"""Qualities are multiples of this (fixed point), so that validators whose float sums
differ in the last bits reveal the same number."""


@dataclass(frozen=True)
class Judgement:
    """What a validator makes of one update under the WORK policy: its quality (the
    manifest's score, fixed point) and why it shows no work (None: it does), or that the
    round cannot tell (`undecided`: the validator marks it UNAVAILABLE, so it is neither
    averaged, paid nor slashed)."""

    quality: int
    problem: str | None = None
    undecided: bool = False
    doubt: str | None = None  # why a check left it undecided (None: nothing in the round shows work)

    @property
    def shows_work(self) -> bool:
        return self.problem is None and not self.undecided


UNUSABLE = Judgement(0, "could not be used")
UNDECIDED = Judgement(0, undecided=True)


@dataclass(frozen=True)
class Measured:
    """A model on the validation set, in one pass: its mean loss and accuracy (as
    `protocol.training.evaluate` computes them) and, per class (true label), the mean loss
    of that class's samples and their count."""

    loss: float
    accuracy: float
    class_losses: tuple[float, ...]
    class_counts: tuple[int, ...]


@torch.no_grad()
def measure(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
    batch_size: int = EVALUATION_BATCH,
) -> Measured:
    """`model` on (`images`, `labels`) in batches of `batch_size` (the protocol's, so every
    validator sums the same way); per class the losses are summed in float64, sample order."""
    if len(labels) == 0 or len(images) != len(labels):
        raise ProtocolError(f"cannot measure on {len(images)} images and {len(labels)} labels")
    was_training = model.training
    model.eval()
    try:
        loss_sum, correct = 0.0, 0
        sums: torch.Tensor | None = None
        counts: torch.Tensor | None = None
        for begin in range(0, len(labels), batch_size):
            logits = model(images[begin : begin + batch_size])
            target = labels[begin : begin + batch_size]
            classes = logits.shape[1]
            if int(target.min()) < 0 or int(target.max()) >= classes:
                raise ProtocolError(f"labels outside 0..{classes - 1} for a {classes}-class model")
            if sums is None or counts is None:
                sums = torch.zeros(classes, dtype=torch.float64)
                counts = torch.zeros(classes, dtype=torch.int64)
            loss_sum += float(functional.cross_entropy(logits, target, reduction="sum"))
            each = functional.cross_entropy(logits, target, reduction="none").to(torch.float64)
            sums.index_add_(0, target, each)
            counts.index_add_(0, target, torch.ones_like(target))
            correct += int((logits.argmax(dim=1) == target).sum())
    finally:
        model.train(was_training)
    assert sums is not None and counts is not None
    return Measured(
        loss=loss_sum / len(labels),
        accuracy=correct / len(labels),
        class_losses=tuple(float(s) / int(n) if int(n) else 0.0 for s, n in zip(sums, counts, strict=True)),
        class_counts=tuple(int(n) for n in counts),
    )


def class_loss_bound(samples: int) -> int:
    """The largest rise of one class's validation loss (fixed point, nats) an update may
    cause over the base, for a class of `samples` validation samples."""
    if samples < 1:
        raise ProtocolError("a class loss bound for a class with no samples")
    return MAX_CLASS_LOSS_INCREASE + quantized(CLASS_LOSS_NOISE / SCALE / math.sqrt(samples))


def class_rises(base: Measured, update: Measured) -> dict[int, int]:
    """Per class with validation samples: how much `update` raises its mean loss over
    `base` (fixed point, quantized; negative: lowers it)."""
    if base.class_counts != update.class_counts:
        raise ProtocolError("per-class losses measured on different validation sets")
    return {
        label: quantized(after - before)
        for label, (before, after, count) in enumerate(
            zip(base.class_losses, update.class_losses, base.class_counts, strict=True)
        )
        if count
    }


def class_harm(base: Measured, update: Measured) -> str | None:
    """Why `update` harms one class beyond `class_loss_bound` (the class whose rise exceeds
    its bound the most, by its label), or None."""
    worst: tuple[int, int, int] | None = None  # (excess, rise, label)
    for label, rise in class_rises(base, update).items():
        excess = rise - class_loss_bound(base.class_counts[label])
        if excess > 0 and (worst is None or excess > worst[0]):
            worst = (excess, rise, label)
    if worst is None:
        return None
    excess, rise, label = worst
    count = base.class_counts[label]
    return (
        f"validation loss of class {label} worse by {rise / SCALE:.3f} nats, above its bound "
        f"{class_loss_bound(count) / SCALE:.3f} for {count} samples"
    )


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
    return _middle(ordered, len(deltas), None)


def agreement_bound(parameters: int) -> int:
    """The least quality that shows work for deltas of `parameters` numbers: a delta of
    noise has a sign agreement with any fixed delta of mean 0 and deviation at most
    1 / sqrt(parameters)."""
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
    # the median of two is their mean: a huge one would make an honest one "short"
    typical = _median(list(norms.values())) if len(norms) >= MIN_NORM_PEERS else math.nan
    problems: dict[int, str] = {}
    for i, delta in deltas.items():
        if norms[i] == 0.0:
            problems[i] = "delta norm 0 below any work: the base resubmitted"
        elif norms[i] < MIN_NORM_RATIO * typical:
            problems[i] = f"delta norm {norms[i]:.4g} below {MIN_NORM_RATIO} x the median {typical:.4g}"
        elif norms[i] > MAX_NORM_RATIO * typical:
            problems[i] = f"delta norm {norms[i]:.4g} above {MAX_NORM_RATIO} x the median {typical:.4g}"
        elif previous_step is not None and previous_step.shape == delta.shape and (
            cosine(delta, previous_step) > REPLAY_COSINE
        ):
            problems[i] = "replays the previous round's global step"
    return problems


def lagging(whole_gains: Mapping[int, int], claims: Sequence[int]) -> dict[int, Judgement]:
    """The updates whose validation loss lags the round's by more than DOUBTFUL_LAG: UNDECIDED
    up to MAX_LOSS_LAG, rejected over it, with why. An update's whole gain (`whole_gains`, by
    position) is compared with the median whole gain of the updates claiming no more samples
    than it (`claims`, by position), itself included."""
    judged: dict[int, Judgement] = {}
    for i, gain in whole_gains.items():
        typical = _median([float(g) for j, g in whole_gains.items() if claims[j] <= claims[i]])
        lag = quantized((typical - gain) / SCALE)
        if lag <= DOUBTFUL_LAG:
            continue
        why = (
            f"validation loss {lag / SCALE:.3f} nats above the median of the round's updates "
            f"claiming no more than its {claims[i]} samples"
        )
        judged[i] = _beyond(lag, why, MAX_LOSS_LAG, DOUBTFUL_LAG)
    return judged


def _beyond(amount: int, why: str, bound: int, doubtful: int) -> Judgement:
    """The judgement of an update `amount` (fixed point, over `doubtful`) beyond the round:
    rejected over `bound`, else UNDECIDED, each with `why`."""
    if amount > bound:
        return Judgement(0, f"{why}, over the bound {bound / SCALE}")
    return Judgement(0, undecided=True, doubt=f"{why}, over {doubtful / SCALE}")


def lean(delta: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, spread: torch.Tensor) -> int:
    """How one way `delta` leans from the others' coordinate-wise median, whose lower and
    upper middle values are `lower` and `upper` (equal for an odd count of others): the
    coordinates where the delta is above `upper` less those where it is below `lower`, over
    the coordinates where the deltas `spread` (are not all equal), quantized. 0 on average for
    an update like the others (an even count's middle pair counts neither way, so a skewed
    spread does not tilt it), -1 for one below them everywhere (ALIE's shift). An exact
    count."""
    own = delta[spread]
    if own.numel() == 0:
        return 0
    above = int((own > upper[spread]).sum())
    below = int((own < lower[spread]).sum())
    return quantized((above - below) / own.numel())


def leans(deltas: Mapping[int, torch.Tensor]) -> dict[int, int]:
    """Each update's `lean` from the coordinate-wise median of its references, every delta
    first divided by its length along the references' median (`_along`), so a longer or shorter
    step (more epochs, another learning rate, less data) leans no more than its noise does.
    The references are the updates less their most leaning member, one at a time, until none
    leans over DOUBTFUL_LEAN from the median of the rest: updates shifted one way would
    otherwise shift the median and make the others lean the opposite way (three of ten far
    below leave an honest update above the others' median on up to 5/7 of the coordinates). A
    reference leans from the median of the other references, an update left out from that
    of all of them; none is measured against fewer than MIN_LEAN_PEERS, nor one whose delta
    points against the references' median (the agreement check judges that)."""
    if len(deltas) <= MIN_LEAN_PEERS:
        return {}
    members = list(deltas)
    while True:
        scaled = _along(deltas, members)
        kept = [i for i in members if i in scaled]
        if len(kept) < MIN_LEAN_PEERS:
            return {}
        if kept != members:
            members = kept
            continue
        ordered, within = _leans_among(scaled, members)
        if not within:  # MIN_LEAN_PEERS references: each has too few others
            break
        worst = max(within, key=lambda i: (abs(within[i]), -i))
        if abs(within[worst]) <= DOUBTFUL_LEAN:
            break
        members.remove(worst)
    left_out = [i for i in scaled if i not in members]
    if left_out:
        count = len(members)
        lower, upper = ordered[(count - 1) // 2], ordered[count // 2]
        spread = ordered[0] != ordered[-1]
        within.update((i, lean(scaled[i], lower, upper, spread)) for i in left_out)
    return within


def _along(deltas: Mapping[int, torch.Tensor], members: Sequence[int]) -> dict[int, torch.Tensor]:
    """Each delta divided by its length along the coordinate-wise median of the `members`
    other than itself (float32 of a float64 division: a float64 sum's last bits move a
    coordinate by an ulp at most), those of no positive length left out. A median, not a
    sum: a sum weighs each update by its own length, so a long one would be measured along a
    direction made more of the short ones than an honest one is; and not its own delta, whose
    noise would lengthen it."""
    ordered, ranks = _ordered_with_ranks([deltas[j] for j in members])
    result = {}
    for i, delta in deltas.items():
        left_out = ranks[members.index(i)] if i in members else None
        direction = _middle(ordered, len(members), left_out).to(torch.float64)
        square = float(direction @ direction)
        wide = delta.to(torch.float64)
        length = float(wide @ direction) / square if square > 0.0 else 0.0
        if length > 0.0:
            result[i] = (wide / length).to(torch.float32)
    return result


def _leans_among(
    deltas: Mapping[int, torch.Tensor], members: Sequence[int]
) -> tuple[torch.Tensor, dict[int, int]]:
    """The members' deltas sorted coordinate by coordinate, and each member's `lean` from
    the median of the other members (one sort serves every leave-one-out median, as in
    `_qualities`); none with fewer than MIN_LEAN_PEERS others."""
    ordered, ranks = _ordered_with_ranks([deltas[i] for i in members])
    if len(members) <= MIN_LEAN_PEERS:
        return ordered, {}
    spread = ordered[0] != ordered[-1]
    others = len(members) - 1
    result = {}
    for place, i in enumerate(members):
        left_out = ranks[place]
        lower = _statistic(ordered, (others - 1) // 2, left_out)
        upper = _statistic(ordered, others // 2, left_out)
        result[i] = lean(deltas[i], lower, upper, spread)
    return ordered, result


def leaning(deltas: Mapping[int, torch.Tensor]) -> dict[int, Judgement]:
    """The updates whose `leans` are over DOUBTFUL_LEAN either way: UNDECIDED up to
    MAX_LEAN, rejected over it, with why."""
    judged: dict[int, Judgement] = {}
    for i, leaning_by in leans(deltas).items():
        if abs(leaning_by) <= DOUBTFUL_LEAN:
            continue
        side = "below" if leaning_by < 0 else "above"
        why = (
            f"it leans {leaning_by / SCALE:+.4f} from the others' median: {side} it on that "
            "share of the coordinates more than the other way, as a shift of every coordinate "
            "(ALIE) does"
        )
        judged[i] = _beyond(abs(leaning_by), why, MAX_LEAN, DOUBTFUL_LEAN)
    return judged


def sign_agreement(delta: torch.Tensor, reference: torch.Tensor) -> int:
    """Coordinates where `delta` has the sign of `reference` less those where it has the
    opposite sign (zeros count neither), over all coordinates, quantized: 1 in fixed point
    is full agreement, 0 what a random delta scores on average, -1 a reversed one. An exact
    count, so every validator gets the same number."""
    if delta.shape != reference.shape or delta.numel() == 0:
        raise ProtocolError("sign agreement of deltas of different or empty shapes")
    product = torch.sign(delta) * torch.sign(reference)
    difference = int((product > 0).sum()) - int((product < 0).sum())
    return quantized(difference / delta.numel())


def _qualities(
    deltas: Mapping[int, torch.Tensor], references: Sequence[int], scored: Sequence[int]
) -> dict[int, int]:
    """The sign agreement of each `scored` delta with the coordinate-wise median of the
    references other than itself."""
    if not references:
        return {i: 0 for i in scored}
    ordered, ranks = _ordered_with_ranks([deltas[j] for j in references])
    count = len(references)
    whole = _middle(ordered, count, None)
    result = {}
    for i in scored:
        if i not in references:
            result[i] = sign_agreement(deltas[i], whole)
        elif count == 1:
            result[i] = 0
        else:
            others = _middle(ordered, count, ranks[references.index(i)])
            result[i] = sign_agreement(deltas[i], others)
    return result


def _ordered_with_ranks(deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The deltas sorted coordinate by coordinate, and each delta's rank in that order.
    One sort serves every leave-one-out median: with delta k left out, the order
    statistics of the rest are those of all, shifted past k's rank."""
    ordered, order = torch.stack([d.to(torch.float32) for d in deltas]).sort(dim=0)
    count = len(deltas)
    rank_type = torch.int8 if count <= 127 else torch.int32  # a quarter of int64's memory
    positions = torch.arange(count, dtype=rank_type).unsqueeze(1).expand_as(order)
    ranks = torch.empty(order.shape, dtype=rank_type).scatter_(0, order, positions)
    return ordered, ranks


def _statistic(ordered: torch.Tensor, position: int, left_out: torch.Tensor | None) -> torch.Tensor:
    """The order statistic at `position` of the sorted deltas, less the one whose ranks are
    `left_out`."""
    if left_out is None:
        return ordered[position]
    return torch.where(left_out > position, ordered[position], ordered[position + 1])


def _middle(ordered: torch.Tensor, count: int, left_out: torch.Tensor | None) -> torch.Tensor:
    """`coordinate_median` of the sorted deltas, less the one whose ranks are `left_out`:
    the same order statistics, so the same numbers bit for bit."""
    remaining = count - (left_out is not None)
    if remaining % 2:
        return _statistic(ordered, remaining // 2, left_out)
    return (_statistic(ordered, remaining // 2 - 1, left_out) + _statistic(ordered, remaining // 2, left_out)) / 2


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
    gains: Sequence[int | None] | Callable[[int], int | None],
    previous_step: torch.Tensor | None = None,
    whole_gains: Sequence[int | None] | None = None,
    harms: Sequence[str | None] | None = None,
    claims: Sequence[int] | None = None,
) -> list[Judgement]:
    """Every update's judgement (see the module's docstring). `deltas`: flat deltas from
    the base (None: unusable); `gains`: the validation gains of a STEP of them
    (`improvement`), or a function of an update's position that measures it: the gain
    decides only rounds without MIN_PEERS agreeing updates, so a validator measures it
    (a forward pass over the validation set per update) only then; `previous_step`: the
    previous round's global step, flat, when there was one; `whole_gains`: the validation
    gains of the whole updates (None: not measured, no harm check); `harms`: why each
    update harms one class (`class_harm`; None: it does not, or not measured); `claims`: the
    samples each update claims (None: no `lagging` check, which needs `whole_gains` too)."""
    if not callable(gains) and len(gains) != len(deltas):
        raise ProtocolError(f"{len(deltas)} deltas but {len(gains)} validation gains")
    gain_of = gains if callable(gains) else gains.__getitem__
    if whole_gains is not None and len(whole_gains) != len(deltas):
        raise ProtocolError(f"{len(deltas)} deltas but {len(whole_gains)} whole-update gains")
    if harms is not None and len(harms) != len(deltas):
        raise ProtocolError(f"{len(deltas)} deltas but {len(harms)} per-class harms")
    if claims is not None and len(claims) != len(deltas):
        raise ProtocolError(f"{len(deltas)} deltas but {len(claims)} sample claims")
    present = {i: d for i, d in enumerate(deltas) if d is not None}
    problems = implausible(present, previous_step)
    doubted: dict[int, Judgement] = {}
    if whole_gains is not None and claims is not None:
        for i, judged in lagging(
            {
                i: gain for i in present
                if i not in problems and (gain := whole_gains[i]) is not None
                and (harms is None or harms[i] is None)
            },
            claims,
        ).items():  # fmt: skip
            _set_aside(i, judged, problems, doubted)
    for i, judged in leaning({i: d for i, d in present.items() if i not in problems}).items():
        _set_aside(i, judged, problems, doubted)
    set_aside = problems.keys() | doubted.keys()
    bound = agreement_bound(next(iter(present.values())).numel()) if present else SCALE
    references = agreeing(present, [i for i in present if i not in set_aside], bound)
    by_agreement = len(references) >= MIN_PEERS
    final = _qualities(present, references, list(present)) if by_agreement else {}
    # Gains decide a round without agreement, and the updates below the agreement bound of
    # a round whose references agree weakly and do not gain CLEAR_GAIN (`weakly_agreeing`).
    # Whether a round descends is read from a lower median of gains, so that one update
    # gaining on data like the validation set's (a gradient step on public samples) cannot
    # make the others' low gains look like no work.
    gains_of_round: dict[int, int | None] = {}
    descends = False
    if not by_agreement:
        gains_of_round = {
            i: gain_of(i) for i in present
            if i not in set_aside and (harms is None or harms[i] is None)
        }
        descends = _lower_median_gain(gains_of_round) >= CLEAR_GAIN
    elif weakly_agreeing([final[j] for j in references]) and any(
        final[i] < bound for i in present if i not in set_aside
    ):
        gains_of_round = {i: gain_of(i) for i in references}
        if _lower_median_gain(gains_of_round) >= CLEAR_GAIN:
            gains_of_round = {}  # the round still descends measurably: agreement decides
        else:
            gains_of_round.update(
                (i, gain_of(i)) for i in present if i not in set_aside and final[i] < bound
            )
    def whole_of(index: int) -> int | None:
        return None if whole_gains is None else whole_gains[index]

    judgements = []
    for i in range(len(deltas)):
        if i not in present:
            judgements.append(UNUSABLE)
        elif i in problems:
            judgements.append(Judgement(0, problems[i]))
        elif harms is not None and (harm_of_class := harms[i]) is not None:
            judgements.append(Judgement(0, harm_of_class))
        elif i in doubted:
            judgements.append(doubted[i])
        elif not by_agreement:
            judgements.append(_by_gain(gains_of_round[i], whole_of(i), paid=True, descends=descends))
        elif final[i] < bound:
            judgements.append(
                _by_gain(gains_of_round[i], whole_of(i), paid=False, descends=False)
                if gains_of_round
                else Judgement(0, f"agreement {final[i] / SCALE:.4f} below {bound / SCALE}")
            )
        else:
            judgements.append(_worse(whole_of(i)) or Judgement(final[i]))
    return judgements


def _set_aside(
    index: int, judged: Judgement, problems: dict[int, str], doubted: dict[int, Judgement]
) -> None:
    """Record a lagging or leaning update: a rejection overrides a doubt, the first doubt stays."""
    if judged.problem is not None:
        problems[index] = judged.problem
        doubted.pop(index, None)
    else:
        doubted.setdefault(index, judged)


def weakly_agreeing(reference_qualities: Sequence[int]) -> bool:
    """Whether the references' agreement is too weak to take a disagreeing update for a
    worker that did no work, unless their gains show the round still descends: their
    median quality is under CLEAR_AGREEMENT."""
    return not reference_qualities or _median([float(q) for q in reference_qualities]) < CLEAR_AGREEMENT


def _lower_median_gain(gains: Mapping[int, int | None]) -> int:
    """The lower median of the gains (one not measured counts as a loss of CLEAR_GAIN)."""
    ordered = sorted(-CLEAR_GAIN if g is None else g for g in gains.values())
    return ordered[(len(ordered) - 1) // 2] if ordered else -CLEAR_GAIN


def _worse(whole_gain: int | None) -> Judgement | None:
    """The rejection of an update whose whole delta raises the validation loss by more than
    MAX_LOSS_INCREASE, or None."""
    if whole_gain is not None and whole_gain < -MAX_LOSS_INCREASE:
        return Judgement(0, f"validation loss worse by {-whole_gain} (fixed point)")
    return None


def _by_gain(gain: int | None, whole_gain: int | None, paid: bool, descends: bool) -> Judgement:
    """An update's judgement by its validation gain, in a round without MIN_PEERS agreeing
    updates (`paid`: its quality is that gain, from MIN_IMPROVEMENT) or below the bound of
    weakly agreeing ones (not `paid`: qualities there are agreements). Rejected when it
    loses CLEAR_GAIN or more, or gains under MIN_IMPROVEMENT in a round that `descends`
    (the lower median gain of its updates is CLEAR_GAIN: the round shows what work does), or
    its whole delta raises the loss by more than MAX_LOSS_INCREASE; else UNDECIDED: where no
    update shows work measurably it is neither averaged, paid nor slashed."""
    if gain is None:
        return Judgement(0, "validation gain not measured")
    if paid and gain >= MIN_IMPROVEMENT:
        return Judgement(gain)
    if gain <= -CLEAR_GAIN:
        return Judgement(0, f"validation gain {gain}: the update makes the model worse")
    if gain < MIN_IMPROVEMENT and descends:
        return Judgement(
            0, f"validation gain {gain} below {MIN_IMPROVEMENT} in a round whose median gain "
            f"is above {CLEAR_GAIN}"
        )
    return _worse(whole_gain) or UNDECIDED


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
