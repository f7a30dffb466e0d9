"""Where each second of a localnet round goes, against the floor of the same work.

    python -m bench.round_profile [--workers 5] [--validators 3] [--rounds 4]
                                  [--output DIR] [--data-root DIR] [--max-samples N] [--flower]
    python -m bench.round_profile --from-logs DIR   # a localnet that ran with --output DIR

1. A localnet as `fl-node localnet` runs it (anvil, a bootstrap node, a requester, the
   workers and validators as separate processes on 127.0.0.1, MNIST), while every node's
   CPU time is read from /proc/<pid>/stat once a second.
2. The timing events the nodes log (`node.runtime.timing`: jobs, transactions, fetches,
   gossip, the chain logs each node saw and when) give, per round and phase, the critical
   path: the node the phase waited for last and what its time went to (averaging, training
   compute, sealing, storing, fetching, opening, scoring, transactions, and what is left:
   waiting for blocks and polls), the gossip latency of update announcements, and each
   role's CPU use per phase. Also the start-up (launch to round 1) and the tail.
3. In the same run, the floor: one centralized epoch over the union of the workers'
   shards (same model, batch size, learning rate, on all of this machine's cores), plus
   the validators' evaluation work alone (the runtime's own `judge_round` over as many
   sealed updates as there are workers, on the task's validation set, at the validators'
   thread count; V validators on C cores need V/C of it when V > C).
4. With --flower (after `bash scripts/flower-setup.sh`), in the same run, after the floor:
   Flower 1.42 doing the same work (bench.flower_baseline: a SuperLink and one SuperNode per
   worker, each standing for a localnet worker through its node.toml: the same shard, model,
   training settings and torch threads; FedAvg, the requester's validation set), on the
   same cores.

It prints each round's wall time and `round wall / floor`, and their mean; with --flower
also `fl-node round / Flower round`, round by round and for the means. A round's wall
time is from its opening to the next round's opening (the last round: to its
finalization): workers train the next round's update ahead while the committee judges
the round (protocol/state/worker.py), so rounds overlap, and the time between openings is
what a round costs. Each round also shows that overlap: how long the workers trained its
update before it opened, and how many submitted the update trained ahead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from bench.flower_baseline import DEFAULT_VENV, FlowerError, FlowerRun, check_venv, run_flower
from bench.flower_baseline import show as show_flower
from node.blocks import BlockStore
from node.blocks.unixfs import build_file_dag
from node.config import NodeConfig, load_config
from node.datasets import default_data_root, load_validation_set, load_worker_shard
from node.localnet.launcher import Localnet, LocalnetOptions
from node.localnet.scenario import Scenario
from node.models import build_model
from node.runtime import learning, timing
from node.runtime.driver import TRAIN_AHEAD_ENV
from node.runtime.effects_jobs import ReleasedUpdates, judge_round
from protocol.codec import encode_state_dict
from protocol.data import Dataset, to_tensors
from protocol.envelope import generate_keypair
from protocol.rewards import RewardPolicy
from protocol.state.actions import StartEvaluation
from protocol.state.records import GlobalModel, Update
from protocol.training import TrainConfig, train_local

PHASES = ("training", "commit", "reveal", "finalize")
TICKS = os.sysconf("SC_CLK_TCK")
CPU_FILE = "cpu-samples.json"


# --- the run -------------------------------------------------------------------------------


class StampedOut:
    """The launcher's output, echoed, each line remembered with when it was written."""

    def __init__(self, echo: TextIO) -> None:
        self.echo = echo
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.lines.append((time.time(), line))
        return self.echo.write(text)

    def flush(self) -> None:
        self.echo.flush()

    def first(self, prefix: str) -> float | None:
        return next((t for t, line in self.lines if line.startswith(prefix)), None)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuSampler:
    """Every node's (and anvil's, and the launcher's) CPU time, once a second."""

    def __init__(self, localnet: Localnet) -> None:
        self.localnet = localnet
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.loads: list[tuple[float, float]] = []  # the machine's 1-minute load average
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"samples": self.samples, "loads": self.loads}), encoding="utf-8")

    @classmethod
    def load_from(cls, path: Path) -> CpuSampler | None:
        if not path.exists():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        sampler = cls.__new__(cls)
        sampler.samples = [(t, s) for t, s in saved["samples"]]
        sampler.loads = [(t, load) for t, load in saved["loads"]]
        return sampler

    def used(self, start: float, end: float) -> float:
        """CPU seconds the network's processes (nodes, bootstrap, anvil; not the launcher,
        which scores each round's model on the test set for its table) used in [start, end]."""
        inside = [s for t, s in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        last, first = inside[-1], inside[0]
        return sum(last[n] - first.get(n, last[n]) for n in last if n != "launcher")

    def _pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.localnet.processes.processes.items() if p.running}
        if self.localnet.anvil is not None:
            pids["anvil"] = self.localnet.anvil.pid
        pids["launcher"] = os.getpid()
        return {name: pid for name, pid in pids.items() if pid is not None}

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            now = time.time()
            reading = {name: cpu_seconds(pid) for name, pid in self._pids().items()}
            self.samples.append((now, {n: s for n, s in reading.items() if s is not None}))
            self.loads.append((now, os.getloadavg()[0]))

    def share(self, name: str, start: float, end: float) -> float | None:
        """`name`'s CPU use over [start, end] in cores (1.0: one core busy throughout)."""
        inside = [(t, s[name]) for t, s in self.samples if start <= t <= end and name in s]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def load(self, start: float, end: float) -> float | None:
        inside = [load for t, load in self.loads if start <= t <= end]
        return statistics.mean(inside) if inside else None


