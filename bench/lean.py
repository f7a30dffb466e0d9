"""How far each kind of update leans from the others' median (`protocol.work.leans`, what ALIE's
shift of every coordinate shows): --trials tasks of --rounds rounds, each with --workers
honest IID workers of --samples MNIST samples, honest workers with other settings (one of
--small-samples, one training 3 epochs, one 5, one at twice and one at half the learning
rate) and --attackers attackers of one kind per task (the kinds in turn), every round's
leans computed as the validators compute them, over all of the round's updates. Identical
updates (colluding ALIE's) count once, as the validators' copy check leaves one. The global
model is the FedAvg of the honest updates. No network, no chain.

    python -m bench.lean [--trials 18] [--rounds 8] [--workers 7] [--samples 500]
                         [--small-samples 125] [--attackers 3] [--lr 0.02]
                         [--source mnist|fashion-mnist|...] [--model mnist_2nn] [--data-root DIR]
                         [--seed 0]

It prints the CPU seconds `leans` took, against the agreement check's reference search
(`protocol.work.agreeing`) on the same deltas, then, per kind and for rounds up to 3 and after, how many updates, the lean's minimum,
10th percentile, median, 90th percentile and maximum, and how many lean over DOUBTFUL_LEAN
and up to MAX_LEAN either way (undecided) and over it (rejected).
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Sequence

import numpy as np
import torch

from bench import loss_lag
from bench.work_rounds import Task
from bench.work_rounds import parse_args as task_args
from node.attacks.spec import alie_z_max, parse_attack_spec
from protocol import verdict as verdicts
from protocol import work as paid_work
from protocol.aggregation.rule import AggregationRule
from protocol.data import Dataset

StateDict = dict[str, torch.Tensor]
KINDS = ("alie", "alie_colluding", "alie at 0.5 z", "alie_colluding at 0.5 z", "alie at 0.25 z", "alie_colluding at 0.25 z")
"""ALIE lone (each estimating from deltas it trains on parts of its shard) and colluding, at
z_max and at a fraction of it: the cheaper ways around the bound."""
SETTINGS = {"3 epochs": {"epochs": 3}, "5 epochs": {"epochs": 5}, "lr x2": {"lr_factor": 2.0}, "lr x0.5": {"lr_factor": 0.5}}
EARLY = loss_lag.EARLY


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return loss_lag.parse_args(argv, prog="python -m bench.lean", trials=18)


def attacked(task: Task, kind: str, base: StateDict, shards: Sequence[Dataset], seeds: Sequence[int],
             rng: np.random.Generator, workers: int) -> list[StateDict]:
    """The attackers' updates, identical ones once."""
    z = alie_z_max(workers, len(shards)) * (float(kind.split(" at ")[1].split()[0]) if " at " in kind else 1.0)
    if kind.startswith("alie_colluding"):
        return [loss_lag.colluding_alie(task, base, shards, seeds, z)]
    return loss_lag.by_spec(task, parse_attack_spec(f"alie:z={z}"), base, shards, seeds, rng)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    extra = len(SETTINGS) + 1
    task = Task(task_args([
        "--workers", str(args.workers + extra + args.attackers), "--samples", str(args.samples),
        "--lr", str(args.lr), "--data-root", str(args.data_root), "--source", args.source, "--model", args.model,
    ]))
    honest_shards = task.shards[: args.workers]
    small_shard = task.shards[args.workers]
    small = Dataset(small_shard.images[: args.small_samples], small_shard.labels[: args.small_samples], small_shard.spec)
    other_shards = task.shards[args.workers + 1 : args.workers + extra]
    attacker_shards = task.shards[args.workers + extra :]
    variants = {
        name: task.with_training(epochs=change.get("epochs", task.config.epochs), lr=task.config.lr * change.get("lr_factor", 1.0))
        for name, change in SETTINGS.items()
    }
    names = ["honest"] * args.workers + [f"honest, {args.small_samples} samples"] + [f"honest, {n}" for n in SETTINGS]
    claims = [args.samples] * args.workers + [args.small_samples] + [args.samples] * len(SETTINGS)
    found: dict[tuple[str, bool], list[float]] = collections.defaultdict(list)
    seconds = {"lean": 0.0, "agreement": 0.0}
    for trial in range(args.trials):
        kind = KINDS[trial % len(KINDS)]
        seeds, attack_rng, base = loss_lag.task_start(task, args.seed + trial, len(task.shards))
        rule = AggregationRule()
        for number in range(1, args.rounds + 1):
            updates = [task.train(base, shard, seed ^ number) for shard, seed in zip(honest_shards, seeds, strict=False)]
            updates.append(task.train(base, small, seeds[args.workers] ^ number))
            updates += [
                variant.train(base, shard, seeds[args.workers + 1 + k] ^ number)
                for k, (variant, shard) in enumerate(zip(variants.values(), other_shards, strict=True))
            ]
            attackers = attacked(
                task, kind, base, attacker_shards, [s ^ number for s in seeds[args.workers + extra :]],
                attack_rng, len(task.shards),
            ) if args.attackers else []
            deltas = {i: verdicts.flat_delta(state, base) for i, state in enumerate([*updates, *attackers])}
            started = time.process_time()
            leans = paid_work.leans(deltas)
            seconds["lean"] += time.process_time() - started
            started = time.process_time()
            paid_work.agreeing(deltas, list(deltas), paid_work.agreement_bound(deltas[0].numel()))
            seconds["agreement"] += time.process_time() - started
            late = number > EARLY
            for i, name in enumerate(names + [kind] * len(attackers)):
                if i not in leans:  # points against the others' median: not measured
                    print(f"task {trial} round {number}: {name} (update {i}) not measured", flush=True)
                    continue
                found[(name, late)].append(leans[i] / paid_work.SCALE)
            base = rule(updates, claims)
        print(f"task {trial} ({kind}): final validation accuracy {task.measure(base).accuracy:.3f}", flush=True)
    doubtful = paid_work.DOUBTFUL_LEAN / paid_work.SCALE
    bound = paid_work.MAX_LEAN / paid_work.SCALE
    print(
        f"CPU of the lean check: {seconds['lean']:.2f} s over {args.trials * args.rounds} rounds, "
        f"{seconds['lean'] / seconds['agreement']:.2f}x the agreement check's reference search "
        f"({seconds['agreement']:.2f} s) on the same deltas"
    )
    print(f"lean from the others' median (undecided over +-{doubtful}, rejected over +-{bound}):")
    for (name, late), values in sorted(found.items()):
        undecided = sum(1 for v in values if doubtful < abs(v) <= bound)
        rejected = sum(1 for v in values if abs(v) > bound)
        print(
            f"{name}, rounds {'>' if late else '<='} {EARLY}: {loss_lag.spread(values, '+.3f')}; "
            f"undecided {undecided}, rejected {rejected}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
