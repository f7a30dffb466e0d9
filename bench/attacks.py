"""The attack matrix: every worker attack against every aggregation rule, 30% attackers.

    python -m bench.attacks [--attacks sign_flip,alie_colluding,...] [--rules fedavg,median:3]
                            [--rounds 2] [--workers 10] [--attackers 3] [--validators 3]
                            [--samples 500] [--validation 500] [--policy P] [--model mnist_2nn]
                            [--slack 1] [--key-seed 0] [--tabulate]
                            [--out bench-output/attacks] [--data-root DIR] [--parallel 1]
                            [--list]

Each cell is a whole task run in this process on the embedded chain (requester, --workers
workers, --validators validators, real libp2p hosts, real MNIST shards of --samples each),
the last --attackers workers running the attack, everyone else honest. Per rule an honest
task of the same size runs first (cells start in the order given), in the same process: the baseline every cell of that
rule is compared with. The task's terms are the localnet's defaults
(`node.localnet.configs.TaskDefaults`): its reward policy, slashes, threshold, tolerance,
so the bench measures whatever the localnet uses; --policy overrides the reward policy.
Every cell's node keys come from --key-seed, and a worker's training seed from its address,
so the honest workers of every cell train alike: a cell whose attackers were all rejected
ends where the honest run does (up to the order its updates were summed in), and a cell's
accuracy difference is the attack's, not another draw of seeds (-1: random keys).

Per cell: final test accuracy (the untouched MNIST test split, 10,000 images) minus the
honest run's, the attackers' earnings and slashes (ETH, summed over rounds), how many
attacker-rounds were slashed out of those attacked, the earnings per attacker beside those
per honest worker (what an `inflated_samples` claim buys), the honest parties' net (honest
workers' and validators' earnings minus their slashes), how many honest party-rounds went
unpaid and what honest parties lost, and, for `backdoor`, the trigger's success rate on
test digits that are not the target. Every worker should submit and every validator commit
in every round; the rounds a party missed are counted (an honest one's as unpaid too), so a
round lost to load reads as such, not as a clean one. `misses` names what keeps the cell
from issue 11's acceptance (`misses`). Writes `attacks.md` (the table) and
`attacks.png` (heatmaps) under --out and prints the table; each rule's nodes log to
`runs/<rule>/run.log`, each cell's settled rounds (every worker's kind, verdict, score,
pay and slash) go to `runs/<rule>/<cell>/rounds.json`; --tabulate writes the table and
heatmap of the cells finished so far from those (a run stopped part way). --parallel runs that many of a rule's tasks at once (each on its own
chain and hosts), which shortens a run whose tasks mostly wait on block times. --slack K
multiplies the phase deadlines and the block exchange's timeouts by K, for a loaded
machine: the bench measures what attacks earn and do to the model, not latency, and a
round lost to a starved event loop would read as missed, not as the attack's outcome.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trio

from node.attacks.backdoor import Trigger, attack_success_rate
from node.attacks.spec import alie_z_max, parse_attack, parse_attack_spec
from node.config import HOLDOUT
from node.datasets import default_data_root, load_builtin
from node.localnet.configs import TaskDefaults
from node.localnet.evaluation import TestSetEvaluator
from node.localnet.inprocess import InProcessResult, run_inprocess
from node.localnet.scenario import NodeBehaviour, Scenario
from node.models import build_model
from node.runtime import effects_network
from node.runtime import node as runtime_node
from protocol.codec import decode_state_dict
from protocol.data import Dataset, to_tensors

ETHER = 10**18

ATTACKS: dict[str, tuple[str, dict[str, float | int | str]]] = {
    # cell name -> (worker attack kind, its parameters); "attackers" / "workers" stand for
    # the run's counts and "z_max" for ALIE's (a "*F" after one: times F), omitted sized
    # parameters are filled as a scenario fills them
    "sign_flip": ("sign_flip", {}),
    "scaled": ("scaled", {}),
    "gaussian": ("gaussian", {}),
    "alie": ("alie", {}),
    "alie_colluding": ("alie", {"colluders": "attackers"}),
    # half of ALIE's shift (mostly undecided under the lean bound, protocol.work) and a
    # quarter (what it lets through)
    "alie_half": ("alie", {"z": "z_max*0.5"}),
    "alie_quarter": ("alie", {"z": "z_max*0.25"}),
    "ipm": ("ipm", {}),
    "ipm_colluding": ("ipm", {"colluders": "attackers"}),
    "label_flip": ("label_flip", {"source": 1, "target": 7}),
    # half the source class: what the per-class harm bound lets through (protocol.work)
    "label_flip_half": ("label_flip", {"source": 1, "target": 7, "fraction": 0.5}),
    "backdoor": ("backdoor", {}),
    # a tenth of the images triggered: what the loss-lag bound lets through (protocol.work)
    "backdoor_light": ("backdoor", {"fraction": 0.1}),
    # claiming a quarter of its samples, so that it is compared with no honest worker
    "backdoor_underclaimed": ("backdoor", {"claim": 0.25}),
    "shuffled_labels": ("shuffled_labels", {}),
    "noise": ("noise", {}),
    "free_rider": ("free_rider", {}),
    "free_rider_noise": ("free_rider_noise", {}),
    "copycat": ("copycat", {}),
    "inflated_samples": ("inflated_samples", {}),
    "inflated_scaled": ("inflated_samples", {"scale": "workers"}),
    # not in the default list: a second honest task, whose distance from the first is the
    # run-to-run noise every other cell's accuracy difference is read against (with one
    # --key-seed for both: what timing alone changes, the order updates are summed in)
    "honest_rerun": ("honest", {}),
}
DEFAULT_ATTACKS = tuple(name for name in ATTACKS if name != "honest_rerun")

RULES = ("fedavg", "median:F", "trimmed_mean:F", "multi_krum:F")  # F: the attacker count


@dataclass(frozen=True)
class Cell:
    attack: str
    rule: str
    accuracy: float
    attacker_earned: int  # wei, summed over rounds
    attacker_slashed: int
    attacker_rounds_slashed: int
    attacker_rounds: int  # rounds x attackers that submitted
    honest_net: int  # honest workers' and validators' earnings minus their slashes
    honest_unpaid: int  # honest worker-rounds and validator-rounds paid nothing (missed ones too)
    honest_missed: int  # honest worker-rounds with no submission, validator-rounds with no commit
    attacker_missed: int  # attacker-rounds with no submission
    honest_slashed: int  # wei an honest worker or validator lost
    per_attacker: int  # wei earned per attacking worker
    per_honest_worker: int  # wei earned (before slashes) per honest worker
    backdoor_success: float | None
    seconds: float
    # the attackers' highest pay per unit of consensus score over the honest workers' in
    # the same round, the largest over rounds (None: never paid): above 1, a claim bought pay
    pay_per_score: float | None = None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks")
    parser.add_argument(
        "--attacks", default=",".join(DEFAULT_ATTACKS), help="comma-separated cell names (--list)"
    )
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated; F = --attackers")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--key-seed", type=int, default=0,
        help="every cell's node keys, and so its workers' training seeds, derived from this, so "
        "that cells differ only by their attack (-1: random keys, each cell its own seeds)",
    )
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--attackers", type=int, default=3)
    parser.add_argument("--validators", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500, help="training samples per worker")
    parser.add_argument("--validation", type=int, default=500, help="validators' held-out samples")
    parser.add_argument("--policy", default=None, help="reward policy (default: the localnet's)")
    parser.add_argument("--model", default="mnist_2nn")
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--out", type=Path, default=Path("bench-output/attacks"))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per task at most")
    parser.add_argument("--parallel", type=int, default=1, help="tasks run at once (each rule's)")
    parser.add_argument(
        "--slack", type=float, default=1.0,
        help="multiply the phase deadlines and the block exchange's timeouts (a loaded machine)",
    )
    parser.add_argument("--list", action="store_true", help="list the attacks and rules, then exit")
    parser.add_argument(
        "--tabulate", action="store_true",
        help="write the table and heatmap of the cells already finished under --out, run nothing",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.slack <= 20:
        parser.error(f"--slack must be 1..20, got {args.slack}")
    if not 1 <= args.attackers < args.workers:
        parser.error(f"--attackers must be 1..{args.workers - 1}, got {args.attackers}")
    unknown = [a for a in _names(args.attacks) if a not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s) {unknown}; known: {', '.join(ATTACKS)}")
    return args


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def worker_kinds(attack: str, workers: int, attackers: int) -> tuple[str, ...]:
    """Every worker's [behaviour] worker: the last `attackers` run `attack`, sized as a
    localnet scenario would size it (boost = workers, ALIE's z_max for this count)."""
    kind, given = ATTACKS[attack]
    counts: dict[str, float] = {"attackers": attackers, "workers": workers}
    if kind == "alie":
        counts["z_max"] = alie_z_max(workers, attackers)
    raw = {key: _sized(value, counts) for key, value in given.items()}
    spec = parse_attack(kind, raw, allow_sized=True)
    behaviours = tuple(
        NodeBehaviour("worker", index, kind, spec) for index in range(workers - attackers, workers)
    )
    scenario = Scenario(source=f"bench.attacks cell {attack}", behaviours=behaviours)
    return scenario.resolve(workers, 1).worker_kinds


def _sized(value: float | int | str, counts: dict[str, float]) -> float | int:
    """A cell's parameter: a number, or a count's name with an optional "*factor"."""
    if not isinstance(value, str):
        return value
    name, _, factor = value.partition("*")
    return counts[name] * float(factor) if factor else counts[name]


def task_terms(args: argparse.Namespace, rule: str, output: Path) -> dict[str, Any]:
    """The localnet's [task] for this size, with this rule (and --policy when given)."""
    terms = TaskDefaults(
        rounds=args.rounds,
        workers=args.workers,
        validators=args.validators,
        model=args.model,
        validation=HOLDOUT,
        validation_samples=args.validation,
    ).section(output)
    terms["aggregator"] = rule
    if args.policy is not None:
        terms["reward_policy"] = args.policy
    for phase in ("training_seconds", "commit_seconds", "reveal_seconds"):
        terms[phase] = round(terms[phase] * args.slack)
    return terms


def slackened_exchange(slack: float) -> None:
    """Give every node of this process `slack` times the block exchange's patience (a
    peer's silence, a request's arrival, a dial, a provider lookup, a whole blob's fetch).
    The nodes share one
    event loop: on a loaded machine a peer that is merely waiting for its turn on the CPU
    reads as silent, is dropped as a provider, and a round is lost to load, not to the
    attack the cell measures. A leaf's override of the node's module constant."""
    if slack == 1:
        return
    limits = runtime_node.EXCHANGE_LIMITS
    runtime_node.EXCHANGE_LIMITS = dataclasses.replace(
        limits,
        read_timeout_s=limits.read_timeout_s * slack,
        request_arrival_s=limits.request_arrival_s * slack,
        connect_timeout_s=limits.connect_timeout_s * slack,
        find_providers_timeout_s=limits.find_providers_timeout_s * slack,
    )
    effects_network.FETCH_TIMEOUT_S *= slack


async def run_task(
    args: argparse.Namespace, kinds: Sequence[str], rule: str, folder: Path
) -> InProcessResult:
    return await run_inprocess(
        folder,
        args.data_root,
        workers=args.workers,
        validators=args.validators,
        rounds=args.rounds,
        model=args.model,
        # the training split is cut to this, then the holdout drawn and the rest shared
        max_samples=args.samples * args.workers + args.validation,
        validation_samples=args.validation,
        worker_behaviours=kinds,
        task=task_terms(args, rule, folder / "final-model.bin"),
        key_seed=None if args.key_seed < 0 else args.key_seed,
        data={"holdout_samples": args.validation},
        timeout_s=args.timeout,
    )


async def run_rule(
    args: argparse.Namespace, rule: str, attacks: Sequence[str], test: TestSplit
) -> list[Cell]:
    """The honest task and one per attack under `rule`, --parallel of them at a time (each
    its own embedded chain and hosts; colluders pool by attack and base, so two cells of
    one attack never run at once)."""
    limiter = trio.CapacityLimiter(args.parallel)
    cells: dict[str, Cell] = {}

    async def cell(attack: str | None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        name = attack or "honest"
        kinds = ("honest",) * args.workers
        if attack is not None:
            kinds = worker_kinds(attack, args.workers, args.attackers)
        folder = args.out / "runs" / rule.replace(":", "-") / name
        if folder.exists():
            shutil.rmtree(folder)
        async with limiter:
            task_status.started()  # the next cell queues only now: cells run in list order
            started = time.monotonic()
            result = await run_task(args, kinds, rule, folder)
            seconds = time.monotonic() - started
        cells[name] = done = await trio.to_thread.run_sync(
            measure, result, kinds, test, folder / "final-model.bin", name, rule, seconds
        )
        record = {"cell": asdict(done), "kinds": list(kinds), "rounds": round_record(result, kinds)}
        (folder / "rounds.json").write_text(json.dumps(record, indent=1))
        print(
            f"{rule:>16} {name:>17}: test accuracy {100 * done.accuracy:.2f}%, attackers "
            f"earned {done.attacker_earned / ETHER:.3f} ETH, slashed "
            f"{done.attacker_slashed / ETHER:.3f} ETH, honest net "
            f"{done.honest_net / ETHER:.3f} ETH, missed rounds {done.honest_missed} honest "
            f"{done.attacker_missed} attackers ({done.seconds:.0f} s)",
            flush=True,
        )

    async with trio.open_nursery() as nursery:
        for attack in [None, *attacks]:
            await nursery.start(cell, attack)
    return [cells[name] for name in ["honest", *attacks]]


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """The nodes' INFO log of one task, in its folder (the terminal gets the summary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        handler.close()


class TestSplit:
    """MNIST's test split, loaded once: a final model's accuracy and a trigger's success."""

    __test__ = False  # not a pytest class

    def __init__(self, data_root: Path, model: str) -> None:
        self.model = model
        self.evaluator = TestSetEvaluator(data_root, model)
        self.raw = load_builtin("mnist", "test", data_root)

    def accuracy(self, final_model: Path) -> float:
        return self.evaluator.evaluate_file(final_model).accuracy

    def backdoor_success(self, final_model: Path, size: int, target: int) -> float:
        module = build_model(self.model)
        module.load_state_dict(decode_state_dict(final_model.read_bytes(), self.evaluator.spec))
        module.eval()

        def predict(images: np.ndarray) -> np.ndarray:
            labels = np.zeros(len(images), np.int64)
            inputs, _ = to_tensors(Dataset(images, labels, self.raw.spec))
            with torch.no_grad():
                return module(inputs).argmax(dim=1).numpy()

        trigger = Trigger.for_images(self.raw.images, size)
        return attack_success_rate(predict, self.raw.images, self.raw.labels, trigger, target)


def measure(
    result: InProcessResult,
    kinds: Sequence[str],
    test: TestSplit,
    final_model: Path,
    name: str,
    rule: str,
    seconds: float,
) -> Cell:
    """The cell's numbers from the chain's round results. Every worker is expected to
    submit and every validator to commit in every round (each sits on every committee:
    committee_size = validators, equal stakes), so a party missing from a round's lists is
    counted as missed, and an honest one as unpaid: a round lost to load or a fault must
    not read as a clean one."""
    addresses = [status.address.lower() for status in result.workers]
    attackers = {addresses[i] for i, kind in enumerate(kinds) if kind != "honest"}
    validators = [status.address.lower() for status in result.validators]
    earned = slashed = rounds_slashed = attacked = honest_net = unpaid = honest_lost = 0
    honest_workers_earned = honest_missed = attacker_missed = 0
    pay_per_score: float | None = None
    for r in result.rounds:
        submitted = [address.lower() for address in r.workers]
        pay_per_score = _higher(pay_per_score, _pay_per_score_ratio(submitted, attackers, r))
        for address, paid, lost in zip(submitted, r.worker_payouts, r.worker_slashes, strict=True):
            if address in attackers:
                earned, slashed, attacked = earned + paid, slashed + lost, attacked + 1
                rounds_slashed += lost > 0
            else:
                honest_net, honest_lost = honest_net + paid - lost, honest_lost + lost
                unpaid += paid == 0
                honest_workers_earned += paid
        absent = [address for address in addresses if address not in submitted]
        attacker_missed += sum(address in attackers for address in absent)
        honest_missed += sum(address not in attackers for address in absent)
        committed = [address.lower() for address in r.validators]
        for paid, lost in zip(r.validator_payouts, r.validator_slashes, strict=True):
            honest_net, honest_lost = honest_net + paid - lost, honest_lost + lost
            unpaid += paid == 0
        honest_missed += sum(address not in committed for address in validators)
    unpaid += honest_missed
    success = None
    backdoors = [parse_attack_spec(kind) for kind in kinds if kind.startswith("backdoor")]
    if backdoors:
        spec = backdoors[0]
        success = test.backdoor_success(final_model, int(spec["size"]), int(spec["target"]))
    return Cell(
        name, rule, test.accuracy(final_model), earned, slashed, rounds_slashed, attacked,
        honest_net, unpaid, honest_missed, attacker_missed, honest_lost,
        earned // max(1, len(attackers)),
        honest_workers_earned // max(1, len(kinds) - len(attackers)), success, seconds,
        pay_per_score,
    )


def _pay_per_score_ratio(submitted: Sequence[str], attackers: set[str], r: Any) -> float | None:
    """The attackers' highest wei per unit of consensus score in round `r` over the honest
    workers' highest (None: no paid attacker, or no paid honest worker, to compare)."""
    def best(side: bool) -> float | None:
        rates = [
            paid / score
            for address, paid, score in zip(submitted, r.worker_payouts, r.consensus_scores, strict=True)
            if (address in attackers) == side and paid > 0 and score > 0
        ]
        return max(rates) if rates else None

    attacker, honest = best(True), best(False)
    return None if attacker is None or honest is None else attacker / honest


def _higher(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def round_record(result: InProcessResult, kinds: Sequence[str]) -> list[dict[str, Any]]:
    """Each finalized round as the chain settled it, every worker named by its index and
    kind: what the cell's numbers are summed from, kept beside the run's log."""
    index = {status.address.lower(): i for i, status in enumerate(result.workers)}
    names = {status.address.lower(): status.name for status in result.validators}
    records = []
    for number, r in enumerate(result.rounds, start=1):
        workers = [index[address.lower()] for address in r.workers]
        records.append({
            "round": number,
            "workers": _rows(
                ("worker", "kind", "accepted", "score", "paid_wei", "slashed_wei"), workers,
                [kinds[i] for i in workers], r.accepted, r.consensus_scores, r.worker_payouts,
                r.worker_slashes,
            ),
            "validators": _rows(
                ("validator", "revealed", "agreed", "paid_wei", "slashed_wei"),
                [names.get(address.lower(), address) for address in r.validators], r.revealed,
                r.agreed, r.validator_payouts, r.validator_slashes,
            ),
            "consensus_accuracy": r.consensus_accuracy,
        })
    return records


def _rows(keys: Sequence[str], *columns: Sequence[Any]) -> list[dict[str, Any]]:
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]


def misses(cell: Cell, honest: Cell) -> list[str]:
    """What keeps a cell from issue 11's acceptance: accuracy within 1 point of the honest
    run, every attacker-round slashed and unpaid (an honestly training `inflated_samples`
    worker: paid no more per unit of quality than an honest worker, so its claim bought
    nothing), every honest party paid every round and
    never slashed, a backdoor's success under 10%; and a party that missed a round (no
    submission, no commit: the run, not the attack, failed there)."""
    found = []
    if cell.attack != "honest" and 100 * (cell.accuracy - honest.accuracy) < -1:
        found.append("accuracy")
    if cell.attack in ("honest", "honest_rerun"):
        pass
    elif cell.attack == "inflated_samples":
        # the contract pays clipped claim x score: a claim that buys nothing leaves every
        # paid worker the same wei per unit of score (up to integer division)
        if cell.pay_per_score is not None and cell.pay_per_score > 1 + 1e-9:
            found.append("overpaid")
    else:
        if cell.attacker_earned > 0:
            found.append("attackers paid")
        if cell.attacker_rounds_slashed < cell.attacker_rounds:
            found.append("attackers unslashed")
    if cell.attacker_missed:
        found.append("attackers missed rounds")
    if cell.honest_missed:
        found.append("honest missed rounds")
    if cell.honest_unpaid - cell.honest_missed or cell.honest_slashed:
        found.append("honest unpaid/slashed")
    if cell.backdoor_success is not None and cell.backdoor_success >= 0.10:
        found.append("backdoor")
    return found


def table(cells: Sequence[Cell], honest: Mapping[str, Cell]) -> str:
    lines = [
        "| attack | rule | test acc | Δ acc (pts) | attackers earned (ETH) | attackers slashed "
        "(ETH) | attacker-rounds slashed | per attacker / per honest worker (ETH) | honest net "
        "(ETH) | honest unpaid | honest slashed (ETH) | missed rounds honest / attackers "
        "| backdoor success | misses | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        delta = 100 * (cell.accuracy - honest[cell.rule].accuracy)
        backdoor = "" if cell.backdoor_success is None else f"{100 * cell.backdoor_success:.1f}%"
        slashed_rounds = f"{cell.attacker_rounds_slashed}/{cell.attacker_rounds}"
        lines.append(
            f"| {cell.attack} | {cell.rule} | {100 * cell.accuracy:.2f}% | {delta:+.2f} "
            f"| {cell.attacker_earned / ETHER:.3f} | {cell.attacker_slashed / ETHER:.3f} "
            f"| {'' if cell.attack == 'honest' else slashed_rounds} "
            f"| {cell.per_attacker / ETHER:.3f} / {cell.per_honest_worker / ETHER:.3f} "
            f"| {cell.honest_net / ETHER:.3f} | {cell.honest_unpaid} "
            f"| {cell.honest_slashed / ETHER:.3f} "
            f"| {cell.honest_missed} / {cell.attacker_missed} | {backdoor} "
            f"| {', '.join(misses(cell, honest[cell.rule])) or 'none'} "
            f"| {cell.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def heatmap(cells: Sequence[Cell], honest: Mapping[str, Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(c.attack for c in cells if c.attack != "honest"))
    rules = list(dict.fromkeys(c.rule for c in cells))
    if not attacks:
        return
    by = {(c.attack, c.rule): c for c in cells}
    panels: list[tuple[str, Callable[[Cell], float], str]] = [
        ("test accuracy - honest (points)", lambda c: 100 * (c.accuracy - honest[c.rule].accuracy), "RdYlGn"),
        ("attackers' earnings (ETH)", lambda c: c.attacker_earned / ETHER, "Reds"),
        ("attackers' slashes (ETH)", lambda c: c.attacker_slashed / ETHER, "Greens"),
        ("honest parties' net (ETH)", lambda c: c.honest_net / ETHER, "Blues"),
    ]
    width = 2 + len(panels) * (1.5 + 1.1 * len(rules))
    figure, axes = plt.subplots(1, len(panels), figsize=(width, 1.5 + 0.4 * len(attacks)))
    for axis, (title, value, colours) in zip(np.atleast_1d(axes), panels, strict=True):
        grid = np.array(
            [[value(by[a, r]) if (a, r) in by else np.nan for r in rules] for a in attacks]
        )
        span = max(1.0, float(np.nanmax(np.abs(grid))))
        low = -span if colours == "RdYlGn" else min(0.0, float(np.nanmin(grid)))  # 0 is white
        axis.imshow(grid, cmap=colours, aspect="auto", vmin=low, vmax=span)
        axis.set_title(title, fontsize=9)
        axis.set_xticks(range(len(rules)), rules, rotation=30, fontsize=8)
        axis.set_yticks(range(len(attacks)), attacks, fontsize=8)
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                axis.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("attacks:", ", ".join(ATTACKS))
        print("rules:", ", ".join(RULES), "(F = --attackers)")
        return 0
    if args.tabulate:
        finished = recorded_cells(args.out)
        if not finished:
            print(f"no finished cell under {args.out / 'runs'}", file=sys.stderr)
            return 1
        write_results(args.out, finished)
        return 0
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.WARNING)  # run_log raises the root level for its file only
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", handlers=[terminal])
    rules = [rule.replace("F", str(args.attackers)) for rule in _names(args.rules)]
    attacks = _names(args.attacks)
    args.out.mkdir(parents=True, exist_ok=True)
    slackened_exchange(args.slack)
    test = TestSplit(args.data_root, args.model)
    policy = task_terms(args, "fedavg", args.out)["reward_policy"]
    print(
        f"{args.workers} workers ({args.attackers} attacking), {args.validators} validators, "
        f"{args.rounds} rounds, {args.samples} samples each, policy {policy}, slack "
        f"{args.slack:g}: "
        f"{len(rules)} rules x ({len(attacks)} attacks + honest) tasks",
        flush=True,
    )
    cells: list[Cell] = []
    for rule in rules:
        with run_log(args.out / "runs" / rule.replace(":", "-") / "run.log"):
            cells += trio.run(run_rule, args, rule, attacks, test)
    write_results(args.out, cells)
    return 0


def recorded_cells(out: Path) -> list[Cell]:
    """The cells a run under `out` has finished so far (each rule's honest one first), read
    back from their rounds.json."""
    cells = []
    for folder in sorted((out / "runs").glob("*/")):
        records = {path.parent.name: path for path in folder.glob("*/rounds.json")}
        order = sorted(records, key=lambda name: (name != "honest", list(ATTACKS).index(name)
                                                  if name in ATTACKS else len(ATTACKS)))
        cells += [Cell(**json.loads(records[name].read_text())["cell"]) for name in order]
    return cells


def write_results(out: Path, cells: Sequence[Cell]) -> None:
    honest = {cell.rule: cell for cell in cells if cell.attack == "honest"}
    cells = [cell for cell in cells if cell.rule in honest]  # a rule's baseline comes first
    text = table(cells, honest)
    (out / "attacks.md").write_text(text)
    heatmap(cells, honest, out / "attacks.png")
    print(text)
    print(f"wrote {out / 'attacks.md'} and {out / 'attacks.png'}")


if __name__ == "__main__":
    sys.exit(main())
