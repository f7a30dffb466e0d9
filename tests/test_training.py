from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from node.datasets import default_data_root, load_mnist, mnist_available
from protocol.data import partition_iid, to_tensors
from protocol.errors import ProtocolError
from protocol.models import build_model
from protocol.training import (
    Metrics,
    TrainConfig,
    TrainProgress,
    evaluate,
    macro_precision_recall,
    train_local,
)

DATA_ROOT = default_data_root()
pytestmark = pytest.mark.skipif(
    not mnist_available(DATA_ROOT), reason=f"MNIST not found at {DATA_ROOT} (set FL_NODE_DATA_ROOT)"
)

Subset = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def subsets() -> tuple[Subset, Subset]:
    """2,000 training and 1,000 held-out images from the real MNIST test split."""
    dataset = load_mnist(DATA_ROOT, "test")
    train_idx, held_idx = partition_iid(len(dataset), 5, seed=0)[:2]
    return to_tensors(dataset, train_idx), to_tensors(dataset, held_idx[:1000])


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_fedavg_local_training_lowers_loss_and_learns(subsets: tuple[Subset, Subset]) -> None:
    (x, y), (x_held, y_held) = subsets
    model = build_model("mnist_2nn", seed=0)
    before = evaluate(model, x_held, y_held)
    progress: list[TrainProgress] = []
    result = train_local(
        model, x, y, TrainConfig(epochs=2, batch_size=50, lr=0.05, momentum=0.9), progress.append
    )
    after = evaluate(model, x_held, y_held)
    assert result.n_samples == len(y) and result.steps == 2 * len(y) // 50
    assert [p.step for p in progress] == list(range(1, result.steps + 1))
    assert progress[-1].total_steps == result.steps and progress[-1].epoch == 1
    assert result.epoch_losses[1] < result.epoch_losses[0]
    assert after.loss < before.loss / 3
    assert after.accuracy > 0.8 and before.accuracy < 0.3


def test_cnn_trains_on_a_real_subset(subsets: tuple[Subset, Subset]) -> None:
    (x, y), (x_held, y_held) = subsets
    model = build_model("mnist_cnn", seed=0)
    before = evaluate(model, x_held, y_held).loss
    train_local(model, x[:1000], y[:1000], TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9))
    assert evaluate(model, x_held, y_held).loss < before / 2


def test_training_is_deterministic_given_the_seed(subsets: tuple[Subset, Subset]) -> None:
    (x, y), _ = subsets
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4, seed=3)
    runs = []
    for seed in (3, 3, 4):
        model = build_model("mnist_2nn", seed=1)
        train_local(model, x[:500], y[:500], dataclasses.replace(config, seed=seed))
        runs.append(flat(model))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_fedprox_with_large_mu_stays_closer_to_the_start(subsets: tuple[Subset, Subset]) -> None:
    (x, y), _ = subsets
    start = build_model("mnist_2nn", seed=2)
    distances = {}
    for mu in (0.0, 1.0):
        model = build_model("mnist_2nn", seed=2)
        train_local(model, x[:1000], y[:1000], TrainConfig(2, 32, lr=0.05, momentum=0.5, prox_mu=mu))
        distances[mu] = float((flat(model) - flat(start)).norm())
    assert distances[1.0] < 0.6 * distances[0.0]


def test_raising_from_progress_aborts(subsets: tuple[Subset, Subset]) -> None:
    (x, y), _ = subsets

    def stop(update: TrainProgress) -> None:
        if update.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_local(build_model("mnist_2nn"), x, y, TrainConfig(1, 10, 0.1), stop)


