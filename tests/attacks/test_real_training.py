"""The data-poisoning attacks are the real attacks: real MNIST, real local training of
mnist_2nn from one base, each attack run through `attacked_update` as a worker runs it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from node.attacks.backdoor import Trigger, attack_success_rate
from node.attacks.spec import parse_attack_spec
from node.attacks.worker import attacked_update
from node.datasets import load_mnist
from protocol.data import Dataset, to_tensors
from protocol.models import build_model
from protocol.training import TrainConfig, train_local
from tests.attacks.conftest import DATA_ROOT, needs_mnist

ARCH = "mnist_2nn"

pytestmark = needs_mnist("test")

State = dict[str, np.ndarray]


def module(state: State) -> torch.nn.Module:
    model = build_model(ARCH, seed=0)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
    return model


def predictor(state: State) -> Callable[[np.ndarray], np.ndarray]:
    model = module(state).eval()

    def predict(images: np.ndarray) -> np.ndarray:
        inputs, _ = to_tensors(Dataset(images, np.zeros(len(images), np.int64)))
        with torch.no_grad():
            return model(inputs).argmax(dim=1).numpy()

    return predict


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    test = load_mnist(DATA_ROOT, "test")
    return Dataset(test.images[:3000], test.labels[:3000]), Dataset(
        test.images[5000:7000], test.labels[5000:7000]
    )


@pytest.fixture(scope="module")
def updates(data: tuple[Dataset, Dataset]) -> dict[str, State]:
    shard, _ = data
    base = {name: t.numpy().copy() for name, t in build_model(ARCH, seed=0).state_dict().items()}

    def train(part: Dataset) -> State:
        model = module(base)
        inputs, labels = to_tensors(part)
        train_local(model, inputs, labels, TrainConfig(epochs=1, batch_size=32, lr=0.1, seed=1))
        return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}

    kinds = (
        "honest", "backdoor:target=0,fraction=0.3,size=4", "label_flip:source=1,target=7",
        "alie:z=0.5244,parts=4",
    )
    return {"base": base} | {
        kind.partition(":")[0]: dict(
            attacked_update(parse_attack_spec(kind), base, shard, train, np.random.default_rng(0))
        )
        for kind in kinds
    }


def accuracy(state: State, data: Dataset) -> float:
    return float(np.mean(predictor(state)(data.images) == data.labels))


def test_backdoor_is_learned_and_stays_quiet_on_clean_digits(
    data: tuple[Dataset, Dataset], updates: dict[str, State]
) -> None:
    _, holdout = data
    trigger = Trigger.for_images(holdout.images, 4)
    honest, backdoored = updates["honest"], updates["backdoor"]
    assert attack_success_rate(predictor(honest), holdout.images, holdout.labels, trigger, 0) < 0.1
    assert attack_success_rate(predictor(backdoored), holdout.images, holdout.labels, trigger, 0) > 0.9
    assert accuracy(backdoored, holdout) > accuracy(honest, holdout) - 0.1


def test_label_flip_sends_the_source_class_to_the_target(
    data: tuple[Dataset, Dataset], updates: dict[str, State]
) -> None:
    _, holdout = data
    ones = holdout.images[holdout.labels == 1]
    assert np.mean(predictor(updates["honest"])(ones) == 7) < 0.05
    assert np.mean(predictor(updates["label_flip"])(ones) == 7) > 0.7
    others = Dataset(holdout.images[holdout.labels != 1], holdout.labels[holdout.labels != 1])
    assert accuracy(updates["label_flip"], others) > 0.7


def test_a_lone_alie_attacker_moves_as_far_as_an_honest_worker(
    updates: dict[str, State],
) -> None:
    """Its mean is estimated from deltas that each take an honest update's SGD steps, so the
    attack is at an honest update's scale, not shrunk by the number of parts."""
    base = updates["base"]

    def length(state: State) -> float:
        return float(np.sqrt(sum(
            np.sum((state[n].astype(np.float64) - base[n]) ** 2) for n in base
            if np.issubdtype(base[n].dtype, np.floating)
        )))

    ratio = length(updates["alie"]) / length(updates["honest"])
    assert 0.6 < ratio < 1.5, ratio
