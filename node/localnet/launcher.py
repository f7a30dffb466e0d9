"""`fl-node localnet`: a whole network on this machine, one OS process per node.

1. anvil (node/anvil.py); one fresh account per process funded from anvil's dev account
   (anvil hands out duplicate nonces to concurrent senders of one account); the Registry
   deployed from its own account;
2. a bootstrap node (`fl-node bootstrap`), its multiaddr read from its output;
3. one config per node (node/localnet/configs.py), then the requester, the workers and the
   validators as `python -m node.cli run --config ...`, each logging to `logs/<name>.log`;
4. a read-only view of the chain: the task's events feed a TaskTracker; each finalized
   round prints a table row, with the round's global model evaluated on the dataset's test split;
5. results.json and plots in the output folder;
6. every process stopped (process groups; SIGTERM then SIGKILL), anvil too, also on Ctrl-C
   and on failure; a node that dies unasked fails the run with its log tail.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import trio
from eth_account import Account
from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3Exception

from node.anvil import Anvil, free_port
from node.chain.client import ChainClient
from node.chain.dev import fund
from node.chain.errors import ChainError
from node.config import HOLDOUT, ConfigError
from node.localnet.configs import (
    NodePlan,
    TaskDefaults,
    funding_wei,
    node_document,
    to_toml,
    write_node_config,
)
from node.localnet.evaluation import TestSetEvaluator
from node.localnet.processes import ForkServer, ManagedProcess, ProcessGroup, log_tail
from node.localnet.results import Participant, write_plots, write_results
from node.localnet.scenario import Crash, ResolvedScenario, Scenario, load_scenario
from node.localnet.view import ChainView
from protocol.models import DEFAULT_MODEL_FOR_DATASET

__all__ = [
    "LocalnetError",
    "LocalnetOptions",
    "NodeDied",
    "run_localnet",
]

logger = logging.getLogger(__name__)

BOOTSTRAP_TIMEOUT = 120.0
FINISH_GRACE_SECONDS = 90.0  # for nodes to withdraw and exit once the task is over


class LocalnetError(RuntimeError):
    """The localnet could not be set up or did not complete; the text says why."""


class NodeDied(LocalnetError):
    def __init__(self, name: str, returncode: int | None, tail: str) -> None:
        self.name = name
        self.reason = failure_reason(tail)
        because = f": {self.reason}" if self.reason else ""
        super().__init__(
            f"{name} exited with status {returncode} though nobody stopped it{because}; "
            f"the last lines of its log:\n{tail}"
        )


def failure_reason(log: str) -> str | None:
    """The reason a node gave for stopping: `fl-node`'s one-line error (``fl-node run: ...``),
    else the last line of a Python traceback (``SomeError: ...``), else None."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("fl-node run: ", "fl-node bootstrap: ")):
            return line
    if lines and re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Funds|Revert|Succeed)\b", lines[-1]):
        return lines[-1]
    return None


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the launcher. A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way (web3, the chain client) can swallow it."""


@dataclass(frozen=True)
class LocalnetOptions:
    output: Path
    data_root: Path
    workers: int = 5
    validators: int = 3
    rounds: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    max_samples: int | None = None
    scenario_path: Path | None = None
    in_process: bool = False
    fork_server: bool = True  # node processes forked from one that imported their code
    timeout: float | None = None  # seconds for the whole run; None: derived from the phases
    poll_interval: float = 1.0
    # How to start `fl-node` (the same interpreter as the launcher by default).
    node_command: tuple[str, ...] = (sys.executable, "-m", "node.cli")
    node_log_level: str = "info"
    task_overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"  # a built-in dataset, partitioned among the workers
    model: str | None = None  # None: the dataset's built-in model
    validator_stakes: tuple[int, ...] = ()  # wei, one per validator; (): each the task's minimum

    @property
    def model_reference(self) -> str:
        return self.model or DEFAULT_MODEL_FOR_DATASET.get(self.dataset, "mnist_cnn")

    def described(self) -> dict[str, Any]:
        described = asdict(self)
        for key in ("output", "data_root", "scenario_path"):
            described[key] = None if described[key] is None else str(described[key])
        described.pop("node_command")
        return described


class _StopRequests:
    """SIGINT/SIGTERM set a flag that the launcher's loops check between chain reads, so a
    signal never lands in the middle of an HTTP request (that left web3's pooled connection
    broken, and the partial results unreadable); a second signal raises at once."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None:
            raise Interrupted(f"stopped by a second {name}")
        self.reason = f"stopped by {name}"

    def check(self) -> None:
        if self.reason is not None:
            raise Interrupted(self.reason)

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


