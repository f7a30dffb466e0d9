"""Local training (FedAvg local SGD, FedProx) and evaluation of a classifier.

Pure computation on tensors the caller provides; the node runs these in a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from protocol.errors import ProtocolError


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters.

    prox_mu > 0 turns FedAvg local SGD into FedProx: the local objective gains
    (mu / 2) * ||w - w_start||^2, pulling the update towards the round's global model.

    average_tail > 0: the trained model is the mean of the weights after each of the last
    `average_tail` of the steps (Polyak-Ruppert tail averaging), not the last step's. With
    momentum SGD a single last iterate can swing a whole class: in an in-process task an
    honest worker's took class 9's validation accuracy from 0.85 to 0.06, what a label flip
    does, and the WORK policy rejected it as one; with the last half of the steps averaged,
    honest updates stay under half of any class's bound (`tests/attacks/test_class_harm.py`).
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    seed: int = 0
    average_tail: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ProtocolError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ProtocolError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        for name in ("lr", "momentum", "weight_decay", "prox_mu"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ProtocolError(f"TrainConfig.{name} must be finite and >= 0, got {value}")
        if self.lr == 0:
            raise ProtocolError("TrainConfig.lr must be > 0")
        if self.momentum >= 1:
            raise ProtocolError(f"TrainConfig.momentum must be < 1, got {self.momentum}")
        if not 0 <= self.average_tail <= 1:
            raise ProtocolError(
                f"TrainConfig.average_tail must be in [0, 1], got {self.average_tail}"
            )


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every optimizer step. Raising from the callback aborts training."""

    epoch: int  # 0-based
    step: int  # 1-based, counted over all epochs
    total_steps: int
    loss: float  # this batch's data loss (without the proximal term)


@dataclass(frozen=True)
class TrainResult:
    n_samples: int
    steps: int
    epoch_losses: tuple[float, ...]  # mean data loss over each epoch's batches, sample-weighted


@dataclass(frozen=True)
class Metrics:
    """Evaluation of a classifier on a labelled set.

    Macro precision and recall average over the classes that occur in the labels or in
    the predictions (as scikit-learn does); a class that is never predicted counts
    precision 0, and one predicted but absent from the labels counts recall 0.
    """

    loss: float
    accuracy: float
    macro_precision: float
    macro_recall: float
    n_samples: int


def _check_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim < 2 or labels.ndim != 1:
        raise ProtocolError(
            f"expected images [N, ...] and labels [N], got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if len(images) != len(labels):
        raise ProtocolError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ProtocolError("no samples: cannot train or evaluate on an empty set")
    if not images.is_floating_point():
        raise ProtocolError(
            f"images must be a float tensor (normalized), got {images.dtype}; "
            "use protocol.data.to_tensors"
        )
    if labels.dtype != torch.int64:
        raise ProtocolError(f"labels must be int64 class indices, got {labels.dtype}")


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ProtocolError(
            f"labels span [{int(labels.min())}, {int(labels.max())}] but the model has "
            f"{num_classes} outputs; labels must lie in [0, {num_classes})"
        )


def train_local(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train model in place with mini-batch SGD (momentum, weight decay) for config.epochs.

    Deterministic given config.seed (batch order comes from a private generator; the
    global torch RNG is untouched) and the same torch thread count.
    """
    _check_data(images, labels)
    n = len(labels)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params] if config.prox_mu > 0 else []
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    step = 0
    epoch_losses: list[float] = []
    tail = TailAverage(model, total_steps, config.average_tail)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        loss_sum = 0.0
        for begin in range(0, n, config.batch_size):
            batch = order[begin : begin + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            logits = model(images[batch])
            if step == 0:
                _check_label_range(labels, logits.shape[1])
            loss = functional.cross_entropy(logits, labels[batch])
            loss.backward()
            if config.prox_mu > 0:
                # Gradient of (mu/2)||w - w0||^2, added directly: same as putting the
                # term in the loss, without building it into the autograd graph.
                with torch.no_grad():
                    for p, p0 in zip(params, start, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p.detach() - p0, alpha=config.prox_mu)
            optimizer.step()
            step += 1
            tail.after_step(step)
            batch_loss = loss.item()
            if not math.isfinite(batch_loss):
                raise ProtocolError(
                    f"training diverged (loss {batch_loss} at step {step}); lower the lr"
                )
            loss_sum += batch_loss * len(batch)
            if progress is not None:
                progress(TrainProgress(epoch, step, total_steps, batch_loss))
        epoch_losses.append(loss_sum / n)
    tail.apply()
    return TrainResult(n_samples=n, steps=step, epoch_losses=tuple(epoch_losses))


class TailAverage:
    """The running mean of a model's floating-point weights and buffers over the last
    `fraction` of `total_steps` (at least one step when `fraction` > 0), put into the model
    by `apply`; integer buffers (BatchNorm's step counts) keep their last value."""

    def __init__(self, model: nn.Module, total_steps: int, fraction: float) -> None:
        self.model = model
        # fraction 0 puts the first averaged step past the last one: nothing is averaged
        self.first = total_steps - math.ceil(total_steps * fraction) + 1
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if step < self.first:
            return
        self.count += 1
        for name, value in self.model.state_dict().items():
            if not value.is_floating_point():
                continue
            if self.count == 1:
                self.mean[name] = value.detach().clone()
            else:
                self.mean[name].add_(value.detach() - self.mean[name], alpha=1 / self.count)

    @torch.no_grad()
    def apply(self) -> None:
        if self.count:
            self.model.load_state_dict(self.mean, strict=False)


def macro_precision_recall(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[float, float]:
    """Macro precision and recall over classes present in labels or predictions (see Metrics)."""
    confusion = torch.bincount(
        labels * num_classes + predictions, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)  # rows: true class, columns: predicted class
    true_positive = confusion.diagonal().to(torch.float64)
    predicted = confusion.sum(dim=0).to(torch.float64)
    actual = confusion.sum(dim=1).to(torch.float64)
    present = (predicted > 0) | (actual > 0)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, true_positive / actual.clamp(min=1), 0.0)
    count = int(present.sum())
    return float(precision[present].sum()) / count, float(recall[present].sum()) / count


EVALUATION_BATCH = 100
"""Samples per forward pass in `evaluate`. Part of the protocol: the loss is summed batch
by batch, so validators reveal the same numbers only with the same batches. Small batches
keep a pass's activations small enough for the allocator to reuse freed memory instead of
the kernel zeroing fresh pages for each (mnist_cnn over 1,000 samples: batches of 1,000 cost
~1.6x the CPU of batches of 100, `python -m bench.eval_batch`)."""


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
    batch_size: int = EVALUATION_BATCH,
) -> Metrics:
    """Mean cross-entropy loss, accuracy and macro precision/recall of model on the set."""
    _check_data(images, labels)
    if batch_size < 1:
        raise ProtocolError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        loss_sum = 0.0
        predictions = []
        num_classes = 0
        for begin in range(0, len(labels), batch_size):
            logits = model(images[begin : begin + batch_size])
            num_classes = logits.shape[1]
            target = labels[begin : begin + batch_size]
            _check_label_range(target, num_classes)
            loss_sum += float(functional.cross_entropy(logits, target, reduction="sum"))
            predictions.append(logits.argmax(dim=1))
    finally:
        model.train(was_training)
    predicted = torch.cat(predictions)
    precision, recall = macro_precision_recall(predicted, labels, num_classes)
    return Metrics(
        loss=loss_sum / len(labels),
        accuracy=float((predicted == labels).sum()) / len(labels),
        macro_precision=precision,
        macro_recall=recall,
        n_samples=len(labels),
    )
