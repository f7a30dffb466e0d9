"""Backdoor (BadNets, Gu et al. 2017; the pixel-pattern backdoor of Bagdasaryan et al.
2020): a fixed pixel pattern stamped in the bottom-right corner of a fraction of the
attacker's images, which are relabelled as the target class, before honest training. A
model that learns it still classifies clean images well but sends any triggered image to
the target. `attack_success_rate` measures that on test images whose true label is not the
target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trigger:
    """A size x size checkerboard of `value` and 0 in the bottom-right corner of every
    channel (a checkerboard rather than a plain square so no digit stroke mimics it)."""

    size: int
    value: float

    def pattern(self) -> np.ndarray:
        rows, cols = np.indices((self.size, self.size))
        return np.where((rows + cols) % 2 == 0, self.value, 0.0)

    @staticmethod
    def for_images(images: np.ndarray, size: int) -> Trigger:
        """The trigger at the images' brightest raw value (255 for uint8 pixels)."""
        if np.issubdtype(images.dtype, np.integer):
            return Trigger(size, float(np.iinfo(images.dtype).max))
        return Trigger(size, float(np.max(images)) if images.size else 1.0)


def stamp(images: np.ndarray, trigger: Trigger) -> np.ndarray:
    """A copy of `images` ([N, H, W] or [N, C, H, W]) with the trigger in every one."""
    if images.ndim not in (3, 4):
        raise ValueError(f"a pixel trigger needs images [N, H, W] or [N, C, H, W], got {images.shape}")
    if trigger.size > min(images.shape[-2:]):
        raise ValueError(f"a {trigger.size}-pixel trigger does not fit {images.shape[-2:]} images")
    stamped = np.array(images, copy=True)
    stamped[..., -trigger.size :, -trigger.size :] = trigger.pattern().astype(images.dtype)
    return stamped


def backdoor(
    images: np.ndarray,
    labels: np.ndarray,
    trigger: Trigger,
    target: int,
    fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, poisoned indices): round(fraction * N) images chosen at random get
    the trigger and the target label; the others are unchanged."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    chosen = np.sort(rng.choice(len(labels), size=round(fraction * len(labels)), replace=False))
    poisoned_images = np.array(images, copy=True)
    poisoned_images[chosen] = stamp(images[chosen], trigger)
    poisoned_labels = np.array(labels, copy=True)
    poisoned_labels[chosen] = target
    return poisoned_images, poisoned_labels, chosen


def attack_success_rate(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    trigger: Trigger,
    target: int,
) -> float:
    """Share of test images whose true label is not `target` that `predict` (images ->
    predicted labels) classifies as `target` once the trigger is stamped on them."""
    keep = labels != target
    if not keep.any():
        raise ValueError(f"every test label is the target {target}; nothing to measure")
    predicted = np.asarray(predict(stamp(images[keep], trigger)))
    return float(np.mean(predicted == target))
