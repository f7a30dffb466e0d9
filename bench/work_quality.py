"""Where honest single-epoch updates and free riders fall against the work policy's bound.

    python -m bench.work_quality [--data-root DIR] [--workers 5] [--samples 6000]
                                 [--pretrain-epochs 0] [--rounds 6] [--validation 1000]
                                 [--seed 0] [--threads N]

Real MNIST, the node's default local training (1 epoch, batch 32, SGD lr 0.02, momentum
0.9, mnist_cnn), --workers IID shards of --samples each, FedAvg between rounds; with
--pretrain-epochs the initial model is first trained centrally on the union of the shards,
so that round 1 already starts from a ~99% model. The validators' measure of an update
(`protocol.work`): the validation loss of the base minus that of the
base moved by a fraction (`protocol.work.STEP`) of the update's delta, on --validation
samples of the test split. Per round it prints the base's accuracy, the honest workers'
smallest and largest improvement for several step fractions (1 = the update itself), and
for the protocol's step a free rider (the base: 0 exactly), free riders with tiny noise
(base + N(0, sigma^2), the `free_rider_noise` attack) and a worker that trains one epoch
on 1% of its shard, each with whether `protocol.work.MIN_IMPROVEMENT` rejects it; and a
replayer that submits the base plus the previous round's public global step (no training).
For comparison with a measure that needs no validation set it also prints each delta's
cosine with the mean delta of the honest workers (leaving itself out).

The measured numbers are in `protocol.work`'s docstring.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from node.datasets import default_data_root, load_builtin
from node.models import build_model
from protocol.aggregation import fedavg
from protocol.data import partition_iid, to_tensors
from protocol.fixedpoint import to_fixed
from protocol.training import TrainConfig, evaluate, train_local
from protocol.verdict import cosine, flat_delta
from protocol.work import MIN_IMPROVEMENT, STEP, stepped

STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625)

NOISE_SIGMAS = (1e-4, 1e-3, 1e-2)

StateDict = dict[str, torch.Tensor]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.work_quality")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--samples", type=int, default=6000, help="training samples per worker")
    parser.add_argument("--pretrain-epochs", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--validation", type=int, default=1000, help="validation samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def trained(
    base: StateDict, images: torch.Tensor, labels: torch.Tensor, seed: int, epochs: int = 1
) -> StateDict:
    model = build_model("mnist_cnn")
    model.load_state_dict(base)
    train_local(model, images, labels, TrainConfig(epochs, 32, 0.02, 0.9, seed=seed))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def noisy(base: StateDict, sigma: float, seed: int) -> StateDict:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: t + sigma * torch.randn(t.shape, generator=generator) if t.is_floating_point()
        else t.clone()
        for name, t in base.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train = load_builtin("mnist", "train", args.data_root, allow_download=False)
    test = load_builtin("mnist", "test", args.data_root, allow_download=False)
    images, labels = to_tensors(test)
    images, labels = images[: args.validation], labels[: args.validation]
    parts = partition_iid(args.workers * args.samples, args.workers, seed=args.seed)
    shards = [to_tensors(train, part) for part in parts]
    base = build_model("mnist_cnn", seed=args.seed).state_dict()
    if args.pretrain_epochs:
        every = torch.cat([x for x, _ in shards]), torch.cat([y for _, y in shards])
        base = trained(base, *every, seed=args.seed, epochs=args.pretrain_epochs)

    def measure(state: StateDict) -> tuple[float, float]:
        model = build_model("mnist_cnn")
        model.load_state_dict(state)
        metrics = evaluate(model, images, labels)
        return metrics.loss, metrics.accuracy

    def gain(state: StateDict, step: float = STEP) -> int:
        return to_fixed(base_loss - measure(stepped(state, base, step))[0])

    print(
        f"bound: improvement >= {MIN_IMPROVEMENT} (fixed point) at step {STEP} on "
        f"{len(labels)} samples"
    )
    def report(what: str, state: StateDict, honest_mean: torch.Tensor) -> None:
        state_gain = gain(state)
        print(
            f"  {what}: improvement {state_gain}, rejected {state_gain < MIN_IMPROVEMENT}, "
            f"cosine with the honest mean {cosine(flat_delta(state, base), honest_mean):.4f}"
        )

    previous = base
    for round_ in range(1, args.rounds + 1):
        base_loss, base_accuracy = measure(base)
        seed = args.seed * 1000 + round_ * 10
        states = [trained(base, x, y, seed + i) for i, (x, y) in enumerate(shards)]
        accuracy_gains = [measure(s)[1] - base_accuracy for s in states]
        print(
            f"round {round_}: base accuracy {base_accuracy:.4f} loss {base_loss:.4f}; "
            f"updates' accuracy gain min {min(accuracy_gains):+.4f}"
        )
        for step in STEPS:
            gains = [gain(s, step) for s in states]
            print(
                f"  honest, step {step:g}: improvement min {min(gains)} max {max(gains)}; "
                f"all clear the bound: {all(g >= MIN_IMPROVEMENT for g in gains)}"
            )
        deltas = [flat_delta(s, base) for s in states]
        mean = torch.stack(deltas).mean(dim=0)
        others = [cosine(d, (mean * len(deltas) - d) / (len(deltas) - 1)) for d in deltas]
        print(f"  honest cosine with the others' mean delta: min {min(others):.3f} max {max(others):.3f}")
        for sigma in NOISE_SIGMAS:
            report(f"base + noise sigma {sigma:g}", noisy(base, sigma, seed), mean)
        x, y = shards[0]
        few = max(1, len(y) // 100)
        report(f"one epoch on {few} samples", trained(base, x[:few], y[:few], seed), mean)
        if round_ > 1:
            replay = {n: 2 * t - previous[n] if t.is_floating_point() else t for n, t in base.items()}
            report("base + the previous global step", replay, mean)
        previous, base = base, fedavg(states, [len(y) for _, y in shards])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
