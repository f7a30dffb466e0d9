"""How far each kind of update's validation loss lags the round's (`protocol.work.lagging`):
--trials tasks of --rounds rounds, each with --workers honest IID workers of --samples MNIST
samples, one honest worker of --small-samples claiming what it has, and --attackers
attackers of one kind per task (the kinds in turn), judged as the validators judge the lag:
an update's whole validation loss minus the median loss of the round's updates claiming no
more samples (validators leave updates that another check rejects out of that median; here
every update is in it, which raises the median a little where attackers lag, and so lowers
every lag a little). The global model is the FedAvg of the honest updates, so every task
reaches the bases a defended task reaches. No network, no chain.

    python -m bench.loss_lag [--trials 60] [--rounds 8] [--workers 7] [--samples 500]
                             [--small-samples 125] [--attackers 3] [--lr 0.02]
                             [--source mnist|fashion-mnist|...] [--model mnist_2nn] [--data-root DIR]
                             [--seed 0]

It prints, per kind and for rounds up to 3 and after, how many updates, the lag's minimum,
10th percentile, median, 90th percentile and maximum (nats), and how many lag over
DOUBTFUL_LAG and up to MAX_LOSS_LAG (undecided) and over it (rejected); the small worker's lag
is also given as if it claimed --samples. --attackers 0 runs honest workers only. Then, per
kind, the most each update's loss on one class exceeds the median loss on that class of the
updates claiming no more, over that class's bound (`protocol.work.class_loss_bound`): how far a
peer-relative per-class check would separate a flipped class from honest work.
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.work_quality import numpy_state, torch_state
from bench.work_rounds import Task
from bench.work_rounds import parse_args as task_args
from node.attacks.alie import alie
from node.attacks.spec import AttackSpec, alie_z_max, parse_attack_spec
from node.attacks.worker import attacked_update
from node.config import TrainingConfig
from node.datasets import default_data_root
from node.models import build_model
from protocol import work as paid_work
from protocol.aggregation.rule import AggregationRule
from protocol.data import Dataset

StateDict = dict[str, torch.Tensor]
KINDS = {
    "backdoor 30%": "backdoor:target=0,fraction=0.3,size=4",
    "backdoor 10%": "backdoor:target=0,fraction=0.1,size=4",
    "label_flip": "label_flip:source=1,target=7",
    "label_flip_half": "label_flip:source=1,target=7,fraction=0.5",
    "alie_colluding": "alie",
}
EARLY = 3  # rounds counted as early: from the random initial weights to a trained base


def parse_args(
    argv: Sequence[str] | None, prog: str = "python -m bench.loss_lag", trials: int = 60
) -> argparse.Namespace:
    """This bench's options (also `bench.lean`'s, with its `prog` and `trials`)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--trials", type=int, default=trials)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=7, help="honest workers of --samples")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--small-samples", type=int, default=125)
    parser.add_argument("--attackers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=TrainingConfig().lr)
    parser.add_argument("--seed", type=int, default=0, help="the first task's seed (then +1 a task)")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--source", default="mnist", help="[data] source: a built-in name (fashion-mnist...)")
    parser.add_argument("--model", default="mnist_2nn")
    return parser.parse_args(argv)


def lags(losses: Sequence[float], claims: Sequence[int]) -> list[float]:
    """Each loss minus the median loss of the updates claiming no more samples (nats)."""
    return [
        loss - statistics.median(other for other, claim in zip(losses, claims, strict=True) if claim <= claims[i])
        for i, loss in enumerate(losses)
    ]


def attacked(task: Task, spec: str, base: StateDict, shards: Sequence[Dataset], seeds: Sequence[int],
             rng: np.random.Generator, colluders: int, workers: int) -> list[StateDict]:
    if spec == "alie":  # colluding: each submits the same shifted mean
        return [colluding_alie(task, base, shards, seeds, alie_z_max(workers, colluders))] * len(shards)
    return by_spec(task, parse_attack_spec(spec), base, shards, seeds, rng)


def colluding_alie(task: Task, base: StateDict, shards: Sequence[Dataset], seeds: Sequence[int],
                   z: float) -> StateDict:
    """mean - z * std of the colluders' honest updates, trained on `shards`."""
    honest = [numpy_state(task.train(base, shard, seed)) for shard, seed in zip(shards, seeds, strict=True)]
    return torch_state(alie(numpy_state(base), honest, z))


def task_start(task: Task, seed: int, workers: int) -> tuple[list[int], np.random.Generator, StateDict]:
    """A task's workers' training seeds, its attackers' generator and its initial model."""
    rng = random.Random(seed)
    seeds = [rng.getrandbits(32) for _ in range(workers)]
    return seeds, np.random.default_rng(seed), dict(build_model(task.model, seed=rng.getrandbits(16)).state_dict())


def by_spec(task: Task, spec: AttackSpec, base: StateDict, shards: Sequence[Dataset], seeds: Sequence[int],
            rng: np.random.Generator) -> list[StateDict]:
    """Each attacker's update under `spec`, trained on its shard with its seed."""
    def trainer(seed: int):  # noqa: ANN202 - the attack's Train
        return lambda data: numpy_state(task.train(base, data, seed))

    return [
        torch_state(attacked_update(spec, numpy_state(base), shard, trainer(seed), rng))
        for shard, seed in zip(shards, seeds, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    task = Task(task_args([
        "--workers", str(args.workers + 1), "--samples", str(args.samples), "--lr", str(args.lr),
        "--data-root", str(args.data_root), "--source", args.source, "--model", args.model,
    ]))
    honest_shards, last = task.shards[: args.workers], task.shards[args.workers]
    small = Dataset(last.images[: args.small_samples], last.labels[: args.small_samples], last.spec)
    attacker_shards = [honest_shards[i % args.workers] for i in range(args.attackers)]
    claims = [args.samples] * args.workers + [args.small_samples] + [args.samples] * args.attackers
    overclaimed = [*claims[: args.workers], args.samples, *claims[args.workers + 1 :]]
    found: dict[tuple[str, bool], list[float]] = collections.defaultdict(list)
    classes: dict[tuple[str, bool], list[float]] = collections.defaultdict(list)
    names = list(KINDS)
    for trial in range(args.trials):
        kind = names[trial % len(names)]
        seeds, attack_rng, base = task_start(task, args.seed + trial, args.workers + 1 + args.attackers)
        rule = AggregationRule()
        for number in range(1, args.rounds + 1):
            honest = [task.train(base, shard, seed ^ number) for shard, seed in zip(honest_shards, seeds, strict=False)]
            honest.append(task.train(base, small, seeds[args.workers] ^ number))
            attackers = attacked(
                task, KINDS[kind], base, attacker_shards, [s ^ number for s in seeds[args.workers + 1 :]],
                attack_rng, args.attackers, args.workers + 1 + args.attackers,
            ) if args.attackers else []
            each = [task.measure(state) for state in [*honest, *attackers]]
            losses = [m.loss for m in each]
            lag = lags(losses, claims)
            shares = class_lag_shares(each, claims)
            late = number > EARLY
            classes[("honest", late)] += shares[: args.workers]
            classes[(f"honest, {args.small_samples} samples", late)].append(shares[args.workers])
            classes[(kind, late)] += shares[args.workers + 1 :]
            found[("honest", late)] += lag[: args.workers]
            found[(f"honest, {args.small_samples} samples", late)].append(lag[args.workers])
            found[(f"honest, {args.small_samples} samples claiming {args.samples}", late)].append(
                lags(losses, overclaimed)[args.workers]
            )
            found[(kind, late)] += lag[args.workers + 1 :]
            base = rule(honest, claims[: args.workers + 1])
        print(f"task {trial} ({kind}): final validation accuracy {task.measure(base).accuracy:.3f}", flush=True)
    doubtful = paid_work.DOUBTFUL_LAG / paid_work.SCALE
    bound = paid_work.MAX_LOSS_LAG / paid_work.SCALE
    print(
        "lag of the validation loss behind the median of updates claiming no more (nats; "
        f"undecided over {doubtful}, rejected over {bound}):"
    )
    for (kind, late), values in sorted(found.items()):
        if not values:  # --attackers 0
            continue
        undecided = sum(1 for v in values if doubtful < v <= bound)
        rejected = sum(1 for v in values if v > bound)
        print(
            f"{kind}, rounds {'>' if late else '<='} {EARLY}: {spread(values, '.3f')}; "
            f"undecided {undecided}, rejected {rejected}"
        )
    print("largest class lag behind the median of updates claiming no more, x that class's bound:")
    for (kind, late), values in sorted(classes.items()):
        if values:
            print(f"{kind}, rounds {'>' if late else '<='} {EARLY}: {spread(values, '.3f')}")
    return 0


def class_lag_shares(each: Sequence[paid_work.Measured], claims: Sequence[int]) -> list[float]:
    """Per update, the most its loss on one class exceeds the median loss on that class of
    the updates claiming no more samples, over that class's `class_loss_bound`."""
    shares = []
    for i, measured in enumerate(each):
        pool = [m for m, claim in zip(each, claims, strict=True) if claim <= claims[i]]
        shares.append(max(
            (measured.class_losses[c] - statistics.median(m.class_losses[c] for m in pool))
            / (paid_work.class_loss_bound(count) / paid_work.SCALE)
            for c, count in enumerate(measured.class_counts) if count
        ))
    return shares


def spread(values: Sequence[float], form: str) -> str:
    """How many values, their minimum, 10th percentile, median, 90th percentile and maximum."""
    ordered = sorted(values)

    def at(fraction: float) -> str:
        return format(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], form)

    return (
        f"{len(ordered)} updates, min {at(0)} p10 {at(0.1)} median {at(0.5)} p90 {at(0.9)} "
        f"max {format(ordered[-1], form)}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