# --- the nodes' timing events --------------------------------------------------------------


@dataclass
class Timeline:
    """Every node's timing events, and the phase boundaries of each round as first seen."""

    events: dict[str, list[dict[str, Any]]]
    boundaries: dict[int, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def read(cls, logs: Path) -> Timeline:
        events: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(logs.glob("*.log")):
            with open(path, encoding="utf-8", errors="replace") as handle:
                found = [e for e in map(timing.parse, handle) if e is not None]
            if found:
                events[path.stem] = found
        timeline = cls(events)
        timeline._find_boundaries()
        return timeline

    def _find_boundaries(self) -> None:
        for events in self.events.values():
            for event in events:
                if event["what"] != "chain":
                    continue
                for log in event["logs"]:
                    name = {
                        "RoundStarted": "training",
                        "RoundFinalized": "finalized",
                        "TaskTerminated": "terminated",
                    }.get(log["log"], log.get("phase"))
                    if name is None:
                        continue
                    seen = self.boundaries.setdefault(log["round"], {})
                    seen[name] = min(seen.get(name, event["at"]), event["at"])

    def rounds(self) -> list[int]:
        return sorted(r for r, b in self.boundaries.items() if "training" in b and "finalized" in b)

    def phases(self, round: int) -> list[tuple[str, float, float]]:
        """(phase, start, end) of a round; a phase that ended on its deadline (no log says
        when) is merged into the next one."""
        seen = self.boundaries[round]
        starts = zip((*PHASES, ""), ("training", "commit", "reveal", "finalizing", "finalized"), strict=True)
        marks = [(phase, seen[key]) for phase, key in starts if key in seen]
        return [(phase, start, end) for (phase, start), (_, end) in zip(marks, marks[1:], strict=False)]

    def spans(self, node: str, *whats: str, round: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.events.get(node, [])
            if e["what"] in whats and "start" in e
            and (round is None or e["round"] == round) and (kind is None or e.get("kind") == kind)
        ]  # fmt: skip

    def last_tx(self, kind: str, round: int) -> tuple[str, dict[str, Any]] | None:
        """The node whose `kind` transaction of `round` was confirmed last, and that span."""
        found = [(e["end"], node, e) for node in self.events for e in self.spans(node, "tx", round=round, kind=kind)]
        if not found:
            return None
        _, node, span = max(found, key=lambda f: f[0])
        return node, span

    def seen_at(self, node: str, log: str, round: int) -> float | None:
        for event in self.events.get(node, []):
            if event["what"] == "chain" and any(
                entry["log"] == log and entry["round"] == round for entry in event["logs"]
            ):
                return float(event["at"])
        return None


def covered(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] under the union of `spans`."""
    total, reach = 0.0, start
    for a, b in sorted(spans):
        a, b = max(a, reach), min(b, end)
        if b > a:
            total += b - a
            reach = b
    return total


@dataclass
class Step:
    label: str
    seconds: float


def critical_path(t: Timeline, round: int, phase: str, start: float, end: float) -> tuple[str, list[Step]]:
    """Who the phase waited for last, and where that node's time in the phase went. Spans
    overlap (a fetch runs beside training): each second goes to the first label, in this
    order, that covers it, so the work the phase is for claims its time first."""
    kind, labels = {
        "training": ("submitUpdate", ("train", "base", "Aggregate", "load data", "seal", "store", "tx", "fetch")),
        "commit": ("commitManifest", ("score", "open", "base", "Aggregate", "tx", "fetch", "measure")),
        "reveal": ("revealManifest", ("tx",)),
        "finalize": ("finalizeRound", ("tx",)),
    }[phase]
    last = t.last_tx(kind, round)
    if last is None:
        return "-", [Step("no such transaction", end - start)]
    node, _ = last
    steps: list[Step] = []
    taken: list[tuple[float, float]] = []
    opened = t.seen_at(node, "RoundStarted", round) if phase == "training" else None
    if opened is not None and opened > start:
        steps.append(Step("round seen", min(opened, end) - start))
        taken.append((start, opened))
    for label in labels:
        if label == "tx":
            chosen = t.spans(node, "tx", round=round, kind=kind)
        elif label == "Aggregate":
            chosen = t.spans(node, "Aggregate", round=round - 1)
        elif label == "fetch":
            chosen = t.spans(node, "fetch")
        else:
            chosen = t.spans(node, label, round=round)
        intervals = [(e["start"], e["end"]) for e in chosen]
        seconds = covered(intervals + taken, start, end) - covered(taken, start, end)
        if seconds > 0.05:
            name = {
                "tx": f"{kind} tx", "Aggregate": "averaging", "open": "decrypt+copy check",
                "measure": "measuring updates ahead",
            }.get(label, label)  # fmt: skip
            steps.append(Step(name, seconds))
            taken.extend(intervals)
    rest = (end - start) - covered(taken, start, end)
    steps.append(Step("waiting (blocks, polls, queues)", rest))
    return node, steps


@dataclass
class Ahead:
    """Training ahead for one round: each worker's seconds of it before the round opened
    (while the previous round was judged), and the workers that submitted that update."""

    before_opening: dict[str, float]
    submitted: list[str]


def trained_ahead(t: Timeline, round: int) -> Ahead:
    opened = t.boundaries[round]["training"]
    before: dict[str, float] = {}
    submitted = []
    for node in t.events:
        ahead = [e for e in t.spans(node, "train", round=round) if e.get("ahead")]
        if not ahead:
            continue
        before[node] = sum(max(0.0, min(e["end"], opened) - e["start"]) for e in ahead)
        trained_plainly = [e for e in t.spans(node, "train", round=round) if not e.get("ahead")]
        used = any("failed" not in e for e in ahead) and not trained_plainly
        if used and t.spans(node, "tx", round=round, kind="submitUpdate"):
            submitted.append(node)
    return Ahead(before, submitted)


def round_span(t: Timeline, round: int) -> tuple[float, float]:
    """When a round opened, and when the next one did (the last round: when it finalized)."""
    start = t.boundaries[round]["training"]
    following = t.boundaries.get(round + 1, {}).get("training")
    return start, following if following is not None else t.boundaries[round]["finalized"]


def gossip_latency(t: Timeline, round: int) -> list[float]:
    """Seconds from a worker's announcement publish to each node's receipt, in `round`."""
    published: dict[str, list[float]] = {}  # a worker announces again in each phase
    for events in t.events.values():
        for e in events:
            if e["what"] == "publish" and e.get("message") == "ModelAnnouncement" and e["round"] == round:
                published.setdefault(e["cid"], []).append(e["start"])
    latencies = []
    for events in t.events.values():
        for e in events:
            if e["what"] == "announced" and e["round"] == round:
                sent = [s for s in published.get(e["cid"], []) if s <= e["at"]]
                if sent:  # since the last publication before it arrived
                    latencies.append(e["at"] - max(sent))
    return latencies


# --- the floor -----------------------------------------------------------------------------


@dataclass
class Cost:
    wall: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds, all threads


@contextmanager
def measured() -> Iterator[Cost]:
    cost = Cost()
    wall, cpu = time.perf_counter(), time.process_time()
    yield cost
    cost.wall, cost.cpu = time.perf_counter() - wall, time.process_time() - cpu


def worker_configs(nodes: Path) -> list[NodeConfig]:
    count = len(list(nodes.glob("worker-*")))
    return [load_config(nodes / f"worker-{i}" / "node.toml") for i in range(count)]


def joined(shards: Sequence[Dataset]) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [to_tensors(s) for s in shards]
    return torch.cat([x for x, _ in tensors]), torch.cat([y for _, y in tensors])


def centralized_epoch(
    configs: Sequence[NodeConfig], model: str, threads: int
) -> tuple[Cost, torch.nn.Module, int]:
    """The cost of one epoch over every worker's shard on `threads` threads, the model it
    trained, and how many samples."""
    images, labels = joined([load_worker_shard(c.data) for c in configs])
    training = configs[0].training
    config = TrainConfig(
        epochs=training.epochs, batch_size=training.batch_size, lr=training.lr,
        momentum=training.momentum, prox_mu=0.0, seed=0,
    )  # fmt: skip
    net = build_model(model, seed=0)
    torch.set_num_threads(threads)
    with measured() as cost:
        train_local(net, images, labels, config)
    return cost, net, len(labels)


def evaluation_alone(
    requester: NodeConfig,
    trained: torch.nn.Module,
    model: str,
    workers: int,
    threads: int,
    folder: Path,
) -> Cost:
    """The cost of one validator's evaluation of a round (`judge_round`: open every update,
    the copy check, accuracies, leave-one-out, the aggregate) of `workers` sealed updates
    on the task's validation set. The round's base is `trained` and each update adds its
    own small noise to a step all of them share: each qualifies, none is a copy, and they
    agree with each other, as honest updates of one task do (updates of independent noise
    would not agree, and the WORK policy would measure each one's step too)."""
    validation = load_validation_set(
        requester.data, requester.task.validation_samples, requester.task.validation
    )
    task = b"\x42" * 20
    private, public = generate_keypair()
    crypto = learning.TaskCrypto(private, task)
    log = logging.LoggerAdapter(logging.getLogger("bench.round_profile"), {})
    torch.manual_seed(0)
    base = trained.state_dict()
    blobs = [encode_state_dict(base)]  # the round's base, then the sealed updates
    shared = {name: torch.randn_like(t) for name, t in base.items() if t.is_floating_point()}
    for _ in range(workers):
        state = {
            name: t + 0.01 * t.std() * (shared[name] + torch.randn_like(t)) if name in shared else t
            for name, t in base.items()
        }
        blobs.append(crypto.seal(encode_state_dict(state), [public]))
    with BlockStore(folder / "blocks") as store:
        roots = []
        for blob in blobs:
            root, blocks = build_file_dag(blob)
            roots.append(root)
            for block in blocks:
                store.put(block.cid, block.data)
        book = ReleasedUpdates(task, model, store, crypto)
        initial = roots[0]
        candidates = [
            Update(bytes([index + 1]) * 20, cid, 1000) for index, cid in enumerate(roots[1:])
        ]
        action = StartEvaluation(
            1, tuple(u.worker for u in candidates), tuple(candidates), "unused", GlobalModel(initial)
        )
        torch.set_num_threads(threads)
        costs = []
        for _ in range(2):  # the first also pays for lazy initialisation
            with measured() as cost:
                judge_round(
                    book, action, validation, requester.task.fixed("qualification_threshold"),
                    RewardPolicy[requester.task.reward_policy.upper()], log,
                )
            costs.append(cost)
    return min(costs, key=lambda c: c.wall)


# --- the report ----------------------------------------------------------------------------


def show_round(t: Timeline, sampler: CpuSampler | None, round: int, roles: dict[str, list[str]], out: TextIO) -> float:
    phases = t.phases(round)
    opened, closed = round_span(t, round)
    wall = closed - opened
    settled = phases[-1][2] - phases[0][1]
    until = "the next round opened" if round + 1 in t.boundaries else "it finalized (last round)"
    line = f"\nround {round}: {wall:.1f} s from its opening until {until}"
    if abs(settled - wall) > 0.5:  # the finalizing transaction opens the next round
        line += f"; opening to finalization {settled:.1f} s"
    print(line, file=out)
    for phase, start, end in phases:
        node, steps = critical_path(t, round, phase, start, end)
        path = ", ".join(f"{s.label} {s.seconds:.1f}" for s in steps)
        print(f"  {phase:<9} {end - start:5.1f} s  waited for {node}: {path}", file=out)
    ahead = trained_ahead(t, round)
    if ahead.before_opening:
        overlap = statistics.mean(ahead.before_opening.values())
        print(
            f"  ahead     {len(ahead.before_opening)} workers trained this round's update before "
            f"it opened, {overlap:.1f} s each on average (overlapping round {round - 1}'s "
            f"judging); {len(ahead.submitted)} submitted it",
            file=out,
        )
    latencies = sorted(gossip_latency(t, round))
    if latencies:
        print(
            f"  gossip    announcement to receipt: median {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms ({len(latencies)} receipts)",
            file=out,
        )
    shares = []
    for role, names in roles.items():
        if sampler is None:
            break
        cells = []
        for phase, start, end in phases:
            used = [s for s in (sampler.share(n, start, end) for n in names) if s is not None]
            cells.append(f"{phase} {100 * statistics.mean(used):.0f}%" if used else f"{phase} -")
        shares.append(f"{role} " + " ".join(cells))
    if shares and sampler is not None:
        print("  cpu/node  " + "; ".join(shares), file=out)
        shares_now = (sampler.share(n, opened, closed) for names in roles.values() for n in names)
        ours = sum(s for s in shares_now if s)
        print(
            f"  machine   the localnet's processes used {ours:.2f} of {len(os.sched_getaffinity(0))} "
            f"cores; load average {sampler.load(opened, closed) or 0:.1f} (other users' work included)",
            file=out,
        )
    return wall


def show_startup(t: Timeline, stamped: StampedOut, launched: float | None, out: TextIO) -> None:
    first = t.boundaries.get(1, {}).get("training")
    if first is None or launched is None:
        return
    marks = [
        ("chain up", stamped.first("anvil ")),
        ("bootstrap up", stamped.first("bootstrap ")),
        ("nodes started", stamped.first("started requester")),
    ]
    parts = [f"{name} +{at - launched:.1f}" for name, at in marks if at is not None]
    certify = [e["end"] - e["start"] for events in t.events.values() for e in events if e["what"] == "certify"]
    registers = [e["end"] for events in t.events.values() for e in events if e.get("kind") == "register"]
    joins = [e["end"] for events in t.events.values() for e in events if e.get("kind") == "join"]
    if registers:
        parts.append(f"all registered +{max(registers) - launched:.1f}")
    if joins:
        parts.append(f"all joined +{max(joins) - launched:.1f}")
    parts.append(f"round 1 open +{first - launched:.1f}")
    print(f"start-up: {first - launched:.1f} s ({', '.join(parts)})", file=out)
    if certify:
        print(f"  VRF key certificate per node: {statistics.mean(certify):.1f} s", file=out)


def consensus_accuracies(output: Path) -> dict[int, float]:
    """Each round's global-model accuracy on the task's validation set as the committee
    agreed it, from the localnet's results.json (absent: {})."""
    try:
        rounds = json.loads((output / "results.json").read_text(encoding="utf-8"))["rounds"]
    except (OSError, ValueError, KeyError):
        return {}
    return {int(r["round"]): float(r["consensus_accuracy"]) for r in rounds if r.get("consensus_accuracy") is not None}


def versus(ours: float, theirs: float, our_cpu: float | None, their_cpu: float | None) -> str:
    """`ours / theirs = ratio`, and the same for CPU seconds where both were sampled."""
    text = f"{ours:.1f} s / {theirs:.1f} s = {ours / theirs:.2f}"
    if our_cpu is not None and their_cpu:
        text += f" (CPU: {our_cpu:.1f} s / {their_cpu:.1f} s = {our_cpu / their_cpu:.2f})"
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.round_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--validators", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-samples", type=int, help="use only the first N training samples")
    parser.add_argument("--data-root", type=Path, default=None, help="MNIST's folder")
    parser.add_argument("--output", type=Path, help="new folder for the localnet (default: a temporary one)")
    parser.add_argument(
        "--from-logs", type=Path, metavar="DIR",
        help="profile the localnet that ran in DIR (its --output) instead of running one; "
        "the floor is measured now",
    )
    parser.add_argument(
        "--no-train-ahead", action="store_true",
        help="workers do not train the next round's update while the round is judged (to compare)",
    )
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)),
        help="threads of the centralized epoch (default: this machine's cores, %(default)s)",
    )
    parser.add_argument(
        "--flower", action="store_true",
        help="also run Flower 1.42 on the same work after the localnet (bench.flower_baseline; "
        "needs `bash scripts/flower-setup.sh` once) and print fl-node round / Flower round",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, out: TextIO) -> tuple[Path, CpuSampler | None, float | None, float | None, StampedOut]:
    """Run the localnet (unless --from-logs); its output folder, the CPU samples, and when it
    was launched and finished."""
    stamped = StampedOut(out)
    if args.from_logs is not None:
        return args.from_logs, CpuSampler.load_from(args.from_logs / CPU_FILE), None, None, stamped
    output = args.output or Path(tempfile.mkdtemp(prefix="round-profile-"))
    options = LocalnetOptions(
        output=output,
        data_root=(args.data_root or default_data_root()).resolve(),
        workers=args.workers,
        validators=args.validators,
        rounds=args.rounds,
        max_samples=args.max_samples,
    )
    # the nodes are this process's children: they inherit it
    os.environ[TRAIN_AHEAD_ENV] = "0" if args.no_train_ahead else "1"
    scenario = Scenario(source="<round profile>").resolve(args.workers, args.validators)
    localnet = Localnet(options, scenario, stamped)  # type: ignore[arg-type]
    launched = time.time()
    with CpuSampler(localnet) as sampler:
        status = localnet.run()
    sampler.save(output / CPU_FILE)
    if status != 0:
        raise SystemExit(f"the localnet failed (status {status}); its logs are in {localnet.logs}")
    return output, sampler, launched, time.time(), stamped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    if args.flower:
        try:
            check_venv(DEFAULT_VENV)  # before the localnet, not after it
        except FlowerError as exc:
            raise SystemExit(f"--flower: {exc}") from exc
    output, sampler, launched, finished, stamped = run(args, out)
    nodes = output / "nodes"
    requester = load_config(nodes / "requester" / "node.toml")
    configs = worker_configs(nodes)
    validators = sorted(p.name for p in nodes.glob("validator-*"))
    model = requester.task.model

    timeline = Timeline.read(output / "logs")
    rounds = timeline.rounds()
    if not rounds:
        print(f"no round completed; see the logs in {output / 'logs'}", file=out)
        return 1
    print(f"\n=== where each second goes ({len(configs)} workers, {len(validators)} validators; "
          f"logs in {output / 'logs'}) ===", file=out)
    show_startup(timeline, stamped, launched, out)
    roles = {
        "worker": [f"worker-{i}" for i in range(len(configs))],
        "validator": validators,
        "requester": ["requester"],
        "anvil": ["anvil"],
        "launcher": ["launcher"],
    }
    walls = {r: show_round(timeline, sampler, r, roles, out) for r in rounds}
    last = timeline.boundaries[rounds[-1]]
    if finished is not None:
        end_seen = last.get("terminated", last["finalized"])
        print(f"\ntail: last round finalized -> launcher done {finished - last['finalized']:.1f} s "
              f"(task terminated +{end_seen - last['finalized']:.1f} s; nodes linger, then the "
              "launcher scores every round's model on the test set)", file=out)

    print("\n=== the floor (same data, same model, same cores) ===", file=out)
    epoch, trained, samples = centralized_epoch(configs, model, args.threads)
    print(f"centralized epoch: {epoch.wall:.1f} s, {epoch.cpu:.1f} CPU s ({samples} samples, batch "
          f"{configs[0].training.batch_size}, {args.threads} threads; load average after it "
          f"{os.getloadavg()[0]:.1f})", file=out)
    validator = load_config(nodes / validators[0] / "node.toml")
    threads = validator.node.torch_threads
    with tempfile.TemporaryDirectory(prefix="round-profile-eval-") as folder:
        one = evaluation_alone(requester, trained, model, len(configs), threads, Path(folder))
    cores = len(os.sched_getaffinity(0))
    evaluation = one.wall * max(1.0, len(validators) / cores)
    print(f"one validator's evaluation alone: {one.wall:.1f} s, {one.cpu:.1f} CPU s ({len(configs)} "
          f"updates, {requester.task.validation_samples} samples, {threads} thread); "
          f"{len(validators)} validators on {cores} cores: {evaluation:.1f} s", file=out)
    floor = epoch.wall + evaluation
    floor_cpu = epoch.cpu + len(validators) * one.cpu
    print(f"floor of a round: {floor:.1f} s; {floor_cpu:.1f} CPU s", file=out)

    flower: FlowerRun | None = None
    if args.flower:
        try:
            flower = run_flower(nodes, output / "flower")
        except FlowerError as exc:
            print(f"\nthe Flower baseline failed: {exc}", file=out)
            return 1
        show_flower(flower, out)
        accuracies = consensus_accuracies(output)
        if accuracies:
            print("fl-node's global model on the same validation set (the committee's consensus): "
                  + ", ".join(f"round {r} {a:.4f}" for r, a in sorted(accuracies.items())), file=out)  # fmt: skip
    flower_rounds = {r.round: r for r in flower.rounds} if flower is not None else {}

    print("\n=== round wall / floor ===", file=out)
    cpus: dict[int, float] = {}
    for r, wall in walls.items():
        line = f"round {r}: {wall:5.1f} s  / {floor:.1f} s = {wall / floor:.2f}"
        if sampler is not None:
            start, end = round_span(timeline, r)
            cpus[r] = used = sampler.used(start, end)
            line += f"   (CPU: {used:.1f} s / {floor_cpu:.1f} s = {used / floor_cpu:.2f})"
        if r in flower_rounds:
            line += "   fl-node / Flower: " + versus(wall, flower_rounds[r].wall, cpus.get(r), flower_rounds[r].cpu)
        print(line, file=out)
    mean = statistics.mean(walls.values())
    line = f"mean:    {mean:5.1f} s  / {floor:.1f} s = {mean / floor:.2f}"
    if flower is not None and flower.rounds:
        both = [r for r in cpus if r in flower_rounds and flower_rounds[r].cpu is not None]
        ours = statistics.mean(cpus[r] for r in both) if both else None
        theirs = statistics.mean(flower_rounds[r].cpu or 0.0 for r in both) if both else None
        line += "   fl-node round / Flower round: " + versus(mean, flower.mean_wall, ours, theirs)
    print(line, file=out)
    print("(on a shared machine the two walls see different loads: the CPU ratio, every CPU "
          "second of the localnet's processes in the round against the floor's, does not depend "
          "on them)", file=out)
    if flower is None:
        print("(Flower not measured: --flower runs it on the same work after the localnet)", file=out)
    else:
        print("(fl-node / Flower below 1: the fl-node round, with its chain, committee and "
              "encryption, is faster than Flower's on the same work; the two ran one after "
              "the other, so on a shared machine they too saw different loads: compare CPU)",
              file=out)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
