"""Model references, architecture specs and the built-in architectures.

A task names its architecture by a *model reference*: a built-in name (``mnist_cnn``), a
``"package.module:factory"`` importable on every node, or the name of a Python entry point
in the group ``fl_node.models``; integer arguments follow in parentheses, as in
``tabular_mlp(features=30, classes=2)``. Resolving a non-built-in reference imports code,
so it happens in node/ (node.models), from the node's own configuration only.

The *architecture spec* is the ordered list of a model's tensors (name, dtype, shape);
its SHA-256 goes on chain with the task, so a node that builds a different model from
the same reference (another version of a plugin, say) refuses the task before it
deposits anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from protocol.codec import ModelSpec
from protocol.data import MAX_CLASSES, DatasetSpec
from protocol.errors import ProtocolError

ENTRY_POINT_GROUP = "fl_node.models"
SPEC_HASH_DOMAIN = b"fl-node/architecture-spec/v1\n"
ZERO_SPEC_HASH = bytes(32)
MAX_REFERENCE_LENGTH = 256
MAX_MODEL_ARGUMENT = 1 << 20
# A task names its model on chain: a built-in's arguments must not let a requester make
# every joining node allocate without bound.
MAX_BUILTIN_PARAMETERS = 50_000_000
MAX_DEPTH = 32
_IMPORT_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")
_REFERENCE = re.compile(r"^\s*(?P<target>[^()\s]+)\s*(\((?P<args>[^()]*)\))?\s*$")
_ARGUMENT = re.compile(r"^\s*(?P<key>[A-Za-z_]\w*)\s*=\s*(?P<value>-?\d+)\s*$")


class ModelReferenceError(ProtocolError):
    """A model reference is malformed, unknown, or builds something unusable."""


def is_import_reference(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:name``."""
    return _IMPORT_REFERENCE.match(text) is not None


def _check_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ModelReferenceError(f"num_classes={num_classes} must be in [2, {MAX_CLASSES}]")


class MnistCNN(nn.Module):
    """The CNN of McMahan et al. 2017 ("CNN" for MNIST, 1,663,370 parameters).

    Two 5x5 convolutions (32 then 64 channels, "same" padding), each followed by ReLU and
    2x2 max pooling, a 512-unit fully connected ReLU layer, and a 10-way linear output
    (logits; the softmax lives in the loss).
    """

    def __init__(self, num_classes: int = 10) -> None:
        _check_classes(num_classes)
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
        _check_classes(num_classes)
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