class Localnet:
    # Where anvil's RPC listens; nodes run elsewhere (other network namespaces) need an
    # address of this machine that they can reach.
    chain_host = "127.0.0.1"

    def __init__(
        self,
        options: LocalnetOptions,
        scenario: ResolvedScenario,
        out: TextIO = sys.stdout,
    ) -> None:
        self.options = options
        self.scenario = scenario
        self.out = out
        self.output = options.output.resolve()
        self.logs = self.output / "logs"
        self.status_listen = f"127.0.0.1:{free_port()}"  # the requester's status page
        self.processes = ProcessGroup()
        self.forks = ForkServer() if options.fork_server else None
        self.anvil: Anvil | None = None
        self.w3: Web3 | None = None
        self.reader: ChainClient | None = None
        self.plans: dict[str, NodePlan] = {}
        self.view: ChainView | None = None
        self.registry: str | None = None
        self.rpc_url: str | None = None
        self.crashes_done: set[Crash] = set()
        self.restarts_due: dict[str, float] = {}
        self._started = time.monotonic()
        self.stop_requests = _StopRequests()

    # ------------------------------------------------------------------ output

    def _sleep(self, seconds: float) -> None:
        self.stop_requests.check()
        time.sleep(seconds)
        self.stop_requests.check()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ set-up

    def listen_addrs(self, name: str) -> list[str]:
        """Where the node `name` ("bootstrap", "requester", "worker-0", ...) listens for peers."""
        return ["/ip4/127.0.0.1/tcp/0"]

    def node_argv(self, name: str, *args: str) -> list[str]:
        """The command line that starts the node `name` as `fl-node <args>`."""
        return [*self.options.node_command, *args]

    def prepare_output(self) -> None:
        if self.output.exists() and any(self.output.iterdir()):
            raise LocalnetError(
                f"output folder {self.output} is not empty; pass another --output or delete it "
                "(each run starts a fresh chain, so old node data would not match)"
            )
        self.logs.mkdir(parents=True, exist_ok=True)

    def start_chain(self) -> None:
        # A block a second, as on a real chain: phase deadlines pass on block timestamps, and
        # an instant-mining anvil makes no block while nobody sends a transaction.
        self.anvil = Anvil(
            log_path=self.logs / "anvil.log", accounts=1, balance_ether=1_000_000, block_time=1,
            host=self.chain_host,
        ).start()
        self.rpc_url = self.anvil.url
        self.w3 = self.anvil.web3()
        deployer = Account.create()
        fund(self.w3, deployer.address, funding_wei("deployer", self.task_section()))
        client = ChainClient(self.w3, deployer.key)
        deployment = client.deploy_registry()
        self.registry = deployment.registry
        self.reader = client  # reads only from here on; its account sends nothing more
        self.say(f"anvil {self.rpc_url} (pid {self.anvil.pid})  registry {self.registry}")

    def plan_nodes(self) -> None:
        nodes = self.output / "nodes"
        plans = [NodePlan("requester", "requester", nodes / "requester", _fresh_key())]
        for i, kind in enumerate(self.scenario.worker_kinds):
            plans.append(
                NodePlan(f"worker-{i}", "worker", nodes / f"worker-{i}", _fresh_key(), kind, i)
            )
        for i, kind in enumerate(self.scenario.validator_kinds):
            plans.append(
                NodePlan(
                    f"validator-{i}", "validator", nodes / f"validator-{i}", _fresh_key(), kind,
                    stake_wei=self.options.validator_stakes[i] if self.options.validator_stakes else 0,
                )
            )
        assert self.w3 is not None
        # Each account gets what the task needs from it (escrow, deposit or stake, and gas):
        # a fixed amount ran out for long tasks (25 rounds escrow 100 ETH).
        section = self.task_section()
        for plan in plans:
            funding = funding_wei(plan.role, section, plan.stake_wei)
            fund(self.w3, Account.from_key(plan.private_key).address, funding)
            self.plans[plan.name] = plan

    def start_bootstrap(self) -> list[str]:
        folder = self.output / "nodes" / "bootstrap"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "bootstrap.toml"
        network = {"key_file": "bootstrap.key", "listen": self.listen_addrs("bootstrap")}
        config.write_text(to_toml({"network": network}), encoding="utf-8")
        process = self.processes.add(
            ManagedProcess(
                "bootstrap",
                self.node_argv("bootstrap", "bootstrap", "--config", str(config)),
                self.logs / "bootstrap.log",
                env=_child_env(),
                forks=self.forks,
            )
        )
        process.start()
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        while time.monotonic() < deadline:
            addresses = [
                line.strip()
                for line in log_tail(process.log_path, lines=200).splitlines()
                if line.startswith("/ip4/") and "/p2p/" in line
            ]
            if addresses:
                self.say(f"bootstrap {addresses[0]}")
                return addresses
            if not process.running:
                raise NodeDied("bootstrap", process.returncode, process.tail())
            self._sleep(0.2)
        raise LocalnetError(
            f"the bootstrap node printed no multiaddr within {BOOTSTRAP_TIMEOUT:.0f}s; "
            f"its log:\n{process.tail()}"
        )

    def task_defaults(self) -> TaskDefaults:
        options = self.options
        return TaskDefaults(
            rounds=options.rounds,
            workers=options.workers,
            validators=options.validators,
            model=options.model_reference,
            # Validators judge on a held-out slice of the training split that no worker
            # trains on; the launcher's learning curve uses the untouched test split.
            validation=HOLDOUT,
            overrides=options.task_overrides,
        )

    def task_section(self) -> dict[str, Any]:
        """The requester's [task], as its node.toml will have it."""
        return self.task_defaults().section(Path("unused"))

    def write_configs(self, bootstrap: list[str]) -> None:
        options = self.options
        assert self.rpc_url is not None and self.registry is not None
        task = self.task_defaults()
        holdout = int(task.section(Path("unused"))["validation_samples"])
        for plan in self.plans.values():
            document = node_document(
                plan,
                rpc_url=self.rpc_url,
                registry=self.registry,
                bootstrap=bootstrap,
                data_root=options.data_root,
                partition=options.partition,
                alpha=options.alpha,
                num_parts=options.workers,
                seed=options.seed,
                max_samples=options.max_samples,
                task=task,
                log_level=options.node_log_level,
                status_listen=self.status_listen if plan.role == "requester" else None,
                dataset=options.dataset,
                holdout_samples=holdout,
                listen=self.listen_addrs(plan.name),
            )
            try:
                write_node_config(plan, document)
            except ConfigError as exc:
                if plan.role == "requester" and options.task_overrides:
                    raise ConfigError(
                        f"{exc} (the scenario {options.scenario_path} sets [task] "
                        f"{sorted(options.task_overrides)}; fix it there)"
                    ) from exc
                raise
            self.processes.add(
                ManagedProcess(
                    plan.name,
                    self.node_argv(plan.name, "run", "--config", str(plan.config_path)),
                    self.logs / f"{plan.name}.log",
                    env=_child_env(),
                    forks=self.forks,
                )
            )

    def start_nodes(self) -> None:
        for plan in self.plans.values():
            self.processes[plan.name].start()
        self.say(
            f"started requester, {self.options.workers} workers, {self.options.validators} "
            f"validators; logs in {self.logs}"
        )
        self.say(f"the requester's status page: http://{self.status_listen}/")

    # ------------------------------------------------------------------ following the task

    def open_view(self) -> ChainView:
        assert self.w3 is not None and self.reader is not None
        self.view = ChainView(
            self.w3,
            self.reader,
            self.participants(),
            evaluator=lambda: TestSetEvaluator(
                self.options.data_root, self.options.model_reference, dataset=self.options.dataset
            ),
            cursor_path=self.output / "monitor-cursor.json",
            say=self.say,
        )
        return self.view

    def participants(self) -> list[Participant]:
        return [
            Participant(p.name, p.role, Account.from_key(p.private_key).address, p.behaviour)
            for p in self.plans.values()
        ]

    def _apply_crashes(self, view: ChainView) -> None:
        finalized = {r.round for r in view.tracker.finalized_rounds()}
        for crash in self.scenario.crashes:
            if crash in self.crashes_done or crash.after_round not in finalized:
                continue
            self.crashes_done.add(crash)
            process = self.processes[crash.node_name]
            process.expected_down = True
            process.kill()
            self.say(f"scenario: killed {crash.node_name} (SIGKILL) after round {crash.after_round}")
            if crash.restart_after is not None:
                self.restarts_due[crash.node_name] = time.monotonic() + crash.restart_after
        for name, due in list(self.restarts_due.items()):
            if time.monotonic() >= due:
                del self.restarts_due[name]
                self.processes[name].start()
                self.say(f"scenario: restarted {name}")

    def deadline(self) -> float:
        if self.options.timeout is not None:
            return self._started + self.options.timeout
        task = TaskDefaults(
            self.options.rounds, self.options.workers, self.options.validators,
            overrides=self.options.task_overrides,
        ).section(Path("unused"))
        per_round = task["training_seconds"] + task["commit_seconds"] + task["reveal_seconds"]
        return self._started + task["recruit_seconds"] + self.options.rounds * (per_round + 60)

    def _failed_node(self, view: ChainView) -> ManagedProcess | None:
        failed = self.processes.failed(clean_exit_ok=view.tracker.terminated)
        if failed is not None and not view.tracker.terminated:
            # A node stops by itself once it saw the task end: read the chain once more
            # before calling its exit a failure.
            view.poll()
            failed = self.processes.failed(clean_exit_ok=view.tracker.terminated)
        return failed

    def watch(self, view: ChainView) -> None:
        deadline = self.deadline()
        expected = {"workers": self.options.workers, "validators": self.options.validators}
        while True:
            try:
                view.poll()
            except (OSError, ChainError, Web3Exception) as exc:
                raise LocalnetError(
                    f"lost the chain at {self.rpc_url}: {exc}; the last lines of anvil's log:\n"
                    f"{log_tail(self.logs / 'anvil.log', 20)}"
                ) from exc
            self._apply_crashes(view)
            down = [p.name for p in self.processes.processes.values() if p.starts and not p.running]
            view.show_status(expected, down)
            failed = self._failed_node(view)
            if failed is not None:
                raise NodeDied(failed.name, failed.returncode, failed.tail())
            if view.tracker.terminated:
                assert view.tracker.termination is not None
                self.say(f"task terminated: {view.tracker.termination.name}")
                self._wait_for_nodes_to_finish(view)
                return
            if time.monotonic() > deadline:
                raise LocalnetError(
                    f"the task did not terminate within {deadline - self._started:.0f}s; "
                    f"see the node logs in {self.logs}"
                )
            self._sleep(self.options.poll_interval)

    def _wait_for_nodes_to_finish(self, view: ChainView) -> None:
        """Nodes withdraw what they earned and exit by themselves once the task is over; let
        them, so the results read balances and withdrawals at rest (stragglers are stopped)."""
        deadline = time.monotonic() + FINISH_GRACE_SECONDS
        while time.monotonic() < deadline:
            if not any(p.running for p in self.processes.processes.values() if p.name != "bootstrap"):
                break
            self._sleep(self.options.poll_interval)
        else:
            running = [p.name for p in self.processes.processes.values() if p.running]
            self.say(f"still running {FINISH_GRACE_SECONDS:.0f}s after the end: {', '.join(running)}")
        view.poll()

    def write_outputs(self, view: ChainView, outcome: str) -> None:
        document = view.results(
            outcome=outcome,
            options=self.options.described(),
            scenario=_describe_scenario(self.scenario),
            chain={"backend": "anvil", "rpc_url": self.rpc_url, "registry": self.registry},
            wall_seconds=time.monotonic() - self._started,
            model_seed=int(self.options.task_overrides.get("model_seed", 0)),
            final_model=self.plans["requester"].folder / "final-model.bin",
        )
        _write_outputs(document, self.output, self.say)

    def stop(self) -> None:
        self.processes.stop_all()
        if self.anvil is not None:
            self.anvil.stop()

    def run(self) -> int:
        """The whole run; 0 when the task terminated, 1 otherwise (the reason printed)."""
        self.prepare_output()
        with self.stop_requests.installed():
            try:
                self.start_chain()
                self.plan_nodes()
                bootstrap = self.start_bootstrap()
                self.write_configs(bootstrap)
                view = self.open_view()
                self.start_nodes()
                self.watch(view)
                self.processes.stop_all()  # the requester's block store is free once it stopped
                view.rebuild_evaluations([p.data_dir for p in self.plans.values()])
                view.print_table()
                self.write_outputs(view, "completed")
                return 0
            except (LocalnetError, KeyboardInterrupt, Interrupted) as exc:
                reason = str(exc) or type(exc).__name__
                self.say(f"localnet failed: {reason}")
                self.processes.stop_all()  # nodes must not train on while the results are written
                if self.view is not None and self.view.task is not None:
                    try:
                        self.write_outputs(self.view, f"failed: {reason.splitlines()[0]}")
                    except Exception as write_error:  # results are a bonus on failure
                        self.say(f"(no results.json: {write_error})")
                return 130 if isinstance(exc, KeyboardInterrupt | Interrupted) else 1
            finally:
                # A second Ctrl-C must not cut the clean-up short.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                self.stop()


