"""What the WORK policy's validators measure, for honest updates and for each worker attack,
early in a task (~90% base) and late (~99% base).

    python -m bench.work_quality [--data-root DIR] [--model mnist_cnn] [--workers 5]
                                 [--samples 6000] [--validation 1000] [--early-samples 120]
                                 [--early-warmup-samples 600] [--late-epochs 3] [--seed 0]
                                 [--threads N]

Real MNIST, the node's default local training (1 epoch, batch 32, SGD lr 0.02, momentum
0.9), --workers honest IID shards of --samples each and one more shard for the attacker.
For each level a start model is trained centrally (early: one epoch on --early-samples
samples; late: --late-epochs epochs on every shard), one honest FedAvg round is run from it
(early: on --early-warmup-samples a worker), and the result is the base of the measured
round, so that the previous round's global step (what a replayer resubmits) is a real one. In the measured round the honest workers train
from the base; each attack of `node.attacks` (its default parameters; `scaled` boosted by
the worker count, ALIE with z_max for one attacker among workers + 1) is then added as one
more worker and the round is judged as the validators judge it: copies of an earlier
submission are dropped (`protocol.verdict.near_duplicates`), then `protocol.work.judge`.

Per level it prints the base's accuracy and, per row, the quality (fixed point, the score
a validator reveals: cosine with the others' median delta) of the honest updates (min..max,
with whether all are accepted) and of the attacker, with the attacker's delta norm over the
honest median, its cosine with the previous global step, its validation gain (a STEP of its
delta, fixed point) and the verdict.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from node.attacks.spec import alie_z_max, parse_attack_spec
from node.attacks.worker import attacked_update
from node.datasets import default_data_root, load_builtin
from node.models import build_model
from protocol.aggregation import fedavg
from protocol.data import Dataset, partition_iid, to_tensors
from protocol.training import TrainConfig, evaluate, train_local
from protocol.verdict import cosine, flat_delta, near_duplicates
from protocol.work import Judgement, improvement, judge, norm, stepped

StateDict = dict[str, torch.Tensor]

ATTACKS = (
    "free_rider",
    "free_rider_noise",
    "sign_flip",
    "scaled",
    "gaussian",
    "ipm",
    "alie",
    "label_flip:source=1,target=7",
    "copycat",
    "replayer",
    "replayer_noise",
    "few_samples",
)
"""The attacker rows; `replayer` submits base + the previous global step, `replayer_noise`
adds noise as long as that step (its cosine with the step drops to ~0.7, under the replay
bound), `few_samples` trains honestly on 1% of its shard (the cheapest real work), the rest
are node.attacks."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.work_quality")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--workers", type=int, default=5, help="honest workers")
    parser.add_argument("--samples", type=int, default=6000, help="training samples per worker")
    parser.add_argument("--validation", type=int, default=1000, help="validation samples")
    parser.add_argument("--early-samples", type=int, default=120, help="start model's data, early")
    parser.add_argument(
        "--early-warmup-samples", type=int, default=600, help="per worker, the round before, early"
    )
    parser.add_argument("--late-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def numpy_state(state: StateDict) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in state.items()}


def torch_state(state: Mapping[str, np.ndarray]) -> StateDict:
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in state.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set = load_builtin("mnist", "train", args.data_root, allow_download=False)
    test = load_builtin("mnist", "test", args.data_root, allow_download=False)
    images, labels = to_tensors(test)
    images, labels = images[: args.validation], labels[: args.validation]
    parts = partition_iid((args.workers + 1) * args.samples, args.workers + 1, seed=args.seed)
    shards = [train_set.subset(part) for part in parts]

    def trained(base: StateDict, data: Dataset, seed: int, epochs: int = 1) -> StateDict:
        model = build_model(args.model)
        model.load_state_dict(base)
        x, y = to_tensors(data)
        train_local(model, x, y, TrainConfig(epochs, 32, 0.02, 0.9, seed=seed))
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def measure(state: StateDict) -> tuple[float, float]:
        model = build_model(args.model)
        model.load_state_dict(state)
        metrics = evaluate(model, images, labels)
        return metrics.loss, metrics.accuracy

    initial = build_model(args.model, seed=args.seed).state_dict()
    union = train_set.subset(np.concatenate(parts[: args.workers]))
    starts = {
        "early": lambda: trained(initial, union.subset(np.arange(args.early_samples)), args.seed),
        "late": lambda: trained(initial, union, args.seed, epochs=args.late_epochs),
    }
    print(
        f"{args.model}, {args.workers} honest workers of {args.samples} samples + 1 attacker, "
        f"{len(labels)} validation samples; quality = cosine with the others' median delta "
        "(fixed point, 1,000,000 = 1)"
    )
    for level, start_of in starts.items():
        start = start_of()
        # early, the warm-up round trains on few samples so that the measured round starts
        # near 90% rather than where a whole round of data takes the model
        size = args.early_warmup_samples if level == "early" else args.samples
        warm = [shard.subset(np.arange(size)) for shard in shards[:-1]]
        warmup = [trained(start, shard, args.seed + 100 + i) for i, shard in enumerate(warm)]
        base = fedavg(warmup, [len(s) for s in warm])
        previous_step = flat_delta(base, start)
        base_loss, base_accuracy = measure(base)
        honest = [trained(base, shard, args.seed + 200 + i) for i, shard in enumerate(shards[:-1])]
        rows = attack_rows(args, base, honest, shards[-1], trained, previous_step)
        print(f"\n{level}: base accuracy {base_accuracy:.4f} (start {measure(start)[1]:.4f})")
        print(
            f"  {'submitted':32} {'honest quality':>17} {'all paid':>8} {'quality':>8} "
            f"{'norm/med':>8} {'cos prev':>8} {'val gain':>9}  verdict"
        )
        for what, extra in [("honest only", None), *rows]:
            states = honest if extra is None else [*honest, extra]
            deltas: list[torch.Tensor | None] = [flat_delta(s, base) for s in states]
            for copy in near_duplicates(deltas):
                deltas[copy] = None
            gains = [
                None if d is None else improvement(base_loss, measure(stepped(s, base))[0])
                for s, d in zip(states, deltas, strict=True)
            ]
            judgements = judge(deltas, gains, previous_step)
            print_row(what, judgements, deltas, gains, extra is not None, previous_step, args.workers)
    return 0


def attack_rows(
    args: argparse.Namespace,
    base: StateDict,
    honest: Sequence[StateDict],
    shard: Dataset,
    trained: Callable[[StateDict, Dataset, int], StateDict],
    previous_step: torch.Tensor,
) -> list[tuple[str, StateDict]]:
    """Each attacker's submission this round, trained (where it trains) on its own shard."""
    plain = numpy_state(base)
    seed = args.seed + 300
    rows = []
    for text in ATTACKS:
        kind = text.split(":")[0]
        if kind.startswith("replayer"):
            step = previous_step
            if kind == "replayer_noise":
                noise = torch.randn(step.shape, generator=torch.Generator().manual_seed(seed))
                step = step + noise * norm(step) / norm(noise)
            state = {
                n: t + d if t.is_floating_point() else t.clone() for n, t, d in unflatten(base, step)
            }
        elif kind == "few_samples":
            state = trained(base, shard.subset(np.arange(max(1, len(shard) // 100))), seed)
        else:
            sized = {
                "scaled": f":scale={args.workers + 1}",
                "alie": f":z={alie_z_max(args.workers + 1, 1)}",
            }
            spec = parse_attack_spec(text + sized.get(kind, ""))

            def train(data: Dataset) -> dict[str, np.ndarray]:
                return numpy_state(trained(base, data, seed))

            victim = numpy_state(honest[0]) if kind == "copycat" else None
            rng = np.random.default_rng(seed)
            state = torch_state(attacked_update(spec, plain, shard, train, rng, victim))
        rows.append((text, state))
    return rows


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


def print_row(
    what: str,
    judgements: Sequence[Judgement],
    deltas: Sequence[torch.Tensor | None],
    gains: Sequence[int | None],
    attacked: bool,
    previous_step: torch.Tensor,
    workers: int,
) -> None:
    honest = judgements[:workers]
    qualities = [j.quality for j in honest]
    line = (
        f"  {what:32} {min(qualities):>8}..{max(qualities):<8} "
        f"{str(all(j.shows_work for j in honest)):>8}"
    )
    if not attacked:
        gain_text = f"{min(g for g in gains if g is not None)}..{max(g for g in gains if g is not None)}"
        norms = [norm(d) for d in deltas if d is not None]
        cos_prev = [cosine(d, previous_step) for d in deltas if d is not None]
        print(
            f"{line} honest norm/med {min(norms) / np.median(norms):.2f}..{max(norms) / np.median(norms):.2f}"
            f", cos prev {min(cos_prev):.3f}..{max(cos_prev):.3f}, val gain {gain_text}"
        )
        for j in honest:
            if j.problem:
                print(f"    honest rejected: {j.problem}")
        return
    delta, judgement = deltas[-1], judgements[-1]
    honest_norm = float(np.median([norm(d) for d in deltas[:workers] if d is not None]))
    if delta is None:
        print(f"{line} {'-':>8} {'-':>8} {'-':>8} {'-':>9}  rejected: copies an earlier update")
        return
    verdict = "ACCEPTED" if judgement.shows_work else f"rejected: {judgement.problem}"
    print(
        f"{line} {judgement.quality:>8} {norm(delta) / honest_norm:>8.2f} "
        f"{cosine(delta, previous_step):>8.3f} {gains[-1]:>9}  {verdict}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
