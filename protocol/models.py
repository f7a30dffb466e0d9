"""Model architectures by name, so a task can name the architecture its updates must match."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from protocol.errors import ProtocolError


class MnistCNN(nn.Module):
    """The CNN of McMahan et al. 2017 ("CNN" for MNIST, 1,663,370 parameters).

    Two 5x5 convolutions (32 then 64 channels, "same" padding), each followed by ReLU and
    2x2 max pooling, a 512-unit fully connected ReLU layer, and a 10-way linear output
    (logits; the softmax lives in the loss).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class Mnist2NN(nn.Module):
    """The "2NN" of McMahan et al. 2017: two 200-unit ReLU layers (199,210 parameters).

    Much cheaper than the CNN; useful where many models train on one machine.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 200),
            nn.ReLU(),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mnist_cnn": MnistCNN,
    "mnist_2nn": Mnist2NN,
}


def build_model(name: str, seed: int | None = None) -> nn.Module:
    """A fresh model of the named architecture.

    With a seed the initial weights are a pure function of (name, seed), so every node
    building the task's initial model gets identical weights; the global torch RNG is left
    untouched either way.
    """
    try:
        factory = MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ProtocolError(f"unknown model architecture {name!r}; known: {known}") from None
    if seed is None:
        return factory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
