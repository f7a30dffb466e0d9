"""Flower 1.42 doing fl-node's default localnet work on this machine: the baseline a
localnet round is compared with.

    bash scripts/flower-setup.sh        # once: Flower in its own venv, .venv-flower
    python -m bench.flower_baseline [--workers 5] [--rounds 4] [--max-samples N]
                                    [--data-root DIR] [--nodes DIR] [--output DIR]

A real Flower deployment on 127.0.0.1, insecure (no TLS), the deployment engine: a
SuperLink and one SuperNode per worker as separate processes, the Flower App in
bench/flower_app submitted with `flwr run`; each process starts the ServerApp or a ClientApp
as Flower does (a ClientApp process per training message). No chain, no encryption, no
committee. The work is fl-node's: each SuperNode stands for one localnet worker and its
ClientApp trains, with fl-node's own code (bench/flower_task.py), that worker's shard
(`load_worker_shard` of its node.toml: the same IID partition and sample counts), the same
model, initial weights, local epoch, batch size, learning rate and momentum, at the
worker's torch thread count; the ServerApp runs FedAvg (weighted by sample counts) for the
task's rounds and measures each round's global model on the requester's validation set,
as fl-node's requester does.

The node.toml files come from `--nodes DIR` (a localnet's `nodes/` folder: what
`bench.round_profile --flower` passes), or are written here by the localnet's own config
code for `--workers`, `--rounds`, `--max-samples`. It prints each round's wall time, from
the round's start (the ServerApp sends the training messages) to the next round's start
(the last round: until its global model is measured), as bench.round_profile measures an
fl-node round, with the accuracy and where the clients' time went.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from node.anvil import free_port
from node.datasets import DATA_ROOT_ENV, default_data_root
from node.localnet.configs import NodePlan
from node.localnet.launcher import Localnet, LocalnetOptions, _fresh_key
from node.localnet.scenario import Scenario

REPO = Path(__file__).resolve().parents[1]
APP = Path(__file__).resolve().parent / "flower_app"
DEFAULT_VENV = REPO / ".venv-flower"
CONNECTION = "fl-node-bench"
FINAL_MODEL = "final-model.npz"  # the last round's global model, numpy arrays by tensor name
TICKS = os.sysconf("SC_CLK_TCK")
SETUP_HINT = "run `bash scripts/flower-setup.sh` once (it makes .venv-flower with flwr 1.42.0)"


class FlowerError(RuntimeError):
    """The Flower deployment could not run; the text says why and where its logs are."""


# --- what a run measured -------------------------------------------------------------------


@dataclass
class FlowerRound:
    round: int
    started: float
    wall: float  # to the next round's start; the last round: until its model was measured
    training: float  # start to the last client's reply, aggregated
    accuracy: float | None
    clients: list[dict[str, float]]  # each client's load-, train- and process-seconds
    cpu: float | None = None  # CPU seconds of the deployment's processes over the wall


@dataclass
class FlowerRun:
    rounds: list[FlowerRound]
    startup: float  # from launching the SuperLink to round 1's start
    logs: Path
    errors: list[str] = field(default_factory=list)

    @property
    def mean_wall(self) -> float:
        return statistics.mean(r.wall for r in self.rounds)


def read_journal(
    path: Path, launched: float, cpu: Callable[[float, float], float | None] | None = None
) -> FlowerRun:
    """The rounds the ServerApp's journal (bench/flower_app's JSON lines) records; `cpu`
    gives the CPU seconds the deployment used between two times."""
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    starts = {e["round"]: e["at"] for e in events if e["event"] == "round"}
    trained = {e["round"]: e for e in events if e["event"] == "trained"}
    measured = {e["round"]: e for e in events if e["event"] == "evaluated"}
    rounds = []
    for r in sorted(starts):
        if r not in trained or r not in measured:
            continue
        end = starts.get(r + 1, measured[r]["at"])
        rounds.append(
            FlowerRound(
                round=r,
                started=starts[r],
                wall=end - starts[r],
                training=trained[r]["at"] - starts[r],
                accuracy=measured[r]["accuracy"],
                clients=trained[r]["clients"],
                cpu=cpu(starts[r], end) if cpu is not None else None,
            )
        )
    errors = [reason for e in trained.values() for reason in e["errors"]]
    startup = starts[min(starts)] - launched if starts else 0.0
    return FlowerRun(rounds, startup, path.parent, errors)


# --- the node.toml files -------------------------------------------------------------------


def write_localnet_configs(
    folder: Path, workers: int, rounds: int, data_root: Path, max_samples: int | None
) -> Path:
    """The requester's and workers' node.toml as `fl-node localnet` writes them (its own
    config code; chain and network entries point nowhere: Flower does not read them);
    returns the `nodes` folder."""
    options = LocalnetOptions(
        output=folder, data_root=data_root.resolve(), workers=workers, rounds=rounds,
        max_samples=max_samples,
    )  # fmt: skip
    scenario = Scenario(source="<flower baseline>").resolve(workers, options.validators)
    localnet = Localnet(options, scenario, sys.stderr)
    localnet.rpc_url, localnet.registry = "http://127.0.0.1:9", "0x" + "00" * 20
    nodes = folder / "nodes"
    plans = [NodePlan("requester", "requester", nodes / "requester", _fresh_key())]
    plans += [
        NodePlan(f"worker-{i}", "worker", nodes / f"worker-{i}", _fresh_key(), kind, i)
        for i, kind in enumerate(scenario.worker_kinds)
    ]
    localnet.plans = {plan.name: plan for plan in plans}
    localnet.write_configs([])
    return nodes


# --- the deployment ------------------------------------------------------------------------


def flower_env(venv: Path, home: Path) -> dict[str, str]:
    """Flower's processes' environment: the venv's commands first, fl-node's code importable,
    Flower's state in `home`, and nothing that reaches outside this machine."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])
    env["FLWR_HOME"] = str(home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"  # no `uv sync` of the app
    env.setdefault(DATA_ROOT_ENV, str(default_data_root()))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Deployment:
    """The SuperLink and SuperNodes, each in its own process group (with the SuperExec and
    app processes it starts), stopped together."""

    def __init__(self, venv: Path, logs: Path, env: dict[str, str]) -> None:
        self.venv, self.logs, self.env = venv, logs, env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str, home: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` (a command of the venv); `home`: its own FLWR_HOME (where it unpacks
        the app), as on a machine of its own."""
        env = self.env if home is None else {**self.env, "FLWR_HOME": str(home)}
        with open(self.logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [str(self.venv / "bin" / argv[0]), *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise FlowerError(
                    f"{name} exited with status {process.returncode}; its log: "
                    f"{self.logs / f'{name}.log'}\n{tail(self.logs / f'{name}.log')}"
                )

    def wait_for_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.2)
        raise FlowerError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for process in self.processes.values():  # the apps it started, should they linger
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class TreeCpu:
    """The CPU time of some processes and all their descendants (the SuperExecs and app
    processes Flower starts, detached or not), read from /proc once a second. A child's
    time moves into its parent's once reaped, so the sum runs on across exits."""

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flower-cpu", daemon=True)

    def start(self) -> TreeCpu:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), tree_cpu_seconds(self.roots)))
            if self._stop.wait(1.0):
                return

    def used(self, start: float, end: float) -> float | None:
        inside = [seconds for at, seconds in self.samples if start <= at <= end]
        return inside[-1] - inside[0] if len(inside) >= 2 else None


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU seconds of `roots` and their descendants, with their reaped children's."""
    parent: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:  # it exited meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        seconds[pid] = sum(int(f) for f in fields[11:15]) / TICKS  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [pid for pid in roots if pid in seconds]
    while todo:
        pid = todo.pop()
        total += seconds[pid]
        todo.extend(children.get(pid, ()))
    return total


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def check_venv(venv: Path) -> None:
    for command in ("flower-superlink", "flower-supernode", "flwr"):
        if not (venv / "bin" / command).exists():
            raise FlowerError(f"{venv / 'bin' / command} is missing: {SETUP_HINT}")


def run_flower(nodes: Path, output: Path, venv: Path = DEFAULT_VENV, timeout: float = 3600) -> FlowerRun:
    """Deploy Flower on 127.0.0.1 for the requester and workers in `nodes` (their node.toml
    files), run the app to the end, and read its journal. Logs and the final global model
    (FINAL_MODEL) go to `output`."""
    check_venv(venv)
    workers = sorted(nodes.glob("worker-*/node.toml"), key=lambda p: int(p.parent.name.split("-")[1]))
    requester = nodes / "requester" / "node.toml"
    if not workers or not requester.exists():
        raise FlowerError(f"{nodes} has no requester/node.toml or worker-*/node.toml")
    output.mkdir(parents=True, exist_ok=True)
    home = output / "flwr-home"
    home.mkdir(exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n',
        encoding="utf-8",
    )
    journal = output / "rounds.jsonl"
    journal.unlink(missing_ok=True)
    deployment = Deployment(venv, output, flower_env(venv, home))
    launched = time.time()
    cpu: TreeCpu | None = None
    try:
        deployment.start(
            "superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port),
            "--disable-runtime-dependency-installation",
        )  # fmt: skip
        deployment.wait_for_port(port, timeout=120)
        for i, worker in enumerate(workers):
            deployment.start(
                f"supernode-{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                "--host", "127.0.0.1", "--port", str(free_port()),
                "--node-config", f'node-toml="{worker.resolve()}"', home=home / f"supernode-{i}",
            )  # fmt: skip
        run_config = (
            f'requester-toml="{requester.resolve()}" workers={len(workers)} results="{journal}" '
            f'final-model="{output / FINAL_MODEL}"'
        )
        # every process but the `flwr run` client, which only submits and streams logs
        cpu = TreeCpu([p.pid for p in deployment.processes.values()]).start()
        submit = deployment.start(
            "flwr-run", "flwr", "run", str(APP), CONNECTION, "--stream", "--run-config", run_config
        )
        deadline = time.monotonic() + timeout
        while not _finished(journal):
            if submit.poll() is not None and not _finished(journal):
                time.sleep(2)  # the journal's last line may trail the stream's end
                if _finished(journal):
                    break
                raise FlowerError(
                    f"`flwr run` ended (status {submit.returncode}) before the ServerApp "
                    f"finished; logs in {output}\n{tail(output / 'flwr-run.log')}"
                )
            if time.monotonic() > deadline:
                raise FlowerError(f"the Flower run took over {timeout:.0f} s; logs in {output}")
            deployment.check_alive()
            time.sleep(0.5)
    finally:
        if cpu is not None:
            cpu.stop()
        deployment.stop()
    return read_journal(journal, launched, cpu.used if cpu is not None else None)


def _finished(journal: Path) -> bool:
    return journal.exists() and '"event": "done"' in journal.read_text(encoding="utf-8")


# --- the report ----------------------------------------------------------------------------


def show(run: FlowerRun, out: TextIO) -> None:
    print(f"\n=== Flower 1.42 (SuperLink + {len(run.rounds[0].clients) if run.rounds else 0} "
          f"SuperNodes, same work; logs in {run.logs}) ===", file=out)  # fmt: skip
    print(f"start-up: {run.startup:.1f} s (SuperLink launched -> round 1 started)", file=out)
    for r in run.rounds:
        times = {key: statistics.median(c[key] for c in r.clients) for key in r.clients[0]} if r.clients else {}
        overhead = times.get("process-seconds", 0.0) - times.get("load-seconds", 0.0) - times.get("train-seconds", 0.0)
        accuracy = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        cpu = f"{r.cpu:.1f} CPU s, " if r.cpu is not None else ""
        print(
            f"round {r.round}: {r.wall:5.1f} s  accuracy {accuracy}  ({cpu}training {r.training:.1f} s; "
            f"median client: train {times.get('train-seconds', 0):.1f} s, load shard "
            f"{times.get('load-seconds', 0):.1f} s, ClientApp process start-up {overhead:.1f} s)",
            file=out,
        )
    if run.rounds:
        print(f"mean:    {run.mean_wall:5.1f} s a round (load average now {os.getloadavg()[0]:.1f}, "
              "other users' work included)", file=out)  # fmt: skip
    for error in run.errors:
        print(f"client error: {error}", file=out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.flower_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-samples", type=int, help="use only the first N training samples")
    parser.add_argument("--data-root", type=Path, default=None, help="MNIST's folder")
    parser.add_argument(
        "--nodes", type=Path, metavar="DIR",
        help="a localnet's nodes/ folder: use its requester's and workers' node.toml "
        "(then --workers, --rounds, --max-samples are theirs)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, help="new folder for configs and logs (default: a temporary one)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Flower's venv (%(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_venv(args.venv)
    except FlowerError as exc:
        print(f"flower baseline: {exc}", file=sys.stderr)
        return 1
    output = args.output or Path(tempfile.mkdtemp(prefix="flower-baseline-"))
    nodes = args.nodes
    if nodes is None:
        data_root = args.data_root or default_data_root()
        nodes = write_localnet_configs(output, args.workers, args.rounds, data_root, args.max_samples)
    try:
        run = run_flower(nodes, output / "flower", args.venv)
    except FlowerError as exc:
        print(f"flower baseline: {exc}", file=sys.stderr)
        return 1
    show(run, sys.stdout)
    if args.output is None and not run.errors:
        shutil.rmtree(output / "flower" / "flwr-home", ignore_errors=True)
    return 0 if run.rounds and not run.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
