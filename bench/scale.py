"""Round wall time and memory as the network grows: W = 10, 25, 50, 100 workers in one process.

    python -m bench.scale [--sizes 10,25,50,100] [--rounds 2] [--committee 7]
                          [--workers-per-round 0] [--samples-per-worker 60]
                          [--processes 15,4 [--fork-server]] [--timeout 3000]

Each size runs `fl-node localnet --in-process` (node.localnet.inprocess: every node in one
process on the embedded chain, real libp2p hosts on 127.0.0.1, real gossip, block exchange
and MNIST) in a child process of its own, so its peak RSS is its own: W workers, W / 5
validators (at least 3), a committee of `--committee` drawn by stake-weighted VRF, the
small model (mnist_2nn) on `--samples-per-worker` samples each. Times are read from the
chain: a round runs from its training start to the next round's (the last round to its
reveal end), split into training, commit, reveal and the finalize gap.

The baseline is the smallest size, measured in the same run: the table prints each size's
round wall time against it, as a ratio and per worker.

`--processes W,V` also runs the multi-process localnet (`fl-node localnet`, one OS process
per node on anvil) for `--rounds` rounds, samples every node process's memory from /proc
each second, and prints per role the largest and median RSS and PSS and the median
anonymous memory, the sum of all nodes' PSS, and the rounds' phase times and gas from the
launcher's results.json. `--sizes ''` runs only that. Set MALLOC_ARENA_MAX in the
environment to measure the node processes with it (they inherit it). With `--fork-server`
the nodes are forked from one process that imported their code (`fl-node localnet
--fork-server`); its own memory is a row of the table and part of the total.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (10, 25, 50, 100)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="worker counts W")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--committee", type=int, default=7, help="committee size tau")
    parser.add_argument(
        "--workers-per-round", type=int, default=0,
        help="workers the seed draws per round (0: every worker; needs the task parameter)",
    )
    parser.add_argument("--samples-per-worker", type=int, default=60)
    parser.add_argument(
        "--commit-seconds", type=int, default=90,
        help="commit phase when the committee is smaller than the validators (it runs to its end)",
    )
    parser.add_argument("--validation-samples", type=int, default=200)
    parser.add_argument(
        "--slack", type=float, default=1.0,
        help="multiply every node's block exchange timeouts (bench.attacks.slackened_exchange): "
        "all nodes share one event loop, and on a loaded machine a peer waiting for the CPU "
        "reads as silent",
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=3000.0, help="seconds per size")
    parser.add_argument(
        "--processes", default=None, help="W,V: also measure the multi-process localnet's memory"
    )
    parser.add_argument(
        "--fork-server", action="store_true",
        help="with --processes: fork the node processes from one fork server (localnet --fork-server)",
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--output", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def validators_for(workers: int) -> int:
    return max(3, workers // 5)


def _data_root(args: argparse.Namespace) -> Path:
    if args.data_root is not None:
        return Path(args.data_root)
    from node.datasets import default_data_root

    return default_data_root()


class FetchCounter(logging.Handler):
    """Counts the nodes' blob fetches by role from their timing lines (node.runtime.timing:
    one `fetch` span per blob a node asks its peers for), and the failed ones."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.fetches: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        from node.runtime import timing

        message = record.getMessage()
        event = timing.parse(message)
        if event is None or event.get("what") != "fetch":
            return
        name = message[1 : message.find("]")] if message.startswith("[") else "?"
        role = name.rstrip("0123456789") or "?"
        self.fetches[role] = self.fetches.get(role, 0) + 1
        if "failed" in event:
            self.failed[role] = self.failed.get(role, 0) + 1