def _child_env() -> dict[str, str]:
    """The launcher's environment, with this checkout importable from any working folder
    (`python -m node.cli` must find the same code as the launcher, installed or not)."""
    source_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([source_root, *[p for p in paths if p != source_root]])
    env.setdefault("PYTHONUNBUFFERED", "1")  # logs reach the files as they happen
    return env


def _fresh_key() -> str:
    return "0x" + bytes(Account.create().key).hex()


def _describe_scenario(scenario: ResolvedScenario) -> dict[str, Any]:
    return {
        "description": scenario.description,
        "workers": {f"worker-{i}": k for i, k in enumerate(scenario.worker_kinds)},
        "validators": {f"validator-{i}": k for i, k in enumerate(scenario.validator_kinds)},
        "crashes": [asdict(c) for c in scenario.crashes],
    }


def _write_outputs(document: dict[str, Any], output: Path, say: Callable[[str], None]) -> None:
    path = output / "results.json"
    write_results(document, path)
    plots = write_plots(document, output)
    say(f"results: {path}; plots: {', '.join(str(p) for p in plots)}")


def run_in_process(
    options: LocalnetOptions, scenario: ResolvedScenario, out: TextIO = sys.stdout
) -> int:
    """--in-process: run_inprocess (every node in this process, embedded chain), then the
    same table and results.json from the chain it leaves behind. The table comes at the
    end: the run holds this thread until the task is over."""
    from node.localnet.inprocess import run_inprocess

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    stays_down = [c.node_name for c in scenario.crashes if c.restart_after is None]
    if stays_down:
        raise LocalnetError(
            f"--in-process restarts a crashed node at once; {', '.join(stays_down)} would stay "
            "down: give its [[crash]] a restart_after or run without --in-process"
        )
    # run_inprocess kills a node when it reaches (round, phase) and starts it again at once.
    crash_points = {
        f"{c.role}{c.index}": (c.after_round + 1, "training") for c in scenario.crashes
    }
    output = options.output.resolve()
    if output.exists() and any(output.iterdir()):
        raise LocalnetError(f"output folder {output} is not empty; pass another --output or delete it")
    started = time.monotonic()
    say(f"in-process: requester, {options.workers} workers, {options.validators} validators "
        "on the embedded chain")
    holdout = int(options.task_overrides.get("validation_samples", TaskDefaults.validation_samples))
    result = trio.run(
        partial(
            run_inprocess,
            output / "nodes",
            options.data_root,
            workers=options.workers,
            validators=options.validators,
            rounds=options.rounds,
            model=options.model_reference,
            max_samples=options.max_samples,
            worker_behaviours=scenario.worker_kinds,
            validator_behaviours=scenario.validator_kinds,
            validator_stakes=options.validator_stakes,
            # Validators judge on a held-out slice of the training split, as in a localnet
            # of processes; the learning curve stays on the test split.
            validation_samples=holdout,
            task={"validation": HOLDOUT, **options.task_overrides},
            data={
                "source": options.dataset,
                "partition": options.partition,
                "alpha": options.alpha,
                "seed": options.seed,
                "holdout_samples": holdout,
            },
            crash=crash_points,
            timeout_s=options.timeout or 3600.0,
        )
    )
    node_folders = ["requester"]
    node_folders += [f"validator{i}" for i in range(len(result.validators))]
    node_folders += [f"worker{i}" for i in range(len(result.workers))]
    statuses = [("requester", "requester", "honest", result.requester)]
    statuses += [(f"worker-{i}", "worker", scenario.worker_kinds[i], s) for i, s in enumerate(result.workers)]
    statuses += [
        (f"validator-{i}", "validator", scenario.validator_kinds[i], s)
        for i, s in enumerate(result.validators)
    ]
    participants = [
        Participant(name, role, to_checksum_address(status.address), kind)
        for name, role, kind, status in statuses
    ]
    reader_key = _fresh_key()
    # eth-tester refuses even a call from an account that cannot pay for its gas.
    fund(result.w3, Account.from_key(reader_key).address, 10**18)
    reader = ChainClient(result.w3, reader_key, registry=result.registry)
    view = ChainView(
        result.w3,
        reader,
        participants,
        evaluator=lambda: TestSetEvaluator(
            options.data_root, options.model_reference, dataset=options.dataset
        ),
        cursor_path=output / "monitor-cursor.json",
        say=say,
        live=False,  # the run is over: one table at the end
    )
    view.poll()
    # run_inprocess's data folders: nodes/requester, nodes/worker0, nodes/validator0, ...
    view.rebuild_evaluations([output / "nodes" / name for name in node_folders])
    view.print_table()
    document = view.results(
        outcome="completed" if view.tracker.terminated else "failed: the task did not terminate",
        options=options.described(),
        scenario=_describe_scenario(scenario),
        chain={"backend": "embedded", "rpc_url": None, "registry": result.registry},
        wall_seconds=time.monotonic() - started,
        model_seed=int(options.task_overrides.get("model_seed", 0)),
        final_model=output / "nodes" / "final-model.bin",  # run_inprocess's [task] output
    )
    _write_outputs(document, output, say)
    return 0 if view.tracker.terminated else 1


def run_localnet(options: LocalnetOptions, out: TextIO = sys.stdout) -> int:
    """Run a localnet with `options` (scenario defaults already merged by the caller)."""
    scenario = (
        load_scenario(options.scenario_path)
        if options.scenario_path is not None
        else Scenario(source="<no scenario>")
    )
    resolved = scenario.resolve(options.workers, options.validators)
    if options.in_process:
        return run_in_process(options, resolved, out)
    return Localnet(options, resolved, out).run()
