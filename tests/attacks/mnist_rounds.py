"""Real mnist_2nn rounds for the checks of protocol.work: IID shards of MNIST, workers that
train as the node's workers do (one epoch of the node's SGD) or run an attack spec, and what
a validator measures of their updates."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from node.attacks.spec import parse_attack_spec
from node.attacks.worker import attacked_update
from node.config import TrainingConfig
from node.datasets import load_mnist
from node.models import train_config
from protocol import verdict as verdicts
from protocol.aggregation.fedavg import fedavg
from protocol.data import Dataset, partition_iid, to_tensors
from protocol.models import build_model
from protocol.training import train_local
from protocol.work import class_harm, improvement, measure
from tests.attacks.conftest import DATA_ROOT

State = dict[str, np.ndarray]


def as_torch(state: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.asarray(a)) for name, a in state.items()}


def module(state: Mapping[str, np.ndarray]) -> torch.nn.Module:
    model = build_model("mnist_2nn", seed=0)
    model.load_state_dict(as_torch(state))
    return model


@dataclass
class Measured:
    """What validators measure of a round's updates: flat deltas from the base, whole-update
    validation gains and per-class harms, by position."""

    deltas: list[torch.Tensor]
    whole: list[int]
    harms: list[str | None]


class MnistTask:
    """`workers` IID shards of `samples` MNIST training images (seed 5) and the first 1,000
    test images as the validation set."""

    def __init__(self, workers: int, samples: int) -> None:
        train_split, test_split = load_mnist(DATA_ROOT, "train"), load_mnist(DATA_ROOT, "test")
        self.shards = [train_split.subset(part) for part in partition_iid(samples * workers, workers, seed=5)]
        self.images, self.labels = to_tensors(Dataset(test_split.images[:1000], test_split.labels[:1000]))
        self.initial: State = {k: v.numpy().copy() for k, v in build_model("mnist_2nn", seed=0).state_dict().items()}

    def trainer(self, base: State, seed: int) -> Callable[[Dataset], State]:
        def train(data: Dataset) -> State:
            model = module(base)
            x, y = to_tensors(data)
            train_local(model, x, y, train_config(TrainingConfig(), seed))
            return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

        return train

    def fedavg(self, states: Sequence[State], claims: Sequence[int]) -> State:
        return {k: v.numpy() for k, v in fedavg([as_torch(s) for s in states], list(claims)).items()}

    def updates(self, base: State, kinds: Sequence[str], shards: Sequence[Dataset] | None = None) -> list[State]:
        """Worker i (seed i) runs attack spec `kinds[i]` ("honest" trains) on shard i."""
        data = self.shards if shards is None else shards
        return [
            attacked_update(parse_attack_spec(kind), base, data[i], self.trainer(base, i), np.random.default_rng(i))
            for i, kind in enumerate(kinds)
        ]

    def measured(self, base: State, states: Sequence[State]) -> Measured:
        at_base = measure(module(base), self.images, self.labels)
        each = [measure(module(s), self.images, self.labels) for s in states]
        return Measured(
            deltas=[verdicts.flat_delta(as_torch(s), as_torch(base)) for s in states],
            whole=[improvement(at_base.loss, m.loss) for m in each],
            harms=[class_harm(at_base, m) for m in each],
        )