def count_fetches() -> FetchCounter:
    """A FetchCounter on the nodes' logger; the log file keeps warnings only."""
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    counter = FetchCounter()
    runtime = logging.getLogger("fl_node.runtime")
    runtime.setLevel(logging.INFO)
    runtime.addHandler(counter)
    return counter


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One size, in this process: the task from creation to the nodes' exit."""
    import trio

    from bench.attacks import slackened_exchange
    from node.config import HOLDOUT
    from node.localnet.inprocess import run_inprocess

    slackened_exchange(args.slack)
    counter = count_fetches()
    workers = int(args.one)
    validators = validators_for(workers)
    committee = min(args.committee, validators)
    task: dict[str, Any] = {
        "committee_size": committee,
        "validation": HOLDOUT,
        # every node is in one process here: the deadlines leave room for a slow event loop
        "training_seconds": 600,
        # the commit phase ends early only when every validator committed, which a committee
        # smaller than the validators never does: then it lasts this long
        "commit_seconds": 600 if committee >= validators else args.commit_seconds,
        "reveal_seconds": 600,
    }
    if args.workers_per_round and args.workers_per_round < workers:
        task["workers_per_round"] = args.workers_per_round
    started = time.monotonic()
    result = trio.run(
        partial(
            run_inprocess,
            args.output,
            _data_root(args),
            workers=workers,
            validators=validators,
            rounds=args.rounds,
            model="mnist_2nn",
            max_samples=args.samples_per_worker * workers + args.validation_samples,
            validation_samples=args.validation_samples,
            task=task,
            data={"holdout_samples": args.validation_samples},
            timeout_s=args.timeout,
        )
    )
    wall = time.monotonic() - started
    infos = [result.reader.round_info(result.task, r) for r in range(1, args.rounds + 1)]
    first_start = infos[0].training_start if infos else 0
    try:
        gas = _gas_by_round(result.w3, [info.training_start for info in infos])
    except Exception as problem:  # the run's times are still worth printing
        logging.getLogger(__name__).warning("reading the rounds' gas failed: %r", problem)
        gas = [{"gas": 0, "max_tx_gas": 0, "max_tx": "?"} for _ in infos]
    rounds = []
    for index, info in enumerate(infos):
        end = infos[index + 1].training_start if index + 1 < len(infos) else None
        rounds.append(
            {
                "round": index + 1,
                "training": info.training_end - info.training_start,
                "commit": info.commit_end - info.training_end,
                "reveal": info.reveal_end - info.commit_end,
                "finalize": None if end is None else end - info.reveal_end,
                "wall": (end if end is not None else info.reveal_end) - info.training_start,
                "submissions": info.submissions,
                "commits": info.commits,
                "finalized": info.finalized,
                **gas[index],
            }
        )
    return {
        "workers": workers,
        "validators": validators,
        "committee": committee,
        "wall": wall,
        "chain_time_to_round_1": first_start - _chain_start(result),
        "rounds": rounds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "all_done": all(node.done for node in result.nodes),
        "fetches": counter.fetches,
        "failed_fetches": counter.failed,
    }


