"""Per-node config files for the localnet, checked with node.config before they are written.

Each node gets a folder `nodes/<name>/` with `node.toml`, its chain key (`chain.key`, 0600)
and its data dir (`data/`). The task parameters suit a small local run: every worker and
validator must join before it starts, the committee is every validator unless the run sets
a committee size (committee size = validator count seats everyone whatever the stakes:
tau * w >= W for each), and phases end early as soon as everyone acted, so the deadlines only
matter when a node is down. Each validator stakes the task's minimum unless its plan says
more (`NodePlan.stake_wei`, from --validator-stakes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import NodeConfig, parse_config
from protocol.models import ModelReference

__all__ = [
    "NodePlan",
    "TaskDefaults",
    "funding_wei",
    "node_document",
    "to_toml",
    "write_node_config",
]

ETHER = 10**18
# Gas a node may spend, priced high for anvil (its base fee stays near 1 gwei and falls on
# empty blocks; a transaction must hold gas limit x max fee = 2 x base + 1 gwei up front).
GAS_PRICE_CAP_WEI = 10 * 10**9
SETUP_GAS = 3_000_000  # register (~0.8M with the VRF certificate), join or create + start, withdraw
ROUND_GAS = 3_000_000  # one round of one node: a validator's commit, reveal and finalize at most
DEPLOY_GAS = 20_000_000  # RewardMath, VRF, the Task implementation and the Registry


NON_IID_REWARD_POLICY = "topk"
"""The localnet's reward policy when its workers' data is not split IID (--partition
dirichlet or shards) and nothing names one: `work` judges an update against the round's
other updates and the validation set, as honest IID workers' updates agree, and rejects and
slashes honest non-IID workers (`python -m bench.work_rounds --workers 7 --rounds 8
--partition dirichlet --alpha 0.5`: an honest worker rejected in 80 of 80 rounds, mostly for
raising one class's loss, its data lacking that class; an in-process localnet of 5 workers,
Dirichlet(0.5), 3 rounds: 4 of 5 rejected every round under `work`, final 78.8%; under
`topk` 3, 1 and 0 rejected for accuracy under the qualification threshold, final 84.4%)."""


@dataclass(frozen=True)
class TaskDefaults:
    """[task] of the localnet's requester; `overrides` (a scenario's [task]) win."""

    rounds: int
    workers: int
    validators: int
    training_seconds: int = 180
    commit_seconds: int = 120
    reveal_seconds: int = 60
    qualification_threshold: float = 0.3
    validation_samples: int = 1000
    model: str = "mnist_cnn"
    validation: str | None = None  # the requester's validation source; None: the test split
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def section(self, output: Path) -> dict[str, Any]:
        section: dict[str, Any] = {
            "model": self.model,
            "rounds": self.rounds,
            "worker_reward_per_round_wei": 3 * ETHER,
            "validator_reward_per_round_wei": 1 * ETHER,
            "worker_deposit_wei": 1 * ETHER,
            "validator_stake_wei": 2 * ETHER,
            "committee_size": self.validators,
            # Pay for work (protocol.work): every honest worker is paid at every base, by its
            # sample claim times its update's agreement with the others, and an update that
            # shows no work (free rider, copy, boosted, reversed, one class's labels flipped)
            # is rejected and slashed (bench.work_quality). "topk" pays every accepted worker
            # alike, free riders that pass the threshold included; "contribution" leaves IID
            # workers unpaid whenever their leave-one-out score is noise below zero.
            # A rejected worker loses 10% of its original deposit each round, so over the
            # default 10 rounds it is slashed every round (at 50% it is empty after two).
            "slash_fraction_bps": 1000,
            "reward_policy": "work",
            "top_k": self.workers,
            "qualification_threshold": self.qualification_threshold,
            "tolerance": 0.02,
            "training_seconds": self.training_seconds,
            "commit_seconds": self.commit_seconds,
            "reveal_seconds": self.reveal_seconds,
            "min_workers": self.workers,
            "max_workers": self.workers,
            "min_validators": self.validators,
            "max_validators": self.validators,
            "recruit_seconds": 600,
            "start_after_seconds": 300,
            "validation_samples": self.validation_samples,
            **({"validation": self.validation} if self.validation else {}),
            "output": str(output),
        }
        section.update(self.overrides)
        return section


def funding_wei(role: str, task: Mapping[str, Any], stake_wei: int = 0) -> int:
    """What an account of `role` needs for the task `task` (a [task] section, wei keys):
    the requester the whole escrow, rounds x (worker + validator reward per round); a worker
    its deposit, a validator its stake (`stake_wei`, or the task's minimum when 0); each the
    gas of its transactions over every round. "deployer" is the account that deploys the
    contracts."""
    rounds = int(task["rounds"])
    gas = (SETUP_GAS + rounds * ROUND_GAS) * GAS_PRICE_CAP_WEI
    if role == "requester":
        per_round = int(task["worker_reward_per_round_wei"]) + int(task["validator_reward_per_round_wei"])
        return rounds * per_round + gas
    if role == "worker":
        return int(task["worker_deposit_wei"]) + gas
    if role == "validator":
        return (stake_wei or int(task["validator_stake_wei"])) + gas
    if role == "deployer":
        return DEPLOY_GAS * GAS_PRICE_CAP_WEI
    raise ValueError(f"no funding rule for role {role!r}")


@dataclass(frozen=True)
class NodePlan:
    name: str  # requester | worker-<i> | validator-<i>
    role: str
    folder: Path
    private_key: str  # 0x hex
    behaviour: str = "honest"
    part_index: int = 0
    stake_wei: int = 0  # a validator's stake; 0: the task's minimum

    @property
    def config_path(self) -> Path:
        return self.folder / "node.toml"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def key_path(self) -> Path:
        return self.folder / "chain.key"


def node_document(
    plan: NodePlan,
    *,
    rpc_url: str,
    registry: str,
    bootstrap: list[str],
    data_root: Path,
    partition: str,
    alpha: float,
    num_parts: int,
    seed: int,
    max_samples: int | None,
    task: TaskDefaults,
    log_level: str = "info",
    status_listen: str | None = None,
    dataset: str = "mnist",
    holdout_samples: int = 0,
    listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
) -> dict[str, Any]:
    """The TOML document of one node (absolute paths, so the file works from anywhere)."""
    data: dict[str, Any] = {
        "source": dataset,
        "root": str(data_root.resolve()),
        "partition": partition,
        "alpha": alpha,
        "num_parts": num_parts,
        "part_index": plan.part_index,
        "seed": seed,
    }
    if max_samples is not None:
        data["max_samples"] = max_samples
    if holdout_samples:
        data["holdout_samples"] = holdout_samples
    document: dict[str, Any] = {
        "node": {
            "role": plan.role,
            "data_dir": str(plan.data_dir.resolve()),
            "torch_threads": 1,
            "log_level": log_level,
            **({"status_listen": status_listen} if status_listen else {}),
            **({"stake_wei": plan.stake_wei} if plan.stake_wei else {}),
        },
        "network": {"listen": list(listen), "bootstrap": list(bootstrap)},
        "chain": {
            "rpc_url": rpc_url,
            "private_key_file": str(plan.key_path.resolve()),
            "registry": registry,
            "task": "auto",
            "poll_interval": 0.5,
        },
        "data": data,
    }
    task_section = task.section(plan.folder.resolve() / "final-model.bin")
    model = str(task_section["model"])
    if ModelReference.parse(model).imported:  # the operator named it: every node trusts it
        document["node"]["trusted_models"] = [model]
    if plan.role == "requester":
        document["task"] = task_section
    elif plan.role in ("worker", "validator"):
        document["behaviour"] = {plan.role: plan.behaviour}
    return document


def write_node_config(plan: NodePlan, document: Mapping[str, Any]) -> NodeConfig:
    """Check `document` with node.config, then write node.toml and the 0600 key file."""
    config = parse_config(document, plan.config_path)
    plan.folder.mkdir(parents=True, exist_ok=True)
    plan.data_dir.mkdir(exist_ok=True)
    fd = os.open(plan.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(plan.private_key + "\n")
    plan.config_path.write_text(to_toml(document), encoding="utf-8")
    return config


def to_toml(document: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for a document of tables holding strings, numbers, booleans and string lists."""
    lines: list[str] = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no {value}")
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value)
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        if any(ord(c) < 0x20 for c in escaped):
            raise ValueError(f"control character in TOML string {text!r}")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
