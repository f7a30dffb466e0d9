"""What the WORK policy's validators can measure of an update, for honest updates and for each
worker attack, at several distances from convergence: candidate quality statistics side by
side, each one's separation of honest from attacking updates, and the verdict of
`protocol.work.judge` (the policy as implemented).

    python -m bench.work_quality [--data-root DIR] [--model mnist_cnn] [--workers 5]
                                 [--samples 6000] [--validation 1000]
                                 [--levels 120:1:60,120:1:600,120:1:3000,0:1:6000,0:3:6000]
                                 [--public-samples 100] [--seed 0] [--lr 0.02] [--threads N]
                                 [--attacks "label_flip:source=1,target=7;sign_flip"]
                                 [--markdown FILE]

Real MNIST, the node's default local training (1 epoch, batch 32, SGD lr 0.02 or --lr,
momentum 0.9), --workers honest IID shards of --samples each and one more shard for the attacker.
A level `S:E:W` trains a start model centrally for E epochs on S samples of the honest
shards (0: all of them), runs one honest FedAvg round of W samples a worker from it, and
measures the round after, from that base, so that the previous round's global step (what a
replayer resubmits) is a real one. The default levels' bases run from ~36% to ~99%.
Levels are independent: run them as separate processes to use more cores.

Each attack is added to the honest round as one more worker. `upstream` says whether the
checks before any quality statistic stop it: a copy of an earlier update
(`protocol.verdict.near_duplicates`), a delta shorter than 0.1x or longer than 3x the
round's median, or the previous global step replayed (`protocol.work.implausible`).
`verdict` is what `protocol.work.judge` makes of it, `honest paid` the honest workers'
qualities in that round and whether all are accepted. The candidate statistics, for every
attack with a nonzero delta:

- `cos_med`: cosine of the delta with the coordinate-wise median of the others' deltas;
- `layer_med`: the same per tensor, averaged over the tensors (each layer one vote);
- `sign_med`: coordinates with the median's sign less those against it, over all
  coordinates (`protocol.work.sign_agreement`: the policy's quality);
- `sign_resid`: the same after projecting the previous global step out of both;
- `cos_grad`: cosine with minus the gradient of the validation loss at the base (the
  validator's own descent direction, FLTrust-like);
- `layer_grad`: the same per tensor, averaged;
- `sign_grad`: sign agreement with minus that gradient;
- `cos_root`: cosine with the validator's own one-epoch update on its validation set (FLTrust);
- `fo_gain`: minus the gradient times the delta: the first-order validation loss decrease
  along the delta (nats x 1e6);
- `gain`: the validation loss of the base minus that of base + delta (nats x 1e6);
- `med_resid`: cos_med after projecting the previous global step out of both.

Attackers beyond node.attacks' (default parameters; `scaled` boosted by the worker count,
ALIE with z_max for one attacker among workers + 1): `replayer` (base + the previous global
step), `replayer_noise` (plus noise as long as that step), `noise_honest_norm` (a free rider
that scales Gaussian noise to the honest median norm, the rational free rider),
`noise_layer_profile` (noise shaped per tensor like the previous global step, scaled the
same way), `grad_step` and `grad_step_short` (no training: minus the loss gradient at the base
on --public-samples public samples, scaled to the honest norm and to 0.2x of it),
`prev_step_noise_resid` (the previous step's direction at the honest norm, noised to a
cosine of 0.85 with it), `few_samples` (trains honestly on 1% of its shard).

After each level's table, the per-class harm check's view (`protocol.work.class_harm`): for
every honest update and every attack, its largest rise of one class's validation loss over
the base, that rise as a share of the class's bound (`protocol.work.class_loss_bound`) and
every class's rise, then the largest honest share; `label_flip:...,fraction=F` flips only
that share of the source class (the flip that stays under the bound). Then, per candidate: the least honest value, the largest value of an
attack that passed upstream, their difference, and the attacks at or above the least honest.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from node.attacks.spec import alie_z_max, parse_attack_spec
from node.attacks.worker import attacked_update
from node.datasets import default_data_root, load_builtin
from node.models import build_model
from protocol.aggregation import fedavg
from protocol.data import Dataset, partition_iid, to_tensors
from protocol.fixedpoint import SCALE
from protocol.training import TrainConfig, evaluate, train_local
from protocol.verdict import cosine, flat_delta, near_duplicates
from protocol.work import (
    STEP,
    Judgement,
    Measured,
    class_harm,
    class_loss_bound,
    class_rises,
    coordinate_median,
    implausible,
    improvement,
    judge,
    norm,
)
from protocol.work import measure as measure_classes
from protocol.work import sign_agreement as work_sign_agreement

StateDict = dict[str, torch.Tensor]

ATTACKS = (
    "free_rider",
    "free_rider_noise",
    "noise_honest_norm",
    "noise_layer_profile",
    "sign_flip",
    "scaled",
    "gaussian",
    "ipm",
    "alie",
    "label_flip:source=1,target=7",
    "label_flip:source=1,target=7,fraction=0.9",
    "label_flip:source=1,target=7,fraction=0.75",
    "label_flip:source=1,target=7,fraction=0.5",
    "label_flip:source=1,target=7,fraction=0.25",
    "label_flip:source=1,target=7,fraction=0.1",
    "copycat",
    "replayer",
    "replayer_noise",
    "prev_step_noise_resid",
    "grad_step",
    "grad_step_short",
    "few_samples",
)

CANDIDATES = (
    "cos_med", "layer_med", "sign_med", "sign_resid", "cos_grad", "layer_grad", "sign_grad",
    "cos_root", "fo_gain", "gain", "med_resid",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.work_quality")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--workers", type=int, default=5, help="honest workers")
    parser.add_argument("--samples", type=int, default=6000, help="training samples per worker")
    parser.add_argument("--validation", type=int, default=1000, help="validation samples")
    parser.add_argument(
        "--levels",
        default="120:1:60,120:1:600,120:1:3000,0:1:6000,0:3:6000",
        help="comma-separated START_SAMPLES:START_EPOCHS:WARMUP_SAMPLES (0 = every honest sample)",
    )
    parser.add_argument("--public-samples", type=int, default=100, help="grad_step's data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.02, help="local SGD learning rate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument(
        "--attacks", default=";".join(ATTACKS),
        help="semicolon-separated attackers to add (default: all of them; the per-class rises are "
        "printed for every honest update whatever this says)",
    )
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Level:
    start_samples: int
    start_epochs: int
    warmup_samples: int

    @staticmethod
    def parse(text: str) -> Level:
        samples, epochs, warmup = (int(part) for part in text.split(":"))
        return Level(samples, epochs, warmup)


def numpy_state(state: StateDict) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in state.items()}


def torch_state(state: Mapping[str, np.ndarray]) -> StateDict:
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in state.items()}


class Bench:
    """Training, evaluation and the validator's measurements on one data split."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        train_set = load_builtin("mnist", "train", args.data_root, allow_download=False)
        test = load_builtin("mnist", "test", args.data_root, allow_download=False)
        images, labels = to_tensors(test)
        self.images, self.labels = images[: args.validation], labels[: args.validation]
        self.validation = test.subset(np.arange(args.validation))
        parts = partition_iid((args.workers + 1) * args.samples, args.workers + 1, seed=args.seed)
        self.shards = [train_set.subset(part) for part in parts]
        self.union = train_set.subset(np.concatenate(parts[: args.workers]))
        self.initial = build_model(args.model, seed=args.seed).state_dict()

    def trained(self, base: StateDict, data: Dataset, seed: int, epochs: int = 1) -> StateDict:
        model = build_model(self.args.model)
        model.load_state_dict(base)
        x, y = to_tensors(data)
        train_local(model, x, y, TrainConfig(epochs, 32, self.args.lr, 0.9, seed=seed))
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def measure(self, state: StateDict) -> tuple[float, float]:
        model = build_model(self.args.model)
        model.load_state_dict(state)
        metrics = evaluate(model, self.images, self.labels)
        return metrics.loss, metrics.accuracy

    def classes(self, state: StateDict) -> Measured:
        """`state` on the validation set with its per-class losses (`protocol.work.measure`)."""
        model = build_model(self.args.model)
        model.load_state_dict(state)
        return measure_classes(model, self.images, self.labels)

    def gradient(self, state: StateDict, data: Dataset | None = None) -> torch.Tensor:
        """The gradient of the mean cross-entropy at `state`, flat in flat_delta's order
        (on the validation set, or on `data`)."""
        model = build_model(self.args.model)
        model.load_state_dict(state)
        model.eval()
        x, y = (self.images, self.labels) if data is None else to_tensors(data)
        model.zero_grad(set_to_none=True)
        functional.cross_entropy(model(x), y).backward()
        grads = dict(model.named_parameters())
        parts = []
        for name in sorted(state):
            if not state[name].is_floating_point():
                continue
            grad = grads[name].grad if name in grads else None
            parts.append(torch.zeros(state[name].numel()) if grad is None else grad.flatten())
        return torch.cat(parts).detach().to(torch.float32)