def _gas_by_round(w3: Any, starts: list[int]) -> list[dict[str, Any]]:
    """Per round (from its training start to the next one's, the last to the chain's head):
    the gas of every transaction mined in it, and its largest single transaction's gas and
    function, read from the blocks and receipts of the embedded chain."""
    from eth_utils import function_abi_to_4byte_selector

    from node.chain.artifacts import load_artifact

    names: dict[str, str] = {}
    for contract in ("Registry", "Task"):
        for entry in load_artifact(contract).abi:
            if entry.get("type") == "function":
                abi_selector = function_abi_to_4byte_selector(entry)  # type: ignore[arg-type]
                names["0x" + abi_selector.hex()] = entry["name"]
    rounds: list[dict[str, Any]] = [{"gas": 0, "max_tx_gas": 0, "max_tx": ""} for _ in starts]
    for number in range(1, int(w3.eth.block_number) + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        index = sum(1 for start in starts if 0 < start <= int(block["timestamp"])) - 1
        if index < 0:
            continue
        entry = rounds[index]
        for tx in block["transactions"]:
            used = int(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
            entry["gas"] += used
            if used > entry["max_tx_gas"]:
                data = tx.get("input", tx.get("data", b""))  # the field's name varies
                text = data.hex() if isinstance(data, bytes) else str(data).removeprefix("0x")
                selector = "0x" + text[:8]
                name = names.get(selector, selector) if tx.get("to") else "(deployment)"
                entry["max_tx_gas"], entry["max_tx"] = used, name
    return rounds


def _chain_start(result: Any) -> int:
    """The timestamp of the chain's first block: the contracts deployed, no node started."""
    return int(result.w3.eth.get_block(1)["timestamp"])


def run_size(args: argparse.Namespace, workers: int, folder: Path) -> dict[str, Any]:
    """`run_one` in a child process (its own peak RSS); its JSON line back."""
    command = [
        sys.executable, "-m", "bench.scale", "--one", str(workers), "--output", str(folder / f"w{workers}"),
        "--rounds", str(args.rounds), "--committee", str(args.committee),
        "--workers-per-round", str(args.workers_per_round), "--commit-seconds", str(args.commit_seconds),
        "--samples-per-worker", str(args.samples_per_worker),
        "--validation-samples", str(args.validation_samples), "--timeout", str(args.timeout),
        "--slack", str(args.slack),
    ]
    if args.data_root is not None:
        command += ["--data-root", str(args.data_root)]
    log = folder / f"w{workers}.log"
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=handle, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"W={workers} failed (status {done.returncode}); {log}:\n" + "\n".join(tail))
    return dict(json.loads(lines[-1]))


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def print_table(rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    base_round = _mean([r["wall"] for r in base["rounds"]])
    print()
    print(
        f"{'W':>4} {'V':>3} {'tau':>3} {'round s':>8} {'train':>6} {'commit':>6} {'reveal':>6} "
        f"{'final':>6} {'to r1 s':>8} {'run s':>7} {'peak MB':>8} {'MB/node':>7} "
        f"{'x W=' + str(base['workers']):>7} "
        f"{'s/worker':>8} {'gas/round':>10} {'max tx gas':>10} {'fetch/rd':>8} {'failed':>6} max tx"
    )
    for row in rows:
        rounds = row["rounds"]
        wall = _mean([r["wall"] for r in rounds])
        finals = [r["finalize"] for r in rounds if r["finalize"] is not None]
        print(
            f"{row['workers']:>4} {row['validators']:>3} {row['committee']:>3} {wall:>8.1f} "
            f"{_mean([r['training'] for r in rounds]):>6.1f} {_mean([r['commit'] for r in rounds]):>6.1f} "
            f"{_mean([r['reveal'] for r in rounds]):>6.1f} {_mean(finals):>6.1f} "
            f"{row['chain_time_to_round_1']:>8.0f} {row['wall']:>7.0f} {row['peak_rss_mb']:>8.0f} "
            f"{row['peak_rss_mb'] / (row['workers'] + row['validators'] + 2):>7.1f} "
            f"{wall / base_round:>7.2f} {wall / row['workers']:>8.2f} "
            f"{_mean([r['gas'] for r in rounds]):>10,.0f} {max(r['max_tx_gas'] for r in rounds):>10,} "
            f"{sum(row.get('fetches', {}).values()) / max(len(rounds), 1):>8.0f} "
            f"{sum(row.get('failed_fetches', {}).values()):>6} "
            f"{max(rounds, key=lambda r: r['max_tx_gas'])['max_tx']}"
        )
    print(
        "\nround s: training start to the next round's (the last round: to its reveal end), "
        "from block timestamps;\nto r1 s: the contracts' deployment to round 1; run s: the whole run "
        "with set-up and the nodes' exit; peak MB: the process's peak RSS (every node);\n"
        "MB/node: peak MB over the nodes in it (workers, validators, requester, bootstrap: "
        "shared code and data counted once);\n"
        "gas/round: every transaction mined in a round, mean over rounds; max tx: the largest one;\n"
        "fetch/rd: blobs the nodes fetched from peers over the run, per round; failed: fetches "
        "that failed (each retried)."
    )
    for row in rows:
        by_role = ", ".join(f"{k} {v}" for k, v in sorted(row.get("fetches", {}).items()))
        print(f"W={row['workers']} fetches by role over the run: {by_role or 'none counted'}")


# --- the multi-process localnet's memory -----------------------------------------------


NODE_ROLES = ("worker", "validator", "requester")


def _node_processes(output: Path) -> dict[int, str]:
    """pid -> node name of the localnet's node processes under `output`: those whose
    standard output is the launcher's log file for a worker, validator or requester (started
    plainly or forked from a fork server, whose command line is the server's)."""
    found: dict[int, str] = {}
    logs = output / "logs"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            target = Path(os.readlink(entry / "fd" / "1"))
        except OSError:
            continue
        if target.parent == logs and target.suffix == ".log" and target.stem.startswith(NODE_ROLES):
            found[int(entry.name)] = target.stem
    return found


def _fork_servers(pids: Sequence[int]) -> set[int]:
    """The parents of `pids` that are multiprocessing fork servers (`--fork-server`)."""
    servers = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if b"multiprocessing.forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes():
                servers.add(parent)
        except (OSError, StopIteration, ValueError):
            continue
    return servers


MEMORY_FIELDS = ("Rss:", "Pss:", "Anonymous:")
"""From smaps_rollup: resident, proportional (shared pages split among their users) and
anonymous (the process's own heap: what no other node process can share)."""


def _memory_kb(pid: int) -> tuple[int, ...] | None:
    """(RSS, PSS, anonymous) in kB from /proc/<pid>/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in MEMORY_FIELDS:
            values[parts[0]] = int(parts[1])
    return tuple(values.get(name, 0) for name in MEMORY_FIELDS)


def measure_processes(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    workers, validators = (int(n) for n in args.processes.split(","))
    output = folder / "processes"
    command = [
        sys.executable, "-m", "node.cli", "localnet", "--workers", str(workers),
        "--validators", str(validators), "--rounds", str(args.rounds), "--model", "mnist_2nn",
        "--max-samples", str(args.samples_per_worker * workers + 1000), "--output", str(output),
        "--committee-size", str(min(args.committee, validators)),
    ]
    command.append("--fork-server" if args.fork_server else "--no-fork-server")
    if args.workers_per_round:
        command += ["--workers-per-round", str(args.workers_per_round)]
    if args.data_root is not None:
        command += ["--data-root", str(args.data_root)]
    peaks: dict[str, tuple[int, ...]] = {}
    total_pss_peak = 0
    started = time.monotonic()
    with (folder / "processes.log").open("w") as log:
        launcher = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while launcher.poll() is None:
            total_pss = 0
            nodes = _node_processes(output)
            # the fork server's pages are the nodes' shared imports: counted in the total
            measured = {**nodes, **dict.fromkeys(_fork_servers(list(nodes)), "fork-server")}
            for pid, name in measured.items():
                memory = _memory_kb(pid)
                if memory is not None:
                    old = peaks.get(name, (0,) * len(memory))
                    peaks[name] = tuple(max(a, b) for a, b in zip(old, memory, strict=True))
                    total_pss += memory[1]
            total_pss_peak = max(total_pss_peak, total_pss)
            time.sleep(1.0)
    by_role: dict[str, dict[str, float]] = {}
    for role in (*NODE_ROLES, "fork-server"):
        named = [v for k, v in peaks.items() if k.startswith(role)]
        if named:
            by_role[role] = {
                "nodes": len(named),
                "max_rss_mb": max(v[0] for v in named) / 1024,
                "median_rss_mb": statistics.median(v[0] for v in named) / 1024,
                "max_pss_mb": max(v[1] for v in named) / 1024,
                "median_pss_mb": statistics.median(v[1] for v in named) / 1024,
                "median_anon_mb": statistics.median(v[2] for v in named) / 1024,
            }
    return {
        "workers": workers, "validators": validators, "status": launcher.returncode,
        "wall": time.monotonic() - started, "roles": by_role,
        "total_pss_mb": total_pss_peak / 1024, "rounds": _launcher_rounds(output),
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", "glibc default"),
        "fork_server": args.fork_server,
    }


def _launcher_rounds(output: Path) -> list[dict[str, Any]]:
    """Each round's phase seconds and gas from the launcher's results.json (none if absent)."""
    try:
        document = json.loads((output / "results.json").read_text())
    except (OSError, ValueError):
        return []
    return [
        {"round": r["round"], "phases": r.get("phase_seconds") or {}, "gas": r["gas"]["total"],
         "submitted": len(r["submitted"])}
        for r in document.get("rounds", [])
    ]


def print_processes(report: dict[str, Any]) -> None:
    print(
        f"\nmulti-process localnet: {report['workers']} workers, {report['validators']} "
        f"validators, exit status {report['status']}, {report['wall']:.0f} s, MALLOC_ARENA_MAX "
        f"{report['malloc_arena_max']}, {'forked from a fork server' if report['fork_server'] else 'each started plainly'}"
    )
    for entry in report["rounds"]:
        phases = ", ".join(f"{k} {v} s" for k, v in entry["phases"].items())
        print(f"round {entry['round']}: {entry['submitted']} updates; {phases}; gas {entry['gas']:,}")
    print(
        f"{'role':>10} {'nodes':>5} {'max RSS MB':>10} {'median RSS':>10} {'max PSS MB':>10} "
        f"{'median PSS':>10} {'median anon':>11}"
    )
    for role, row in report["roles"].items():
        print(
            f"{role:>10} {row['nodes']:>5} {row['max_rss_mb']:>10.0f} {row['median_rss_mb']:>10.0f} "
            f"{row['max_pss_mb']:>10.0f} {row['median_pss_mb']:>10.0f} {row['median_anon_mb']:>11.0f}"
        )
    print(
        f"all node processes together: {report['total_pss_mb']:.0f} MB PSS at the peak sample "
        "(anon: a process's own heap; PSS: its own pages plus its share of the shared ones)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        # the nodes' warnings (failed fetches, slow validation) go to the size's log file
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        if os.environ.get("FL_SCALE_DEBUG_BLOCKS"):
            logging.getLogger("node.blocks.exchange").setLevel(logging.INFO)
        print(json.dumps(run_one(args)), flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    folder = Path(tempfile.mkdtemp(prefix="fl-scale-"))
    print(f"bench.scale: sizes {sizes}, {args.rounds} rounds, committee {args.committee}, "
          f"workers per round {args.workers_per_round or 'all'}; logs in {folder}", flush=True)
    rows = []
    for workers in sizes:
        row = run_size(args, workers, folder)
        rounds = ", ".join(f"{r['wall']:.0f}" for r in row["rounds"])
        print(f"W={workers}: rounds {rounds} s, run {row['wall']:.0f} s, peak {row['peak_rss_mb']:.0f} MB",
              flush=True)
        rows.append(row)
    if rows:
        print_table(rows)
    if args.processes:
        print_processes(measure_processes(args, folder))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
