"""How often the WORK policy rejects an honest worker in a small task: --trials tasks of
--rounds rounds, each with --workers honest IID workers of --samples MNIST samples and one
free rider (`--free-rider base` resubmits the base; `noise` adds Gaussian noise as long as
the honest median delta, so that no norm bound stops it), judged and aggregated as the validators do (`protocol.work.judge` with the
per-class harm check, FedAvg of the accepted), without a network or a chain. Each trial
draws its own initial model and each worker its own training seed, as nodes with different
addresses do.

    python -m bench.work_rounds [--trials 40] [--workers 2] [--samples 500] [--lr 0.02]
                                [--model mnist_2nn] [--rounds 3] [--free-rider base|noise]
                                [--data-root DIR] [--source mnist] [--partition iid|dirichlet|shards]
                                [--alpha 0.5]

`--partition dirichlet` splits the workers' data non-IID, where `work` does not hold (an
honest worker rejected in every round).

Every trial runs twice in the same run: workers submitting their last SGD iterate, and
workers averaging the last --average-tail of their steps (the node's default). It prints
each round that rejected an honest worker, with every update's judgement, and the counts of
both, their ratio last, then how many honest updates were undecided (neither averaged,
paid nor slashed: a round where nothing shows work measurably), what became of the free
rider and the mean validation accuracy of the last global model; `--lr 0.05` is the in-process localnet's default, 0.02 the node's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    parser.add_argument("--free-rider", choices=("base", "noise"), default="base")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--source", default="mnist", help="[data] source: a built-in name (fashion-mnist...)")
    parser.add_argument("--partition", choices=("iid", "dirichlet", "shards"), default="iid")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (--partition dirichlet)")
    return parser.parse_args(argv)


class Task:
    def __init__(self, args: argparse.Namespace) -> None:
        parts = args.workers + 1
        data = DataConfig(
            source=args.source, root=args.data_root, num_parts=parts, seed=7, max_samples=args.samples * parts,
            partition=args.partition, alpha=args.alpha,
        )
        self.shards = [
            load_worker_shard(DataConfig(**{**vars(data), "part_index": i})) for i in range(args.workers)
        ]
        self.images, self.labels = to_tensors(load_validation_set(data, args.validation))
        self.model = args.model
        self.config = TrainingConfig(lr=args.lr, average_tail=args.average_tail)

    def with_average_tail(self, fraction: float) -> Task:
        """The same task, its workers averaging the last `fraction` of their steps."""
        return self.with_training(average_tail=fraction)

    def with_training(self, **changes: Any) -> Task:
        """The same task, its workers training with `changes` to its TrainingConfig."""
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, **changes)
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


@dataclasses.dataclass
class Outcomes:
    misses: list[str] = dataclasses.field(default_factory=list)  # rounds rejecting honest work
    honest_undecided: int = 0  # honest updates the round could not judge
    final_accuracy: list[float] = dataclasses.field(default_factory=list)
    free_rider: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"rejected": 0, "undecided": 0, "paid": 0, "accepted unpaid": 0}
    )


def free_rider_state(base: StateDict, honest: Sequence[StateDict], how: str, seed: int) -> StateDict:
    if how == "base":
        return base
    deltas = [verdicts.flat_delta(s, base) for s in honest]
    scale = float(torch.stack([d.norm() for d in deltas]).median())
    generator = torch.Generator().manual_seed(seed)
    noise = {n: torch.randn(t.shape, generator=generator) for n, t in base.items() if t.is_floating_point()}
    length = float(torch.cat([t.flatten() for t in noise.values()]).norm())
    return {n: t + noise[n] * scale / length if n in noise else t for n, t in base.items()}


def run_trial(task: Task, trial: int, rounds: int, free_rider: str) -> Outcomes:
    """One task: each round that rejected an honest worker, and what the others got."""
    rng = random.Random(trial)
    seeds = [rng.getrandbits(32) for _ in task.shards]
    base: StateDict = dict(build_model(task.model, seed=rng.getrandbits(16)).state_dict())
    previous: StateDict | None = None
    rule = AggregationRule()
    outcomes = Outcomes()
    for number in range(1, rounds + 1):
        states = [task.train(base, shard, seed ^ number) for shard, seed in zip(task.shards, seeds, strict=True)]
        states.append(free_rider_state(base, states, free_rider, trial * 1000 + number))
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
            claims=[len(shard) for shard in task.shards] + [len(task.shards[0])],
        )
        working = paid_work.working_indices([m.accuracy for m in measured], judgements, THRESHOLD)
        rejected = [
            i for i in range(len(task.shards)) if i not in working and not judgements[i].undecided
        ]
        if rejected:
            verdict = [(j.quality, j.problem) for j in judgements]
            outcomes.misses.append(f"trial {trial} round {number}: honest {rejected} rejected; {verdict}")
        outcomes.honest_undecided += sum(1 for j in judgements[: len(task.shards)] if j.undecided)
        rider = len(task.shards)
        fate = (
            "undecided" if judgements[rider].undecided else "rejected" if rider not in working
            else "paid" if judgements[rider].quality else "accepted unpaid"
        )
        outcomes.free_rider[fate] += 1
        counts = [len(task.shards[i]) if i < len(task.shards) else len(task.shards[0]) for i in working]
        previous, base = base, rule([states[i] for i in working], counts) if working else base
    outcomes.final_accuracy.append(task.measure(base).accuracy)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    averaged = Task(args)
    tasks = {"last iterate": averaged.with_average_tail(0.0), f"tail {args.average_tail}": averaged}
    totals = {name: Outcomes() for name in tasks}
    for trial in range(args.trials):
        for name, task in tasks.items():
            outcomes = run_trial(task, trial, args.rounds, args.free_rider)
            for line in outcomes.misses:
                print(f"{name}: {line}", flush=True)
            total = totals[name]
            total.misses += outcomes.misses
            total.honest_undecided += outcomes.honest_undecided
            total.final_accuracy += outcomes.final_accuracy
            for fate, count in outcomes.free_rider.items():
                total.free_rider[fate] += count
    rounds = args.trials * args.rounds
    for name, total in totals.items():
        print(
            f"{name}: {len(total.misses)} of {rounds} rounds rejected an honest worker "
            f"({args.workers} honest workers of {args.samples} samples + a free rider "
            f"({args.free_rider}), {args.model}, lr {args.lr}); {total.honest_undecided} honest "
            f"updates undecided; the free rider's rounds: "
            + ", ".join(f"{count} {fate}" for fate, count in total.free_rider.items())
            + f"; mean final validation accuracy {sum(total.final_accuracy) / len(total.final_accuracy):.4f}"
        )
    last, tail = (len(total.misses) for total in totals.values())
    print(f"honest rejections, tail-averaged / last iterate: {tail} / {last}"
          + (f" = {tail / last:.2f}" if last else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