@pytest.mark.parametrize("fraction", [0.5, 1.0, 0.01])
def test_the_tail_average_is_the_mean_of_the_last_steps_weights(
    subsets: tuple[Subset, Subset], fraction: float
) -> None:
    (x, y), _ = subsets
    model = build_model("mnist_2nn", seed=0)
    after_each: list[dict[str, torch.Tensor]] = []

    def record(update: TrainProgress) -> None:
        after_each.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    config = TrainConfig(1, 10, 0.02, 0.9, seed=4, average_tail=fraction)
    result = train_local(model, x, y, config, record)
    last = after_each[-math.ceil(result.steps * fraction) :]
    assert len(last) >= 1
    for name, value in model.state_dict().items():
        expected = torch.stack([state[name] for state in last]).mean(dim=0)
        assert torch.allclose(value, expected, atol=1e-6), name
    # 0: the last step's weights, exactly as without averaging
    plain, averaged_off = build_model("mnist_2nn", seed=0), build_model("mnist_2nn", seed=0)
    train_local(plain, x, y, TrainConfig(1, 10, 0.02, 0.9, seed=4))
    train_local(averaged_off, x, y, TrainConfig(1, 10, 0.02, 0.9, seed=4, average_tail=0.0))
    for a, b in zip(plain.state_dict().values(), averaged_off.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_divergence_is_reported(subsets: tuple[Subset, Subset]) -> None:
    (x, y), _ = subsets
    with pytest.raises(ProtocolError, match="diverged.*lower the lr"):
        train_local(build_model("mnist_2nn", seed=0), x, y, TrainConfig(1, 50, lr=1e6, momentum=0.9))


def test_evaluate_matches_a_hand_computed_case() -> None:
    class FixedLogits(nn.Module):
        """Predicts the class stored in the input's first feature, with logit 10."""

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(inputs[:, 0].long(), 4).float() * 10

    predictions = torch.tensor([0, 0, 1, 1, 1, 3], dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor([0, 1, 1, 1, 2, 3])
    metrics = evaluate(FixedLogits(), predictions, labels, batch_size=4)
    assert metrics.accuracy == pytest.approx(4 / 6)
    # classes 0..3 all appear in labels or predictions. precision: 0: 1/2, 1: 2/3,
    # 2: never predicted -> 0, 3: 1. recall: 0: 1, 1: 2/3, 2: 0, 3: 1.
    assert metrics.macro_precision == pytest.approx((1 / 2 + 2 / 3 + 0 + 1) / 4)
    assert metrics.macro_recall == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    correct_loss = float(torch.log1p(torch.tensor(3 * np.exp(-10.0))))
    wrong_loss = correct_loss + 10
    assert metrics.loss == pytest.approx((4 * correct_loss + 2 * wrong_loss) / 6, rel=1e-5)
    assert isinstance(metrics, Metrics) and metrics.n_samples == 6


def test_macro_metrics_ignore_classes_absent_from_labels_and_predictions() -> None:
    # Class 2 of 3 appears nowhere, so it is left out of both averages.
    precision, recall = macro_precision_recall(torch.tensor([0, 1]), torch.tensor([0, 1]), 3)
    assert (precision, recall) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(3, 1, 28, 28), torch.zeros(2, dtype=torch.int64), "3 images but 2 labels"),
        (torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64), "no samples"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "to_tensors"),
        (torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int32), "int64"),
        (torch.zeros(2, 1, 28, 28), torch.tensor([0, 10]), "lie in \\[0, 10\\)"),
    ],
)
def test_bad_data_is_refused(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    model = build_model("mnist_2nn")
    with pytest.raises(ProtocolError, match=message):
        evaluate(model, images, labels)
    with pytest.raises(ProtocolError, match=message):
        train_local(model, images, labels, TrainConfig(1, 2, 0.1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be finite"),
        ({"momentum": 1.0}, "momentum must be < 1"),
        ({"prox_mu": -1.0}, "prox_mu must be finite and >= 0"),
        ({"average_tail": 1.5}, "average_tail must be in"),
        ({"average_tail": -0.1}, "average_tail must be in"),
    ],
)
def test_train_config_is_checked(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        TrainConfig(**{"epochs": 1, "batch_size": 8, "lr": 0.1, **changes})  # type: ignore[arg-type]
