"""What averaging the last steps of local training costs in learning speed: FedAvg rounds of
--workers IID workers of --samples MNIST samples each, with workers submitting their last
SGD iterate and with each --tails fraction of their steps averaged (`[training]
average_tail`), in the same run from the same initial model, shards and batch orders.

    python -m bench.tail_average [--model mnist_2nn] [--workers 10] [--samples 500]
                                 [--rounds 5] [--tails 0.25,0.5] [--data-root DIR]

Prints the test accuracy (the first 2,000 test images) after each round per setting, and
each setting's accuracy minus the last iterate's. Its counterpart, how often an honest
worker is rejected either way, is `bench.work_rounds`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from node.config import TrainingConfig
from node.datasets import default_data_root, load_builtin
from node.models import build_model, train_config
from protocol.aggregation import fedavg
from protocol.data import Dataset, partition_iid, to_tensors
from protocol.training import evaluate, train_local

TEST_IMAGES = 2000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tail_average")
    parser.add_argument("--model", default="mnist_2nn")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--samples", type=int, default=500, help="training samples per worker")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tails", default="0.25,0.5", help="comma-separated fractions in (0, 1]")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    return parser.parse_args(argv)


def accuracies(
    args: argparse.Namespace, training: TrainingConfig, shards: Sequence[Dataset], test: Dataset
) -> list[float]:
    """Test accuracy after each of --rounds FedAvg rounds."""
    images, labels = to_tensors(test)
    state: Mapping[str, torch.Tensor] = build_model(args.model, seed=0).state_dict()
    result = []
    for round_ in range(args.rounds):
        updates = []
        for index, shard in enumerate(shards):
            model = build_model(args.model, seed=0)
            model.load_state_dict(state)
            x, y = to_tensors(shard)
            train_local(model, x, y, train_config(training, 100 * round_ + index))
            updates.append(model.state_dict())
        state = fedavg(updates, [len(shard) for shard in shards])
        model = build_model(args.model, seed=0)
        model.load_state_dict(state)
        result.append(evaluate(model, images, labels).accuracy)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    train = load_builtin("mnist", "train", args.data_root, allow_download=False)
    test = load_builtin("mnist", "test", args.data_root, allow_download=False)
    parts = partition_iid(len(train.labels), len(train.labels) // args.samples, seed=3)
    shards = [train.subset(part) for part in parts[: args.workers]]
    test = Dataset(test.images[:TEST_IMAGES], test.labels[:TEST_IMAGES])
    node = TrainingConfig()
    settings = [0.0, *(float(t) for t in args.tails.split(","))]
    print(f"{args.workers} workers x {args.samples} samples, {args.model}, lr {node.lr}, "
          f"momentum {node.momentum}; test accuracy after each round", flush=True)
    baseline: list[float] = []
    for tail in settings:
        found = accuracies(args, dataclasses.replace(node, average_tail=tail), shards, test)
        baseline = baseline or found
        name = "last iterate" if tail == 0 else f"tail {tail}"
        shown = " ".join(f"{a:.4f}" for a in found)
        difference = " ".join(f"{a - b:+.4f}" for a, b in zip(found, baseline, strict=True))
        print(f"{name:>12}: {shown}   minus last iterate: {difference}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