class CifarCNN(nn.Module):
    """A small CNN for 3x32x32 images (620,362 parameters at 10 classes): three 3x3
    convolutions (32, 64, 128 channels, "same" padding), each followed by ReLU and 2x2 max
    pooling, a 256-unit fully connected ReLU layer and a linear output."""

    def __init__(self, num_classes: int = 10) -> None:
        _check_classes(num_classes)
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(128 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.pool(torch.relu(self.conv3(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class TabularMLP(nn.Module):
    """An MLP for rows of ``features`` numbers: ``depth`` ReLU layers of ``hidden`` units
    and a ``classes``-way linear output; every size is a task parameter."""

    def __init__(self, features: int, classes: int, hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        for name, value, low, high in (("features", features, 1, MAX_MODEL_ARGUMENT),
                                       ("classes", classes, 2, MAX_CLASSES),
                                       ("hidden", hidden, 1, MAX_MODEL_ARGUMENT),
                                       ("depth", depth, 0, MAX_DEPTH)):
            if not low <= value <= high:
                raise ModelReferenceError(f"tabular_mlp: {name}={value} must be in [{low}, {high}]")
        widths = [features, *([hidden] * depth), classes]
        parameters = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))
        if parameters > MAX_BUILTIN_PARAMETERS:
            raise ModelReferenceError(
                f"tabular_mlp: {parameters:,} parameters, over the {MAX_BUILTIN_PARAMETERS:,} bound"
            )
        layers: list[nn.Module] = []
        width = features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": MnistCNN,
    "mnist_2nn": Mnist2NN,
    "cifar_cnn": CifarCNN,
    "tabular_mlp": TabularMLP,
}
# The built-in model a built-in dataset trains by default.
DEFAULT_MODEL_FOR_DATASET: dict[str, str] = {
    "mnist": "mnist_cnn",
    "fashion-mnist": "mnist_cnn",
    "kmnist": "mnist_cnn",
    "emnist-digits": "mnist_cnn",
    "cifar10": "cifar_cnn",
}


@dataclass(frozen=True)
class ModelReference:
    """A parsed model reference: ``target`` (built-in name, ``module:factory`` or entry
    point name) and its integer keyword arguments."""

    target: str
    arguments: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ModelReference:
        if not isinstance(text, str) or len(text) > MAX_REFERENCE_LENGTH:
            raise ModelReferenceError(
                f"model reference must be a string of at most {MAX_REFERENCE_LENGTH} characters"
            )
        match = _REFERENCE.match(text)
        target = match.group("target") if match else ""
        if match is None or not (is_import_reference(target) or _NAME.match(target)):
            raise ModelReferenceError(
                f"model reference {text!r} is not a name, \"package.module:factory\" or "
                "either with integer arguments, e.g. \"tabular_mlp(features=30, classes=2)\""
            )
        arguments: dict[str, int] = {}
        raw = (match.group("args") or "").strip()
        for item in raw.split(",") if raw else ():
            argument = _ARGUMENT.match(item)
            if argument is None:
                raise ModelReferenceError(
                    f"model reference {text!r}: argument {item.strip()!r} is not name=integer"
                )
            key, value = argument.group("key"), int(argument.group("value"))
            if key in arguments:
                raise ModelReferenceError(f"model reference {text!r}: {key} given twice")
            if abs(value) > MAX_MODEL_ARGUMENT:
                raise ModelReferenceError(
                    f"model reference {text!r}: {key}={value} is over {MAX_MODEL_ARGUMENT}"
                )
            arguments[key] = value
        return cls(target, tuple(sorted(arguments.items())))

    @property
    def builtin(self) -> bool:
        return self.target in MODELS

    @property
    def imported(self) -> bool:
        return is_import_reference(self.target)

    @property
    def kwargs(self) -> dict[str, int]:
        return dict(self.arguments)

    def __str__(self) -> str:
        if not self.arguments:
            return self.target
        return f"{self.target}({', '.join(f'{k}={v}' for k, v in self.arguments)})"


def build_with(factory: Callable[..., nn.Module], kwargs: Mapping[str, int],
               seed: int | None, name: str) -> nn.Module:
    """``factory(**kwargs)`` with the torch RNG seeded (and the global RNG left untouched),
    so every node building a task's initial model gets identical weights."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(**kwargs)
        except TypeError as exc:
            raise ModelReferenceError(f"model {name!r}: bad arguments ({exc})") from exc
    if not isinstance(model, nn.Module):
        raise ModelReferenceError(
            f"model {name!r}: the factory returned {type(model).__name__}, not a torch nn.Module"
        )
    return model


def build_model(name: str, seed: int | None = None) -> nn.Module:
    """A fresh model of a built-in architecture (a reference such as ``mnist_cnn`` or
    ``tabular_mlp(features=30, classes=2)``).

    With a seed the initial weights are a pure function of (reference, seed); the global
    torch RNG is left untouched either way. Imported and entry-point references are built
    by node.models.build_model.
    """
    reference = ModelReference.parse(name)
    if not reference.builtin:
        known = ", ".join(sorted(MODELS))
        raise ModelReferenceError(
            f"unknown model architecture {name!r}; built-in: {known} (an imported or "
            "entry-point model is built by node.models)"
        )
    return build_with(MODELS[reference.target], reference.kwargs, seed, name)


@dataclass(frozen=True)
class ArchitectureSpec:
    """A model's tensors in state_dict order: (name, dtype name, shape)."""

    tensors: tuple[tuple[str, str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ArchitectureSpec:
        codec = ModelSpec.of(model)  # checks every dtype is one the codec carries
        return cls(tuple((name, *codec[name]) for name in model.state_dict()))

    def canonical_bytes(self) -> bytes:
        lines = [f"{name}\t{dtype}\t{','.join(map(str, shape))}" for name, dtype, shape in self.tensors]
        return SPEC_HASH_DOMAIN + "\n".join(lines).encode()

    def hash(self) -> bytes:
        """The 32-byte hash a task pins on chain."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    def codec_spec(self) -> ModelSpec:
        """What the codec decodes a blob against (its size bound follows)."""
        return ModelSpec({name: (dtype, shape) for name, dtype, shape in self.tensors})

    def parameter_count(self) -> int:
        total = 0
        for _, _, shape in self.tensors:
            count = 1
            for dim in shape:
                count *= dim
            total += count
        return total


def spec_hash_problem(reference: str, pinned: bytes, built: bytes) -> str | None:
    """Why a node must refuse a task pinning ``pinned`` when it builds ``built`` from the
    task's reference, or None (an all-zero pin means the task pins nothing)."""
    if pinned == ZERO_SPEC_HASH or pinned == built:
        return None
    return (
        f"model {reference!r}: the task pins architecture spec hash 0x{pinned.hex()} but this "
        f"node builds 0x{built.hex()} from that reference; install the model version the "
        "requester used, or pick another task"
    )


def check_model_accepts(model: nn.Module, spec: DatasetSpec, reference: str, source: str) -> None:
    """Raise ModelReferenceError unless ``model`` maps a batch of ``spec``'s samples to one
    logit per class: the data-versus-model check made before training."""
    probe = torch.zeros((2, *spec.sample_shape), dtype=torch.float32)
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            output = model(probe)
            model.train(was_training)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelReferenceError(
            f"{source}: samples of shape {spec.sample_shape} do not fit model {reference!r} "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelReferenceError(
            f"model {reference!r} maps [2, {spec.sample_shape}] to {shape}; it must output "
            "[batch, classes] logits"
        )
    if output.shape[1] < spec.num_classes:
        raise ModelReferenceError(
            f"{source}: {spec.num_classes} classes but model {reference!r} outputs only "
            f"{output.shape[1]} logits"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
