"""A whole network in one process: bootstrap, requester, workers and validators as node
objects on the embedded chain (eth-tester), with real libp2p hosts on 127.0.0.1, real
gossip and block exchange, real MNIST.

Chain time: eth-tester stamps blocks with the wall clock but mines only on transactions,
so a clock task mines an empty block every `block_interval_s`: deadlines then pass as on
a real chain. Phases also end early on chain once everyone expected has acted, so an
honest network never waits for a deadline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import trio
from eth_account import Account
from eth_typing import ABIFunction
from eth_utils import function_abi_to_4byte_selector
from web3 import Web3

from node.chain import ChainClient, RoundResult, dev
from node.chain.artifacts import load_artifact
from node.config import NodeConfig, parse_config
from node.datasets.builtin import shared_loads
from node.discovery import BOOTSTRAP_DISCOVERY, open_discovery
from node.host import HostConfig, host_multiaddrs, open_host
from node.runtime.driver import NodeStatus
from node.runtime.keys import write_chain_key
from node.runtime.node import run_node
from protocol.state.records import PHASE_ORDER, Phase

__all__ = ["InProcessResult", "run_inprocess"]

logger = logging.getLogger("fl_node.runtime")

ETHER = 10**18
FUNDING_WEI = 1_000 * ETHER
MIN_POLL_INTERVAL_S = 0.3
CHAIN_READS_PER_S = 40.0  # node polls per second, all nodes together


@dataclass
class InProcessResult:
    """What happened: the task, every node's status, the chain's round results."""

    w3: Web3
    reader: ChainClient  # a funded client of the deployer, for views and checks
    registry: str
    task: str
    requester: NodeStatus
    workers: list[NodeStatus]
    validators: list[NodeStatus]
    rounds: list[RoundResult] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # nodes killed and started again

    @property
    def nodes(self) -> list[NodeStatus]:
        return [self.requester, *self.workers, *self.validators]


def _node_document(
    workdir: Path,
    name: str,
    role: str,
    registry: str,
    bootstrap: Sequence[str],
    data_root: Path,
    data: Mapping[str, Any],
    training: Mapping[str, Any],
    task: Mapping[str, Any],
    behaviour: Mapping[str, str],
    poll_interval: float,
) -> dict[str, Any]:
    return {
        "node": {"role": role, "data_dir": f"{name}", "torch_threads": 1},
        "network": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": list(bootstrap)},
        "chain": {
            "rpc_url": "embedded",
            "private_key_file": f"{name}/chain.key",
            "registry": registry,
            "task": "auto",
            "poll_interval": poll_interval,
        },
        "data": {"root": str(data_root), **data},
        "training": dict(training),
        "task": dict(task),
        "behaviour": dict(behaviour),
    }


def _seeded_key(seed: int, name: str) -> bytes:
    """A chain key for node `name` from `seed` (a SHA-256 is below secp256k1's order but
    with negligible probability)."""
    return hashlib.sha256(f"fl-node in-process key|{seed}|{name}".encode()).digest()


async def run_inprocess(
    workdir: Path,
    data_root: Path,
    *,
    workers: int = 3,
    validators: int = 2,
    rounds: int = 2,
    model: str = "mnist_cnn",
    max_samples: int | None = 3000,
    validation_samples: int = 500,
    worker_behaviours: Sequence[str] = (),
    validator_behaviours: Sequence[str] = (),
    validator_stakes: Sequence[int] = (),
    task: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    crash: Mapping[str, tuple[int, str]] | None = None,
    block_interval_s: float = 1.0,
    timeout_s: float = 900.0,
    key_seed: int | None = None,
) -> InProcessResult:
    """Run a task from creation to termination; returns when every node is done.

    `worker_behaviours[i]` / `validator_behaviours[i]` set a node's [behaviour] (default
    honest); `validator_stakes[i]` validator i's stake in wei (default the task's minimum);
    `task`, `training` and `data` override those sections' keys (e.g.
    data={"partition": "dirichlet", "alpha": 0.3}); `crash`
    maps a node name ("worker0") to the (round, phase) at which it is killed once and
    started again from its data directory; `key_seed` derives every node's chain key from
    the seed and the node's name (default: random keys), so two runs with one seed give
    each worker the same address and so the same training seed: two tasks that differ only
    in one worker's behaviour then train their other workers alike.
    """
    crash = dict(crash or {})
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    w3 = dev.embedded_web3()
    _build_mined_reads_once(w3)
    lock = threading.Lock()
    deployer_key = os.urandom(32)
    dev.fund(w3, Account.from_key(deployer_key).address, FUNDING_WEI)
    deployer = ChainClient(w3, deployer_key)
    registry = deployer.deploy_registry().registry
    task_keys = {
        "model": model,
        "rounds": rounds,
        "min_workers": workers,
        "max_workers": workers,
        "min_validators": validators,
        "max_validators": validators,
        "committee_size": validators,
        "training_seconds": 300,
        "commit_seconds": 300,
        "reveal_seconds": 300,
        "recruit_seconds": 900,
        "validation_samples": validation_samples,
        "output": str(workdir / "final-model.bin"),
        **(task or {}),
    }
    # the node's learning rate (node.config): a faster one overshoots a 500-sample epoch, and
    # the WORK policy rejects an update that raises the validation loss (protocol.work)
    training_keys = {"epochs": 1, "batch_size": 32, **(training or {})}
    data_keys: dict[str, Any] = {"num_parts": workers, "seed": 7}
    if max_samples is not None:
        data_keys["max_samples"] = max_samples
    data_keys.update(data or {})

    statuses: dict[str, list[NodeStatus]] = {}
    restarted: list[str] = []
    # the workers read the same training split: once for all of them
    with shared_loads():
        async with open_host(HostConfig(key_path=workdir / "bootstrap.key")) as boot_host:
            async with open_discovery(boot_host, BOOTSTRAP_DISCOVERY):
                bootstrap = host_multiaddrs(boot_host)
                configs: list[tuple[str, NodeConfig]] = []
                plan = [("requester", "requester", 0)]
                plan += [(f"worker{i}", "worker", i) for i in range(workers)]
                plan += [(f"validator{i}", "validator", i) for i in range(validators)]
                for name, role, index in plan:
                    behaviour = {}
                    if role == "worker" and index < len(worker_behaviours):
                        behaviour["worker"] = worker_behaviours[index]
                    if role == "validator" and index < len(validator_behaviours):
                        behaviour["validator"] = validator_behaviours[index]
                    document = _node_document(
                        workdir, name, role, registry, bootstrap, data_root,
                        {**data_keys, "part_index": index if role == "worker" else 0},
                        training_keys, task_keys, behaviour, poll_interval(len(plan)),
                    )
                    if role == "validator" and index < len(validator_stakes):
                        document["node"]["stake_wei"] = validator_stakes[index]
                    config = parse_config(document, workdir / f"{name}.toml")
                    key = os.urandom(32) if key_seed is None else _seeded_key(key_seed, name)
                    key_file = config.chain.private_key_file
                    if not key_file.exists():
                        write_chain_key(key_file, key)
                        dev.fund(w3, Account.from_key(key).address, FUNDING_WEI)
                    configs.append((name, config))

                async with trio.open_nursery() as nursery:

                    async def chain_clock() -> None:
                        while True:
                            await trio.sleep(block_interval_s)
                            await trio.to_thread.run_sync(lambda: _locked(lock, dev.mine, w3))

                    all_done = trio.Event()

                    async def linger() -> None:
                        if all(s and s[0].done for s in statuses.values()):
                            all_done.set()
                        await all_done.wait()

                    async def node(name: str, config: NodeConfig) -> None:
                        out: list[NodeStatus] = []
                        statuses[name] = out
                        if name in crash and not await _crashed(name, crash[name], config, out):
                            return
                        await run_node(
                            config, w3=w3, chain_lock=lock, name=name, status_out=out, linger=linger
                        )

                    async def _crashed(
                        name: str, point: tuple[int, str], config: NodeConfig, out: list[NodeStatus]
                    ) -> bool:
                        """Run the node until it reaches `point`, then kill it (True), or until it
                        is done first (False)."""
                        with trio.CancelScope() as scope:

                            async def watch() -> None:
                                while not (out and _reached(out[0], point)):
                                    await trio.sleep(0.05)
                                scope.cancel()

                            async with trio.open_nursery() as watcher:
                                watcher.start_soon(watch)
                                await run_node(
                                    config, w3=w3, chain_lock=lock, name=name, status_out=out,
                                    linger=linger,
                                )
                                watcher.cancel_scope.cancel()
                        if scope.cancelled_caught:
                            logger.info("[%s] killed at round %d, %s; restarting it", name, *point)
                            out.clear()
                            restarted.append(name)
                        return scope.cancelled_caught

                    clock_scope = trio.CancelScope()

                    async def clock() -> None:
                        with clock_scope:
                            await chain_clock()

                    nursery.start_soon(clock)
                    with trio.fail_after(timeout_s):
                        async with trio.open_nursery() as nodes:
                            for name, config in configs:
                                nodes.start_soon(node, name, config)
                    clock_scope.cancel()

    def status(name: str) -> NodeStatus:
        return statuses[name][0]

    requester = status("requester")
    if requester.task is None:
        raise RuntimeError("the requester never created its task")
    reader = ChainClient(w3, deployer_key, registry=registry)
    last = reader.current_round(requester.task)
    results = [reader.round_result(requester.task, r) for r in range(1, last + 1)]
    return InProcessResult(
        w3=w3,
        reader=reader,
        registry=registry,
        task=requester.task,
        requester=requester,
        workers=[status(f"worker{i}") for i in range(workers)],
        validators=[status(f"validator{i}") for i in range(validators)],
        rounds=results,
        restarted=restarted,
    )


def poll_interval(nodes: int) -> float:
    """Seconds between one node's chain polls: every node polls the one embedded chain,
    one read at a time, so the process's reads per second stay bounded as nodes are added
    (a node reacts to a block within this long)."""
    return max(MIN_POLL_INTERVAL_S, nodes / CHAIN_READS_PER_S)


def _build_mined_reads_once(w3: Web3) -> None:
    """Make eth-tester build each mined block and receipt once, and run each view call once
    per block.

    eth-tester rebuilds a receipt (decoding its block and every transaction in it) on each
    read, and its get_logs reads the receipt of every transaction in the range: every node
    of this process polls the same blocks, so each receipt was rebuilt once per node, with
    the chain lock held, and the polls of a hundred nodes queued behind each other for
    minutes. A mined block or receipt never changes here (nothing reverts this chain), so
    the first one built is kept; the latest or pending block is always read afresh."""
    tester = dev.embedded_tester(w3)
    if tester is None:
        return
    receipts: dict[Any, Any] = {}
    blocks: dict[int, Any] = {}
    read_receipt, read_block = tester.get_transaction_receipt, tester.get_block_by_number

    def receipt(transaction_hash: Any) -> Any:
        found = receipts.get(transaction_hash)
        if found is None:
            found = read_receipt(transaction_hash)
            if found.get("block_number") is not None:
                receipts[transaction_hash] = found
        return found

    def block(block_number: Any = "latest", full_transactions: bool = False) -> Any:
        if full_transactions or isinstance(block_number, bool) or not isinstance(block_number, int):
            return read_block(block_number, full_transactions)
        found = blocks.get(block_number)
        if found is None:
            found = blocks[block_number] = read_block(block_number, False)
        return found

    # eth_call at "latest": every node reads the same views (a task's members, each member's
    # registry record) and py-evm executes each call afresh, so a hundred nodes loading a
    # hundred members ran ten thousand identical executions under the chain lock before the
    # task could start. A call's result at "latest" is fixed until the next block is mined;
    # the results are kept for the current head only. A view of our contracts never reads
    # msg.sender (test_views_do_not_read_the_sender), so its result is shared by every
    # caller; any other call (a transaction's simulation) is keyed by its sender too.
    read_call = tester.call
    views = _view_selectors()
    calls: dict[str, Any] = {}
    calls_head: list[int] = [-1]

    def call(transaction: Any, block_number: Any = "latest") -> Any:
        if block_number != "latest":
            return read_call(transaction, block_number)
        head = int(tester.backend.chain.get_block().number)  # the pending block; latest is head - 1
        if head != calls_head[0]:
            calls.clear()
            calls_head[0] = head
        data = str(transaction.get("data") or transaction.get("input") or "")
        if data[:10].lower() in views and not transaction.get("value"):
            key = f"{str(transaction.get('to', '')).lower()} {data.lower()}"
        else:
            key = repr(sorted(transaction.items()))
        if key not in calls:
            calls[key] = read_call(transaction, block_number)  # a revert raises: not kept
        return calls[key]

    tester.get_transaction_receipt = receipt
    tester.get_block_by_number = block
    tester.call = call


VIEW_CONTRACTS = ("Registry", "Task")


def _view_selectors() -> frozenset[str]:
    """The 0x-prefixed selectors of the view and pure functions of VIEW_CONTRACTS."""
    selectors = set()
    for name in VIEW_CONTRACTS:
        for entry in load_artifact(name).abi:
            if entry.get("type") == "function" and entry.get("stateMutability") in ("view", "pure"):
                selectors.add("0x" + function_abi_to_4byte_selector(cast(ABIFunction, entry)).hex())
    return frozenset(selectors)


def _reached(status: NodeStatus, point: tuple[int, str]) -> bool:
    round, phase = point
    if status.round != round:
        return status.round > round
    return PHASE_ORDER[Phase(status.phase)] >= PHASE_ORDER[Phase(phase)]


def _locked(lock: threading.Lock, fn: Any, *args: Any) -> Any:
    with lock:
        return fn(*args)
