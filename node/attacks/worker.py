"""A worker's round under an attack spec: which data it trains on, what it submits and
how many samples it claims. The honest trainer is passed in, so this stays pure (the
runtime passes one that runs `protocol.training.train_local`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from node.attacks._state import State
from node.attacks.alie import alie
from node.attacks.backdoor import Trigger, backdoor
from node.attacks.collusion import SIDE_CHANNEL, SideChannel
from node.attacks.copycat import copycat
from node.attacks.free_rider import free_rider, free_rider_noise
from node.attacks.gaussian import gaussian
from node.attacks.inflated_samples import inflated_samples
from node.attacks.ipm import ipm
from node.attacks.label_flip import label_flip
from node.attacks.random_model import random_model
from node.attacks.scaled import scaled
from node.attacks.shuffled_labels import shuffled_labels
from node.attacks.sign_flip import sign_flip
from node.attacks.spec import AttackSpec
from protocol.data import MNIST_SPEC, Dataset

Train = Callable[[Dataset], State]
"""Honest local training from the round's base on the given data."""


class AttackUnavailable(RuntimeError):
    """The attack needs something this runtime does not give it (e.g. a victim's update)."""


def attacked_update(
    spec: AttackSpec,
    base: State,
    shard: Dataset,
    train: Train,
    rng: np.random.Generator,
    victim_update: State | None = None,
    side_channel: SideChannel = SIDE_CHANNEL,
) -> State:
    """What a worker running `spec` submits this round.

    ALIE and IPM are non-omniscient. With `colluders` = m > 0 the attackers pool their
    honestly trained updates through `side_channel` (in-process) and each submits the
    attack on the m updates, as Baruch et al. do; with 0 each works alone: ALIE estimates
    the honest mean and spread from `parts` deltas it trains on disjoint parts of its own
    shard (`alie_parts`), IPM negates its own honest delta (the mean over the one delta it
    knows).
    """
    kind = spec.kind
    _check_fits(spec, shard)
    if kind == "honest":
        return train(shard)
    if kind == "free_rider":
        return free_rider(base)
    if kind == "free_rider_noise":
        return free_rider_noise(base, spec["sigma"], rng)
    if kind == "noise":
        return random_model(base, rng)
    if kind == "gaussian":
        return gaussian(base, spec["sigma"], rng)
    if kind == "copycat":
        if victim_update is None:
            raise AttackUnavailable(
                f"copycat of worker-{spec['victim']} needs that worker's update of this round; "
                "the training job submits a copied CID instead (it cannot read sealed updates)"
            )
        return copycat(base, victim_update)
    if kind == "shuffled_labels":
        return train(Dataset(shard.images, shuffled_labels(shard.labels, rng), shard.spec))
    if kind == "label_flip":
        flipped = label_flip(
            shard.labels, int(spec["source"]), int(spec["target"]), float(spec["fraction"])
        )
        return train(Dataset(shard.images, flipped, shard.spec))
    if kind == "backdoor":
        trigger = Trigger.for_images(shard.images, int(spec["size"]))
        images, labels, _ = backdoor(
            shard.images, shard.labels, trigger, int(spec["target"]), spec["fraction"], rng
        )
        return train(Dataset(images, labels, shard.spec))
    if kind in ("alie", "ipm") and spec["colluders"]:
        honest = train(shard)
        pooled = side_channel.pool(kind, base, honest, int(spec["colluders"]))
        if kind == "alie":
            return alie(base, pooled, spec["z"])
        return ipm(base, pooled, spec["epsilon"])
    if kind == "alie":
        return alie(base, [train(part) for part in alie_parts(shard, int(spec["parts"]), rng)], spec["z"])
    honest = train(shard)
    if kind == "sign_flip":
        return sign_flip(base, honest, spec["scale"])
    if kind in ("scaled", "inflated_samples"):
        return scaled(base, honest, spec["scale"])
    if kind == "ipm":
        return ipm(base, [honest], spec["epsilon"])
    raise ValueError(f"no worker attack {kind!r}")


def alie_parts(shard: Dataset, parts: int, rng: np.random.Generator) -> list[Dataset]:
    """A lone ALIE attacker's stand-ins for the honest workers: `parts` disjoint random parts
    of its shard, each repeated `parts` times. Repeated, one epoch over a part takes as many
    SGD steps as one over the whole shard, so each estimate moves as far as an honest update
    and the attack's mean and spread are at an honest update's scale (a part trained once
    moves about 1/parts as far, and so would the attack)."""
    order = rng.permutation(len(shard))
    chosen = [np.tile(part, parts) for part in np.array_split(order, parts)]
    return [Dataset(shard.images[c], shard.labels[c], shard.spec) for c in chosen]


def _check_fits(spec: AttackSpec, shard: Dataset) -> None:
    classes = (shard.spec or MNIST_SPEC).num_classes
    for name in ("source", "target"):
        if spec.kind in ("label_flip", "backdoor") and name in dict(spec.params):
            if spec[name] >= classes:
                raise ValueError(
                    f"{spec}: {name} = {spec[name]} is not a class of this {classes}-class dataset"
                )
    if spec.kind == "alie" and spec["parts"] > len(shard):
        raise ValueError(f"{spec}: cannot split {len(shard)} samples into {spec['parts']} parts")


def claimed_samples(spec: AttackSpec, true_samples: int) -> int:
    """The sample count a worker running `spec` reports with its update."""
    if spec.kind == "inflated_samples":
        return inflated_samples(true_samples, int(spec["factor"]))
    if spec.kind == "backdoor":  # claiming less to be held to less (protocol.work.lagging)
        return max(1, round(true_samples * spec["claim"]))
    return true_samples
