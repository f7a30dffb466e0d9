"""The work of the Flower baseline's apps, in fl-node's own code: nothing here imports flwr.

`bench.flower_app` (the Flower ServerApp and ClientApp, run by `bench.flower_baseline` in
.venv-flower) calls these, so a Flower client trains exactly what an fl-node worker trains:
its shard from `node.datasets.load_worker_shard` of the worker's own node.toml, the model
from `node.models.build_model`, one pass of `protocol.training.train_local` with the
worker's [training] settings, at the node's torch thread count; and the Flower server
measures the global model as fl-node's requester does (`protocol.training.evaluate` on the
task's validation set). Importing this needs torch, numpy and msgpack only (no libp2p, no
web3), so the Flower venv can take it from this checkout.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from node.config import NodeConfig, TrainingConfig, load_config
from node.datasets import load_validation_set, load_worker_shard
from node.models import build_model, train_config
from protocol.data import Dataset, to_tensors
from protocol.training import evaluate, train_local

StateDict = dict[str, torch.Tensor]


def round_seed(part_index: int, round: int) -> int:
    """The batch-order seed of a worker's training in `round` (fl-node derives it from the
    worker's address and the round the same way; Flower nodes have no address)."""
    return (part_index << 16) ^ round


def train_update(
    model: str, base: StateDict, shard: Dataset, training: TrainingConfig, seed: int
) -> StateDict:
    """An honest worker's update: `training` from `base` on `shard`, as fl-node's
    `node.runtime.learning.train_update` trains it (same model build, config and loop)."""
    net = build_model(model)
    net.load_state_dict(base)
    images, labels = to_tensors(shard)
    train_local(net, images, labels, train_config(training, seed))
    return {name: t.detach().clone() for name, t in net.state_dict().items()}


def process_age() -> float:
    """Seconds since this process started (Linux: /proc/self/stat's start time against the
    uptime)."""
    with open("/proc/self/stat", encoding="ascii") as handle:
        stat = handle.read()
    started = int(stat[stat.rfind(")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime", encoding="ascii") as handle:
        uptime = float(handle.read().split()[0])
    return uptime - started


@dataclass(frozen=True)
class ClientWork:
    """One Flower client's round: the update, its sample count and where its time went."""

    state: StateDict
    samples: int
    load_seconds: float  # reading and partitioning its shard (a fresh ClientApp process each round)
    train_seconds: float


def client_round(worker_toml: Path, model: str, base: StateDict, round: int) -> ClientWork:
    """What a Flower client does in one round, as the fl-node worker with this node.toml."""
    config = load_config(worker_toml)
    torch.set_num_threads(config.node.torch_threads)
    started = time.perf_counter()
    shard = load_worker_shard(config.data)
    loaded = time.perf_counter()
    state = train_update(model, base, shard, config.training, round_seed(config.data.part_index, round))
    return ClientWork(state, len(shard), loaded - started, time.perf_counter() - loaded)


@dataclass
class Requester:
    """The Flower server's side of the task, from the fl-node requester's node.toml: the
    model, its initial weights, the rounds, and the validation set it measures on."""

    config: NodeConfig
    validation: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def load(cls, requester_toml: Path) -> Requester:
        config = load_config(requester_toml)
        torch.set_num_threads(config.node.torch_threads)
        task = config.task
        validation = load_validation_set(config.data, task.validation_samples, task.validation)
        return cls(config, to_tensors(validation))

    @property
    def model(self) -> str:
        return self.config.task.model

    @property
    def rounds(self) -> int:
        return self.config.task.rounds

    def initial_state(self) -> StateDict:
        """The task's initial model, as fl-node's requester publishes it."""
        return build_model(self.model, seed=self.config.task.model_seed).state_dict()

    def accuracy(self, state: StateDict) -> float:
        net = build_model(self.model)
        net.load_state_dict(state)
        images, labels = self.validation
        return evaluate(net, images, labels).accuracy
