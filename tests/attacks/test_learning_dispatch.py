"""The runtime's training job runs the worker attack named in [behaviour]: real MNIST, real
training of mnist_2nn through `learning.train_update`, as a worker's round does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from node.blocks import BlockStore
from node.config import BehaviourConfig, TrainingConfig
from node.datasets import load_mnist
from node.runtime import learning
from protocol.data import Dataset
from protocol.envelope import generate_keypair
from protocol.models import build_model
from tests.attacks.conftest import DATA_ROOT, needs_mnist

pytestmark = needs_mnist("test")


def test_train_update_runs_the_configured_attack(tmp_path: Path) -> None:
    private, _ = generate_keypair()
    book = learning.ModelBook(
        "mnist_2nn", BlockStore(tmp_path / "blocks"), learning.TaskCrypto(private, bytes(20))
    )
    test = load_mnist(DATA_ROOT, "test")
    shard = Dataset(test.images[:600], test.labels[:600])
    base = build_model("mnist_2nn", seed=0).state_dict()

    def run(worker: str) -> dict[str, torch.Tensor]:
        return learning.train_update(
            book, base, shard, TrainingConfig(lr=0.1), BehaviourConfig(worker=worker), seed=3
        )

    honest = run("honest")
    flipped = run("sign_flip:scale=2")
    for name, tensor in base.items():
        assert flipped[name].dtype == tensor.dtype
        expected = tensor.double() - 2 * (honest[name].double() - tensor.double())
        np.testing.assert_allclose(flipped[name].double().numpy(), expected.numpy(), atol=1e-5)
        assert not torch.equal(honest[name], tensor)  # it did train
    assert all(torch.equal(run("free_rider")[n], base[n]) for n in base)
    assert learning.claimed_samples(BehaviourConfig(worker="inflated_samples"), 600) == 6000
    assert learning.claimed_samples(BehaviourConfig(worker="scaled:scale=3"), 600) == 600
