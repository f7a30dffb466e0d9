"""Data-poisoning attacks: label flipping, shuffled labels and the pixel-pattern backdoor."""

from __future__ import annotations

import numpy as np
import pytest

from node.attacks.backdoor import Trigger, attack_success_rate, backdoor, stamp
from node.attacks.label_flip import label_flip
from node.attacks.shuffled_labels import shuffled_labels


def test_label_flip_changes_exactly_the_source_labels() -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=500)
    original = labels.copy()
    flipped = label_flip(labels, source=1, target=7)
    np.testing.assert_array_equal(labels, original)  # the input is left alone
    source = labels == 1
    assert source.sum() > 0
    assert np.all(flipped[source] == 7)
    np.testing.assert_array_equal(flipped[~source], labels[~source])
    assert np.count_nonzero(flipped != labels) == source.sum()


@pytest.mark.parametrize("fraction", [0.01, 0.25, 0.5, 1.0])
def test_label_flip_of_a_fraction_flips_that_share_of_the_source_class_only(fraction: float) -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=500)
    flipped = label_flip(labels, source=1, target=7, fraction=fraction)
    source = np.flatnonzero(labels == 1)
    changed = np.flatnonzero(flipped != labels)
    assert len(changed) == int(np.ceil(fraction * len(source)))
    np.testing.assert_array_equal(changed, source[: len(changed)])  # the first in shard order
    assert np.all(flipped[changed] == 7)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_label_flip_refuses_a_fraction_outside_0_to_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction must be in"):
        label_flip(np.arange(10), source=1, target=7, fraction=fraction)


def test_shuffled_labels_keep_the_label_counts_and_follow_the_seed() -> None:
    labels = np.random.default_rng(1).integers(0, 10, size=300)
    shuffled = shuffled_labels(labels, np.random.default_rng(2))
    np.testing.assert_array_equal(np.bincount(shuffled), np.bincount(labels))
    assert np.mean(shuffled != labels) > 0.5
    np.testing.assert_array_equal(shuffled, shuffled_labels(labels, np.random.default_rng(2)))


def images_and_labels(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 200, size=(n, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, 10, size=n)


def test_trigger_is_a_checkerboard_in_the_bottom_right_corner() -> None:
    images, _ = images_and_labels(4)
    trigger = Trigger.for_images(images, 3)
    assert trigger.value == 255.0
    stamped = stamp(images, trigger)
    corner = stamped[:, -3:, -3:]
    expected = np.array([[255, 0, 255], [0, 255, 0], [255, 0, 255]], np.uint8)
    assert np.all(corner == expected)
    np.testing.assert_array_equal(stamped[:, :-3, :], images[:, :-3, :])
    np.testing.assert_array_equal(stamped[:, :, :-3], images[:, :, :-3])
    colour = stamp(np.zeros((2, 3, 8, 8), np.float32), Trigger(2, 1.0))
    assert np.all(colour[:, :, -2:, -2:] == np.array([[1.0, 0.0], [0.0, 1.0]]))


def test_backdoor_stamps_exactly_the_chosen_fraction() -> None:
    images, labels = images_and_labels(200)
    trigger = Trigger.for_images(images, 4)
    poisoned, relabelled, chosen = backdoor(
        images, labels, trigger, target=0, fraction=0.3, rng=np.random.default_rng(4)
    )
    assert len(chosen) == 60 and len(set(chosen.tolist())) == 60
    changed = np.flatnonzero(np.any(poisoned != images, axis=(1, 2)))
    assert set(changed.tolist()) <= set(chosen.tolist())
    assert np.all(poisoned[chosen][:, -4:, -4:] == trigger.pattern())
    others = np.setdiff1d(np.arange(200), chosen)
    np.testing.assert_array_equal(poisoned[others], images[others])
    assert np.all(relabelled[chosen] == 0)
    np.testing.assert_array_equal(relabelled[others], labels[others])
    again = backdoor(images, labels, trigger, 0, 0.3, np.random.default_rng(4))
    np.testing.assert_array_equal(again[2], chosen)


def test_attack_success_rate_counts_triggered_non_target_images() -> None:
    images, labels = images_and_labels(200)
    images[:, -4:, -4:] = 0  # clean images never carry the pattern by chance
    trigger = Trigger.for_images(images, 4)
    target = 3

    def predict(batch: np.ndarray) -> np.ndarray:
        # a backdoored model that obeys the trigger only on images with a bright first pixel
        triggered = np.all(batch[:, -4:, -4:] == trigger.pattern(), axis=(1, 2))
        return np.where(triggered & (batch[:, 0, 0] >= 100), target, 9)

    keep = labels != target
    expected = float(np.mean(images[keep][:, 0, 0] >= 100))
    assert 0.2 < expected < 0.8
    assert attack_success_rate(predict, images, labels, trigger, target) == pytest.approx(expected)
    assert attack_success_rate(lambda b: np.full(len(b), 9), images, labels, trigger, target) == 0.0


def test_backdoor_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="images"):
        stamp(np.zeros((5, 10)), Trigger(2, 1.0))
    with pytest.raises(ValueError, match="does not fit"):
        stamp(np.zeros((5, 3, 3)), Trigger(4, 1.0))
    with pytest.raises(ValueError, match="nothing to measure"):
        attack_success_rate(lambda b: b, np.zeros((3, 8, 8)), np.zeros(3, int), Trigger(2, 1.0), 0)
