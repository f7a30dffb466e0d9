"""How often the WORK policy rejects an honest worker in a small task: --trials tasks of
--rounds rounds, each with --workers honest IID workers of --samples MNIST samples and one
free rider, judged and aggregated as the validators do (`protocol.work.judge` with the
per-class harm check, FedAvg of the accepted), without a network or a chain. Each trial
draws its own initial model and each worker its own training seed, as nodes with different
addresses do.

    python -m bench.work_rounds [--trials 40] [--workers 2] [--samples 500] [--lr 0.02]
                                [--model mnist_2nn] [--rounds 3] [--data-root DIR]

Every trial runs twice in the same run: workers submitting their last SGD iterate, and
workers averaging the last --average-tail of their steps (the node's default). It prints
each round that rejected an honest worker, with every update's judgement, and the counts of
both, their ratio last; `--lr 0.05` is the in-process localnet's default, 0.02 the node's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from node.config import DataConfig, TrainingConfig
from node.datasets import default_data_root, load_validation_set, load_worker_shard
from node.models import build_model, train_config
from protocol import verdict as verdicts
from protocol import work as paid_work
from protocol.aggregation.rule import AggregationRule
from protocol.data import Dataset, to_tensors
from protocol.training import train_local

StateDict = dict[str, torch.Tensor]
THRESHOLD = 300_000  # the in-process work test's qualification threshold


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.work_rounds")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="honest workers (plus one free rider)")
    parser.add_argument("--samples", type=int, default=500, help="training samples per worker")
    parser.add_argument("--lr", type=float, default=TrainingConfig().lr)
    parser.add_argument("--model", default="mnist_2nn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--average-tail", type=float, default=TrainingConfig().average_tail)
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    return parser.parse_args(argv)


class Task:
    def __init__(self, args: argparse.Namespace) -> None:
        parts = args.workers + 1
        data = DataConfig(root=args.data_root, num_parts=parts, seed=7, max_samples=args.samples * parts)
        self.shards = [
            load_worker_shard(DataConfig(**{**vars(data), "part_index": i})) for i in range(args.workers)
        ]
        self.images, self.labels = to_tensors(load_validation_set(data, args.validation))
        self.model = args.model
        self.config = TrainingConfig(lr=args.lr, average_tail=args.average_tail)

    def with_average_tail(self, fraction: float) -> Task:
        """The same task, its workers averaging the last `fraction` of their steps."""
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, average_tail=fraction)
        return other

    def module(self, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        model = build_model(self.model)
        model.load_state_dict(state)
        return model

    def train(self, base: StateDict, shard: Dataset, seed: int) -> StateDict:
        model = self.module(base)
        images, labels = to_tensors(shard)
        train_local(model, images, labels, train_config(self.config, seed))
        return {name: t.detach().clone() for name, t in model.state_dict().items()}

    def measure(self, state: Mapping[str, torch.Tensor]) -> paid_work.Measured:
        return paid_work.measure(self.module(state), self.images, self.labels)


def run_trial(task: Task, trial: int, rounds: int) -> list[str]:
    """One task; a line for each round that rejected an honest worker."""
    rng = random.Random(trial)
    seeds = [rng.getrandbits(32) for _ in task.shards]
    base: StateDict = dict(build_model(task.model, seed=rng.getrandbits(16)).state_dict())
    previous: StateDict | None = None
    rule = AggregationRule()
    misses = []
    for number in range(1, rounds + 1):
        states = [task.train(base, shard, seed ^ number) for shard, seed in zip(task.shards, seeds, strict=True)]
        states.append(base)  # the free rider
        at_base = task.measure(base)
        measured = [task.measure(s) for s in states]
        judgements = paid_work.judge(
            [verdicts.flat_delta(s, base) for s in states],
            [
                paid_work.improvement(at_base.loss, task.measure(paid_work.stepped(s, base)).loss)
                for s in states
            ],
            None if previous is None else verdicts.flat_delta(base, previous),
            whole_gains=[paid_work.improvement(at_base.loss, m.loss) for m in measured],
            harms=[paid_work.class_harm(at_base, m) for m in measured],
        )
        working = paid_work.working_indices([m.accuracy for m in measured], judgements, THRESHOLD)
        rejected = [i for i in range(len(task.shards)) if i not in working]
        if rejected:
            verdict = [(j.quality, j.problem) for j in judgements]
            misses.append(f"trial {trial} round {number}: honest {rejected} rejected; {verdict}")
        counts = [len(task.shards[i]) for i in working]
        previous, base = base, rule([states[i] for i in working], counts) if working else base
    return misses


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    averaged = Task(args)
    tasks = {"last iterate": averaged.with_average_tail(0.0), f"tail {args.average_tail}": averaged}
    missed = dict.fromkeys(tasks, 0)
    for trial in range(args.trials):
        for name, task in tasks.items():
            for line in run_trial(task, trial, args.rounds):
                print(f"{name}: {line}", flush=True)
                missed[name] += 1
    rounds = args.trials * args.rounds
    for name, count in missed.items():
        print(
            f"{name}: {count} of {rounds} rounds rejected an honest worker "
            f"({args.workers} honest workers of {args.samples} samples + a free rider, "
            f"{args.model}, lr {args.lr})"
        )
    last, tail = missed.values()
    print(f"honest rejections, tail-averaged / last iterate: {tail} / {last}"
          + (f" = {tail / last:.2f}" if last else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
