"""`fl-node localnet`: a whole network on this machine, one OS process per node.

1. anvil (node/anvil.py); one fresh account per process funded from anvil's dev account
   (anvil hands out duplicate nonces to concurrent senders of one account); the Registry
   deployed from its own account;
2. a bootstrap node (`fl-node bootstrap`), its multiaddr read from its output;
3. one config per node (node/localnet/configs.py), then the requester, the workers and the
   validators as `python -m node.cli run --config ...`, each logging to `logs/<name>.log`;
4. a read-only view of the chain: the task's events feed a TaskTracker; each finalized
   round prints a table row, with the round's global model evaluated on the MNIST test set;
5. results.json and plots in the output folder;
6. every process stopped (process groups; SIGTERM then SIGKILL), anvil too, also on Ctrl-C
   and on failure; a node that dies unasked fails the run with its log tail.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from eth_account import Account
from eth_typing import HexStr
from web3 import Web3

from node.anvil import Anvil
from node.chain.client import ChainClient
from node.chain.dev import fund
from node.chain.events import EventFollower
from node.chain.types import ChainEvent, RoundInfo
from node.localnet.configs import NodePlan, TaskDefaults, node_document, write_node_config
from node.localnet.evaluation import TestSetEvaluator
from node.localnet.processes import ManagedProcess, ProcessGroup, log_tail
from node.localnet.results import Participant, build_results, write_plots, write_results
from node.localnet.scenario import Crash, ResolvedScenario, Scenario, load_scenario
from node.localnet.table import header, round_row, status_line
from node.localnet.tracker import PHASE_NAMES, RoundRecord, TaskTracker
from protocol.training import Metrics

__all__ = [
    "GLOBAL_MODEL_PATTERN",
    "LocalnetError",
    "LocalnetOptions",
    "NodeDied",
    "run_localnet",
]

logger = logging.getLogger(__name__)

FUNDING_WEI = 1_000 * 10**18
# Where a node keeps the global model after round r (the codec format, no pickle).
GLOBAL_MODEL_PATTERN = "global/round-{round}.bin"
BOOTSTRAP_TIMEOUT = 120.0
MODEL_WAIT_SECONDS = 20.0  # how long after RoundFinalized to wait for the round's model file


class LocalnetError(RuntimeError):
    """The localnet could not be set up or did not complete; the text says why."""


class NodeDied(LocalnetError):
    def __init__(self, name: str, returncode: int | None, tail: str) -> None:
        super().__init__(
            f"{name} exited with status {returncode} though nobody stopped it; "
            f"the last lines of its log:\n{tail}"
        )
        self.name = name


class Interrupted(LocalnetError):
    """SIGINT or SIGTERM reached the launcher."""


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
    timeout: float | None = None  # seconds for the whole run; None: derived from the phases
    poll_interval: float = 1.0
    python: str = sys.executable
    node_log_level: str = "info"
    task_overrides: dict[str, Any] = field(default_factory=dict)

    def described(self) -> dict[str, Any]:
        described = asdict(self)
        for key in ("output", "data_root", "scenario_path"):
            described[key] = None if described[key] is None else str(described[key])
        described.pop("python")
        return described


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGINT, by default KeyboardInterrupt) end the run through `finally`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class Localnet:
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
        self.processes = ProcessGroup()
        self.anvil: Anvil | None = None
        self.w3: Web3 | None = None
        self.reader: ChainClient | None = None
        self.plans: dict[str, NodePlan] = {}
        self.tracker = TaskTracker()
        self.task: str | None = None
        self.boundaries: dict[int, RoundInfo] = {}
        self.evaluations: dict[int, Metrics] = {}
        self.pending_models: dict[int, float] = {}  # round -> monotonic deadline for its file
        self.registry: str | None = None
        self.rpc_url: str | None = None
        self.crashes_done: set[Crash] = set()
        self.restarts_due: dict[str, float] = {}
        self._timestamps: dict[int, int] = {}
        self._last_status = ""
        self._started = time.monotonic()
        self._evaluator: TestSetEvaluator | None = None
        self.models_missing = False

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ set-up

    def prepare_output(self) -> None:
        if self.output.exists() and any(self.output.iterdir()):
            raise LocalnetError(
                f"output folder {self.output} is not empty; pass another --output or delete it "
                "(each run starts a fresh chain, so old node data would not match)"
            )
        self.logs.mkdir(parents=True, exist_ok=True)

    def start_chain(self) -> None:
        self.anvil = Anvil(log_path=self.logs / "anvil.log", accounts=1).start()
        self.rpc_url = self.anvil.url
        self.w3 = self.anvil.web3()
        deployer = Account.create()
        fund(self.w3, deployer.address, FUNDING_WEI)
        client = ChainClient(self.w3, deployer.key)
        deployment = client.deploy_registry()
        self.registry = deployment.registry
        self.reader = client  # reads only from here on; its account sends nothing more
        self.say(f"anvil {self.rpc_url}  registry {self.registry}")

    def plan_nodes(self) -> None:
        nodes = self.output / "nodes"
        plans = [NodePlan("requester", "requester", nodes / "requester", _fresh_key())]
        for i, kind in enumerate(self.scenario.worker_kinds):
            plans.append(
                NodePlan(f"worker-{i}", "worker", nodes / f"worker-{i}", _fresh_key(), kind, i)
            )
        for i, kind in enumerate(self.scenario.validator_kinds):
            plans.append(
                NodePlan(f"validator-{i}", "validator", nodes / f"validator-{i}", _fresh_key(), kind)
            )
        assert self.w3 is not None
        for plan in plans:
            fund(self.w3, Account.from_key(plan.private_key).address, FUNDING_WEI)
            self.plans[plan.name] = plan

    def start_bootstrap(self) -> list[str]:
        folder = self.output / "nodes" / "bootstrap"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "bootstrap.toml"
        config.write_text(
            '[network]\nkey_file = "bootstrap.key"\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n',
            encoding="utf-8",
        )
        process = self.processes.add(
            ManagedProcess(
                "bootstrap",
                [self.options.python, "-m", "node.cli", "bootstrap", "--config", str(config)],
                self.logs / "bootstrap.log",
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
            time.sleep(0.2)
        raise LocalnetError(
            f"the bootstrap node printed no multiaddr within {BOOTSTRAP_TIMEOUT:.0f}s; "
            f"its log:\n{process.tail()}"
        )

    def write_configs(self, bootstrap: list[str]) -> None:
        options = self.options
        assert self.rpc_url is not None and self.registry is not None
        task = TaskDefaults(
            rounds=options.rounds,
            workers=options.workers,
            validators=options.validators,
            overrides=options.task_overrides,
        )
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
            )
            write_node_config(plan, document)
            self.processes.add(
                ManagedProcess(
                    plan.name,
                    [options.python, "-m", "node.cli", "run", "--config", str(plan.config_path)],
                    self.logs / f"{plan.name}.log",
                )
            )

    def start_nodes(self) -> None:
        for plan in self.plans.values():
            self.processes[plan.name].start()
        self.say(
            f"started requester, {self.options.workers} workers, {self.options.validators} "
            f"validators; logs in {self.logs}"
        )

    # ------------------------------------------------------------------ following the task

    def _timestamp(self, block: int) -> int:
        if block not in self._timestamps:
            assert self.w3 is not None
            self._timestamps[block] = int(self.w3.eth.get_block(block)["timestamp"])
        return self._timestamps[block]

    def _find_task(self) -> None:
        assert self.reader is not None
        if self.reader.task_count() > 0:
            self.task = self.reader.task_at(0)
            self.say(f"task {self.task}")

    def _address_names(self) -> dict[str, str]:
        return {Account.from_key(p.private_key).address: p.name for p in self.plans.values()}

    def name_of(self, address: str) -> str:
        return self._address_names().get(address, address)

    def follow(self, follower: EventFollower) -> None:
        assert self.reader is not None
        for event in follower.poll():
            finalized = self.tracker.feed(event, self._timestamp(event.block_number))
            if finalized is not None:
                self._on_finalized(finalized, event)
        follower.commit()

    def _on_finalized(self, record: RoundRecord, event: ChainEvent) -> None:
        assert self.reader is not None and self.task is not None
        self.boundaries[record.round] = self.reader.round_info(self.task, record.round)
        self.pending_models[record.round] = time.monotonic() + MODEL_WAIT_SECONDS

    def _evaluate_ready_models(self, force: bool = False) -> None:
        """Evaluate every finalized round whose model file exists; print its row once done
        (or, without the file, once its wait ran out)."""
        for number in sorted(self.pending_models):
            path = self.plans["requester"].data_dir / GLOBAL_MODEL_PATTERN.format(round=number)
            deadline = self.pending_models[number]
            if path.exists():
                try:
                    self.evaluations[number] = self.evaluator.evaluate_file(path)
                except Exception as exc:  # a bad file is reported, never fatal
                    self.say(f"round {number}: cannot evaluate {path}: {exc}")
            elif not force and time.monotonic() < deadline and not self.models_missing:
                break  # rows stay in round order
            else:
                # The runtime writes no per-round models: do not wait for the later ones.
                self.models_missing = True
            del self.pending_models[number]
            record = self.tracker.rounds[number]
            self.say(round_row(record, self.name_of, self.evaluations.get(number), self._gas(record)))

    @property
    def evaluator(self) -> TestSetEvaluator:
        if self._evaluator is None:
            self._evaluator = TestSetEvaluator(self.options.data_root)
        return self._evaluator

    def _gas(self, record: RoundRecord) -> int:
        gas = self._gas_by_tx([h for hashes in record.tx_hashes.values() for h in hashes])
        return sum(gas.values())

    def _gas_by_tx(self, hashes: list[str]) -> dict[str, int]:
        assert self.w3 is not None
        return {
            h: int(self.w3.eth.get_transaction_receipt(HexStr(h))["gasUsed"]) for h in set(hashes)
        }

    # ------------------------------------------------------------------ crashes

    def _apply_crashes(self) -> None:
        finalized = {r.round for r in self.tracker.finalized_rounds()}
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

    # ------------------------------------------------------------------ the run

    def deadline(self) -> float:
        if self.options.timeout is not None:
            return self._started + self.options.timeout
        task = TaskDefaults(
            self.options.rounds, self.options.workers, self.options.validators
        ).section(Path("unused"))
        task.update(self.options.task_overrides)
        per_round = task["training_seconds"] + task["commit_seconds"] + task["reveal_seconds"]
        return self._started + task["recruit_seconds"] + self.options.rounds * (per_round + 60)

    def watch(self) -> None:
        assert self.w3 is not None
        follower = EventFollower(self.w3, self.output / "monitor-cursor.json")
        deadline = self.deadline()
        self.say(header())
        while True:
            if self.task is None:
                self._find_task()
                if self.task is not None:
                    follower.follow(self.task, 0)
            if self.task is not None:
                self.follow(follower)
                self._apply_crashes()
                self._evaluate_ready_models()
                self._show_status()
            # After the events: a node may stop by itself once it saw the task end.
            failed = self.processes.failed(clean_exit_ok=self.tracker.terminated)
            if failed is not None:
                raise NodeDied(failed.name, failed.returncode, failed.tail())
            if self.tracker.terminated and not self.pending_models:
                self.say(f"task terminated: {self.tracker.termination.name}")  # type: ignore[union-attr]
                return
            if time.monotonic() > deadline:
                raise LocalnetError(
                    f"the task did not terminate within {deadline - self._started:.0f}s; "
                    f"see the node logs in {self.logs}"
                )
            time.sleep(self.options.poll_interval)

    def _show_status(self) -> None:
        assert self.reader is not None and self.task is not None
        if self.tracker.terminated:
            return
        phase = PHASE_NAMES[self.reader.phase(self.task)]
        down = [p.name for p in self.processes.processes.values() if p.starts and not p.running]
        line = status_line(
            self.tracker.current_round,
            phase,
            {"workers": self.options.workers, "validators": self.options.validators},
            down,
        )
        if line != self._last_status:
            self._last_status = line
            self.say(f"  {line}")

    def collect_results(self, outcome: str) -> dict[str, Any]:
        assert self.reader is not None
        participants = []
        for plan in self.plans.values():
            address = Account.from_key(plan.private_key).address
            participants.append(Participant(plan.name, plan.role, address, plan.behaviour))
        balances = {}
        if self.task is not None:
            for p in participants:
                balances[p.address] = self.reader.credited_balance(self.task, p.address)
        hashes = [
            h
            for record in self.tracker.rounds.values()
            for kind_hashes in record.tx_hashes.values()
            for h in kind_hashes
        ]
        initial = None
        try:
            initial = self.evaluator.evaluate_initial(
                int(self.options.task_overrides.get("model_seed", 0))
            )
        except Exception as exc:
            logger.warning("cannot evaluate the initial model: %s", exc)
        return build_results(
            options=self.options.described(),
            scenario={
                "description": self.scenario.description,
                "workers": {f"worker-{i}": k for i, k in enumerate(self.scenario.worker_kinds)},
                "validators": {
                    f"validator-{i}": k for i, k in enumerate(self.scenario.validator_kinds)
                },
                "crashes": [asdict(c) for c in self.scenario.crashes],
            },
            participants=participants,
            chain={
                "rpc_url": self.rpc_url,
                "chain_id": self.reader.chain_id,
                "registry": self.registry,
                "task": self.task,
            },
            tracker=self.tracker,
            boundaries=self.boundaries,
            evaluations=self.evaluations,
            gas_by_tx=self._gas_by_tx(hashes),
            final_balances=balances,
            wall_seconds=time.monotonic() - self._started,
            outcome=outcome,
            initial_evaluation=initial,
        )

    def write_outputs(self, outcome: str) -> None:
        document = self.collect_results(outcome)
        path = self.output / "results.json"
        write_results(document, path)
        plots = write_plots(document, self.output)
        self.say(f"results: {path}; plots: {', '.join(str(p) for p in plots)}")

    def stop(self) -> None:
        self.processes.stop_all()
        if self.anvil is not None:
            self.anvil.stop()

    def run(self) -> int:
        """The whole run; 0 when the task terminated, 1 otherwise (the reason printed)."""
        self.prepare_output()
        with _signals_raise():
            try:
                self.start_chain()
                self.plan_nodes()
                bootstrap = self.start_bootstrap()
                self.write_configs(bootstrap)
                self.start_nodes()
                self.watch()
                # Give nodes a moment to write the last round's model, then stop them.
                self.write_outputs("completed")
                return 0
            except (LocalnetError, KeyboardInterrupt) as exc:
                reason = str(exc) or type(exc).__name__
                self.say(f"localnet failed: {reason}")
                if self.task is not None and self.reader is not None:
                    try:
                        self.write_outputs(f"failed: {reason.splitlines()[0]}")
                    except Exception as write_error:  # results are a bonus on failure
                        self.say(f"(no results.json: {write_error})")
                return 130 if isinstance(exc, KeyboardInterrupt | Interrupted) else 1
            finally:
                self.stop()


def _fresh_key() -> str:
    return "0x" + bytes(Account.create().key).hex()


def run_localnet(options: LocalnetOptions, out: TextIO = sys.stdout) -> int:
    """Run a localnet with `options` (scenario defaults already merged by the caller)."""
    scenario = (
        load_scenario(options.scenario_path)
        if options.scenario_path is not None
        else Scenario(source="<no scenario>")
    )
    resolved = scenario.resolve(options.workers, options.validators)
    return Localnet(options, resolved, out).run()