def segments(base: StateDict) -> list[slice]:
    """The slice of each floating-point tensor in flat_delta's order."""
    out, offset = [], 0
    for name in sorted(base):
        if base[name].is_floating_point():
            out.append(slice(offset, offset + base[name].numel()))
            offset += base[name].numel()
    return out


def unflatten(
    base: StateDict, flat: torch.Tensor
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, base tensor, its slice of `flat`) in flat_delta's order; zeros for the others."""
    out, offset = [], 0
    for name in sorted(base):
        tensor = base[name]
        if tensor.is_floating_point():
            piece = flat[offset : offset + tensor.numel()].view_as(tensor).to(tensor.dtype)
            offset += tensor.numel()
        else:
            piece = torch.zeros_like(tensor)
        out.append((name, tensor, piece))
    return out


def moved(base: StateDict, delta: torch.Tensor) -> StateDict:
    return {n: t + d if t.is_floating_point() else t.clone() for n, t, d in unflatten(base, delta)}


def layer_cosine(a: torch.Tensor, b: torch.Tensor, parts: Sequence[slice]) -> float:
    return float(np.mean([cosine(a[s], b[s]) for s in parts]))


def sign_agreement(delta: torch.Tensor, reference: torch.Tensor) -> float:
    return work_sign_agreement(delta, reference) / SCALE


def without(vector: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    unit = direction.to(torch.float64) / max(norm(direction), 1e-30)
    v = vector.to(torch.float64)
    return (v - torch.dot(v, unit) * unit).to(torch.float32)


@dataclass(frozen=True)
class Reference:
    """What a validator knows besides the updates."""

    base: StateDict
    base_loss: float
    gradient: torch.Tensor  # of the validation loss at the base
    root: torch.Tensor  # the validator's own one-epoch delta on its validation set
    previous_step: torch.Tensor
    parts: list[slice]


def statistics(
    bench: Bench, delta: torch.Tensor, others: Sequence[torch.Tensor], ref: Reference
) -> dict[str, float]:
    median = coordinate_median(list(others))
    descent = -ref.gradient
    return {
        "cos_med": cosine(delta, median),
        "layer_med": layer_cosine(delta, median, ref.parts),
        "sign_med": sign_agreement(delta, median),
        "sign_resid": sign_agreement(
            without(delta, ref.previous_step), without(median, ref.previous_step)
        ),
        "cos_grad": cosine(delta, descent),
        "layer_grad": layer_cosine(delta, descent, ref.parts),
        "sign_grad": sign_agreement(delta, descent),
        "cos_root": cosine(delta, ref.root),
        "fo_gain": 1e6 * float(torch.dot(descent.to(torch.float64), delta.to(torch.float64))),
        "gain": 1e6 * (ref.base_loss - bench.measure(moved(ref.base, delta))[0]),
        "med_resid": cosine(without(delta, ref.previous_step), without(median, ref.previous_step)),
    }


def attack_deltas(
    bench: Bench,
    base: StateDict,
    honest: Sequence[StateDict],
    honest_deltas: Sequence[torch.Tensor],
    previous_step: torch.Tensor,
    parts: Sequence[slice],
) -> list[tuple[str, torch.Tensor]]:
    """Each attacker's delta this round, trained (where it trains) on its own shard."""
    args, shard = bench.args, bench.shards[-1]
    plain = numpy_state(base)
    seed = args.seed + 300
    honest_norm = float(np.median([norm(d) for d in honest_deltas]))
    noise = torch.randn(previous_step.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    for text in [name.strip() for name in args.attacks.split(";") if name.strip()]:
        kind = text.split(":")[0]
        if kind == "replayer":
            delta = previous_step.clone()
        elif kind == "replayer_noise":
            delta = previous_step + noise * norm(previous_step) / norm(noise)
        elif kind == "prev_step_noise_resid":
            # cosine 0.85 with the previous step: noise of tan(acos 0.85) x its length
            unit = previous_step / norm(previous_step)
            side = without(noise, previous_step)
            delta = honest_norm * (0.85 * unit + (1 - 0.85**2) ** 0.5 * side / norm(side))
        elif kind == "noise_honest_norm":
            delta = noise * honest_norm / norm(noise)
        elif kind == "noise_layer_profile":
            shaped = torch.cat([noise[s] * norm(previous_step[s]) / norm(noise[s]) for s in parts])
            delta = shaped * honest_norm / norm(shaped)
        elif kind.startswith("grad_step"):
            public = shard.subset(np.arange(args.public_samples))
            direction = -bench.gradient(base, public)
            length = honest_norm * (0.2 if kind == "grad_step_short" else 1.0)
            delta = direction * length / norm(direction)
        elif kind == "few_samples":
            subset = shard.subset(np.arange(max(1, len(shard) // 100)))
            delta = flat_delta(bench.trained(base, subset, seed), base)
        else:
            sized = {
                "scaled": f":scale={args.workers + 1}",
                "alie": f":z={alie_z_max(args.workers + 1, 1)}",
            }
            spec = parse_attack_spec(text + sized.get(kind, ""))

            def train(data: Dataset) -> dict[str, np.ndarray]:
                return numpy_state(bench.trained(base, data, seed))

            victim = numpy_state(honest[0]) if kind == "copycat" else None
            rng = np.random.default_rng(seed)
            state = torch_state(attacked_update(spec, plain, shard, train, rng, victim))
            delta = flat_delta(state, base)
        rows.append((text, delta))
    return rows


def upstream(deltas: Sequence[torch.Tensor], previous_step: torch.Tensor) -> str | None:
    """Why the validators' upstream checks stop the last delta, or None."""
    if len(deltas) - 1 in near_duplicates(list(deltas)):
        return "copy"
    problem = implausible(dict(enumerate(deltas)), previous_step).get(len(deltas) - 1)
    if problem is None:
        return None
    return "replay" if "replays" in problem else ("short" if "below" in problem else "long")


def fmt(name: str, value: float) -> str:
    return f"{value:.0f}" if name in ("fo_gain", "gain") else f"{value:.4f}"


def run_level(bench: Bench, level: Level, out: list[str]) -> None:
    args = bench.args
    data = bench.union if level.start_samples == 0 else bench.union.subset(np.arange(level.start_samples))
    start = bench.trained(bench.initial, data, args.seed, epochs=level.start_epochs)
    warm = [shard.subset(np.arange(min(level.warmup_samples, len(shard)))) for shard in bench.shards[:-1]]
    warmup = [bench.trained(start, shard, args.seed + 100 + i) for i, shard in enumerate(warm)]
    base = fedavg(warmup, [len(s) for s in warm])
    previous_step = flat_delta(base, start)
    base_loss, base_accuracy = bench.measure(base)
    honest = [bench.trained(base, s, args.seed + 200 + i) for i, s in enumerate(bench.shards[:-1])]
    deltas = [flat_delta(s, base) for s in honest]
    parts = segments(base)
    root = flat_delta(bench.trained(base, bench.validation, args.seed + 400), base)
    ref = Reference(base, base_loss, bench.gradient(base), root, previous_step, parts)
    honest_stats = [
        statistics(bench, d, [o for j, o in enumerate(deltas) if j != i], ref)
        for i, d in enumerate(deltas)
    ]
    attacks = attack_deltas(bench, base, honest, deltas, previous_step, parts)
    median_norm = float(np.median([norm(d) for d in deltas]))
    emit(out, f"\n### base accuracy {base_accuracy:.4f} (level {level.start_samples}:"
         f"{level.start_epochs}:{level.warmup_samples}, start {bench.measure(start)[1]:.4f})\n")
    def gain_of(delta: torch.Tensor, step: float = STEP) -> int:
        result = improvement(base_loss, bench.measure(moved(base, step * delta))[0])
        assert result is not None
        return result

    honest_gains = [gain_of(d) for d in deltas]
    honest_whole = [gain_of(d, 1.0) for d in deltas]
    at_base = bench.classes(base)
    honest_classes = [bench.classes(s) for s in honest]
    honest_harms = [class_harm(at_base, m) for m in honest_classes]
    emit(out, "| submitted | norm/med | cos prev | upstream | verdict | honest paid | "
         + " | ".join(CANDIDATES) + " |")
    emit(out, "|---" * (6 + len(CANDIDATES)) + "|")
    low = {c: min(s[c] for s in honest_stats) for c in CANDIDATES}
    high = {c: max(s[c] for s in honest_stats) for c in CANDIDATES}
    norms = [norm(d) / median_norm for d in deltas]
    cos_prev = [cosine(d, previous_step) for d in deltas]
    claims = [len(shard) for shard in bench.shards[: len(deltas)]]  # the attacker's is last
    alone = judge(
        list(deltas), honest_gains, previous_step, whole_gains=honest_whole, harms=honest_harms, claims=claims
    )
    emit(out, f"| honest (min..max) | {min(norms):.2f}..{max(norms):.2f} | "
         f"{min(cos_prev):.3f}..{max(cos_prev):.3f} | - | - | {paid(alone)} | "
         + " | ".join(f"{fmt(c, low[c])}..{fmt(c, high[c])}" for c in CANDIDATES) + " |")
    reached: dict[str, dict[str, float]] = {}
    attack_classes: list[tuple[str, Measured]] = []
    for what, delta in attacks:
        attack_classes.append((what, bench.classes(moved(base, delta))))
        stopped = upstream([*deltas, delta], previous_step)
        values = statistics(bench, delta, deltas, ref) if norm(delta) > 0 else None
        if stopped is None and values is not None:
            reached[what] = values
        submitted: list[torch.Tensor | None] = [*deltas, delta]
        for copy in near_duplicates(submitted):
            submitted[copy] = None
        gains = [*honest_gains, gain_of(delta)]
        whole = [*honest_whole, gain_of(delta, 1.0)]
        harms = [*honest_harms, class_harm(at_base, attack_classes[-1][1])]
        verdict = judge(
            submitted, gains, previous_step, whole_gains=whole, harms=harms,
            claims=[*claims, len(bench.shards[-1])],
        )
        cells = ["-"] * len(CANDIDATES) if values is None else [fmt(c, values[c]) for c in CANDIDATES]
        emit(out, f"| {what} | {norm(delta) / median_norm:.2f} | {cosine(delta, previous_step):.3f} | "
             f"{stopped or 'passes'} | {verdict_text(verdict[-1], submitted[-1] is None)} | "
             f"{paid(verdict[:-1])} | " + " | ".join(cells) + " |")
    class_table(out, at_base, [(f"honest {i}", m) for i, m in enumerate(honest_classes)], attack_classes)
    emit(out, "\nseparation (least honest - largest attack that passed upstream; attacks at or above the least honest):\n")
    emit(out, "| candidate | least honest | largest attack | margin | attacks >= least honest |")
    emit(out, "|---|---|---|---|---|")
    for c in CANDIDATES:
        top = max(reached.items(), key=lambda item: item[1][c]) if reached else None
        above = [w for w, v in reached.items() if v[c] >= low[c]]
        margin = low[c] - top[1][c] if top else float("nan")
        emit(out, f"| {c} | {fmt(c, low[c])} | {fmt(c, top[1][c]) if top else '-'} ({top[0] if top else '-'}) "
             f"| {fmt(c, margin)} | {', '.join(above) or 'none'} |")


def class_table(
    out: list[str], base: Measured, honest: Sequence[tuple[str, Measured]],
    attacks: Sequence[tuple[str, Measured]],
) -> None:
    """Per update, its largest per-class validation loss rise over the base (nats) and that
    rise as a share of its class's bound (`protocol.work.class_loss_bound`), then the rise of
    every class: what the per-class harm check sees."""
    counts = base.class_counts
    emit(out, "\nper-class validation loss rise over the base (nats; class samples: "
         + ", ".join(f"{c}: {n}" for c, n in enumerate(counts)) + "; base class losses: "
         + ", ".join(f"{loss:.3f}" for loss in base.class_losses) + ")\n")
    emit(out, "| update | worst class | rise | rise / bound | every class's rise |")
    emit(out, "|---|---|---|---|---|")
    worst_honest = 0.0
    for label, (what, measured) in enumerate([*honest, *attacks]):
        rises = class_rises(base, measured)
        worst = max(rises, key=lambda c: rises[c] / class_loss_bound(counts[c]))
        share = rises[worst] / class_loss_bound(counts[worst])
        if label < len(honest):
            worst_honest = max(worst_honest, share)
        emit(out, f"| {what} | {worst} | {rises[worst] / SCALE:.3f} | {share:.2f} | "
             + " ".join(f"{rises[c] / SCALE:+.3f}" for c in sorted(rises)) + " |")
    emit(out, f"\nlargest honest rise / bound: {worst_honest:.2f}")


def paid(judgements: Sequence[Judgement]) -> str:
    """The honest workers' qualities (fixed point) and whether every one is accepted."""
    qualities = [j.quality for j in judgements]
    rejected = sum(not j.shows_work for j in judgements)
    return f"{min(qualities)}..{max(qualities)}" + (f", {rejected} REJECTED" if rejected else ", all")


def verdict_text(judgement: Judgement, copied: bool) -> str:
    if copied:
        return "rejected: copy"
    if judgement.shows_work:
        return f"ACCEPTED {judgement.quality}"
    if judgement.undecided:
        return "undecided (unavailable)"
    problem = judgement.problem or ""
    if "of class" in problem:
        return "rejected: " + problem.split(",")[0].replace("validation loss of ", "")
    short = next(
        (word for word in ("agreement", "replays", "above", "below", "validation loss") if word in problem),
        problem,
    )
    return f"rejected: {'norm ' + short if short in ('above', 'below') else short}"


def emit(out: list[str], line: str) -> None:
    print(line, flush=True)
    out.append(line)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    out: list[str] = []
    emit(out, f"{args.model}, {args.workers} honest workers of {args.samples} samples + 1 attacker, "
         f"{len(bench.labels)} validation samples")
    for text in args.levels.split(","):
        run_level(bench, Level.parse(text), out)
    if args.markdown:
        args.markdown.write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
