"""A worker's round under each attack: what it trains on, what it submits, what it claims.
The honest trainer is a small deterministic stand-in that records the data it was given;
real training is not what these tests are about."""

from __future__ import annotations

import numpy as np
import pytest

from node.attacks.alie import alie
from node.attacks.spec import parse_attack_spec
from node.attacks.worker import AttackUnavailable, attacked_update, claimed_samples
from protocol.data import Dataset


class RecordingTrainer:
    def __init__(self, base: dict[str, np.ndarray]) -> None:
        self.base = base
        self.seen: list[Dataset] = []

    def __call__(self, data: Dataset) -> dict[str, np.ndarray]:
        self.seen.append(data)
        # the update depends on which label goes with which image, as training's would
        brightness = data.images.reshape(len(data), -1).mean(axis=1) / 255
        shift = float(np.mean(data.labels * brightness))
        return {
            "w": (self.base["w"] + shift * np.linspace(0.5, 1.5, 6).reshape(2, 3)).astype(np.float32),
            "steps": self.base["steps"] + 1,
        }


@pytest.fixture
def shard() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(rng.integers(0, 200, (120, 28, 28), dtype=np.uint8), rng.integers(0, 10, 120))


@pytest.fixture
def base() -> dict[str, np.ndarray]:
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array(4)}


def run(kind: str, base: dict, shard: Dataset, seed: int = 1, **kw: object) -> tuple[dict, RecordingTrainer]:
    trainer = RecordingTrainer(base)
    spec = parse_attack_spec(kind)
    update = attacked_update(spec, base, shard, trainer, np.random.default_rng(seed), **kw)  # type: ignore[arg-type]
    return dict(update), trainer


def test_honest_trains_on_the_shard_as_given(base: dict, shard: Dataset) -> None:
    update, trainer = run("honest", base, shard)
    assert len(trainer.seen) == 1 and trainer.seen[0] is shard


def test_label_flip_trains_on_flipped_labels(base: dict, shard: Dataset) -> None:
    _, trainer = run("label_flip:source=1,target=7", base, shard)
    labels = trainer.seen[0].labels
    assert np.all(labels[shard.labels == 1] == 7)
    np.testing.assert_array_equal(labels[shard.labels != 1], shard.labels[shard.labels != 1])


def test_backdoor_trains_on_triggered_relabelled_images(base: dict, shard: Dataset) -> None:
    _, trainer = run("backdoor:target=2,fraction=0.25,size=3", base, shard)
    seen = trainer.seen[0]
    stamped = np.flatnonzero(np.any(seen.images != shard.images, axis=(1, 2)))
    assert 0 < len(stamped) <= 30
    assert np.all(seen.labels[stamped] == 2)
    assert np.count_nonzero(seen.labels != shard.labels) <= 30


def test_sign_flip_submits_base_minus_the_trained_delta(base: dict, shard: Dataset) -> None:
    update, trainer = run("sign_flip:scale=2", base, shard)
    honest = trainer(shard)
    np.testing.assert_allclose(update["w"], base["w"] - 2 * (honest["w"] - base["w"]), rtol=1e-6)


def test_alie_estimates_from_disjoint_parts_of_the_shard(base: dict, shard: Dataset) -> None:
    update, trainer = run("alie:z=1.0,parts=3", base, shard)
    # each estimate is trained on as many samples as the whole shard (as many SGD steps as an
    # honest update): its own third of the shard, three times over
    assert [len(d) for d in trainer.seen] == [120, 120, 120]
    for seen in trainer.seen:
        np.testing.assert_array_equal(seen.images, np.concatenate([seen.images[:40]] * 3))
    firsts = np.concatenate([d.images[:40] for d in trainer.seen]).reshape(120, -1)
    assert len({row.tobytes() for row in firsts}) == 120  # disjoint, covering the shard
    together = np.sort(np.concatenate([d.labels[:40] for d in trainer.seen]))
    np.testing.assert_array_equal(together, np.sort(shard.labels))
    expected = alie(base, [trainer(d) for d in trainer.seen[:3]], 1.0)
    np.testing.assert_allclose(update["w"], expected["w"], rtol=1e-6)
    assert not np.allclose(update["w"], trainer(shard)["w"])


def test_ipm_negates_the_own_honest_delta(base: dict, shard: Dataset) -> None:
    update, trainer = run("ipm:epsilon=0.5", base, shard)
    honest = trainer(shard)
    np.testing.assert_allclose(update["w"], base["w"] - 0.5 * (honest["w"] - base["w"]), rtol=1e-6)


@pytest.mark.parametrize("kind", ["free_rider", "free_rider_noise", "gaussian", "noise"])
def test_presence_and_noise_attacks_do_not_train(kind: str, base: dict, shard: Dataset) -> None:
    update, trainer = run(kind, base, shard)
    assert trainer.seen == []
    assert set(update) == set(base)


def test_copycat_needs_the_victims_update(base: dict, shard: Dataset) -> None:
    with pytest.raises(AttackUnavailable, match="copycat of worker-3 needs that worker's update"):
        run("copycat:victim=3", base, shard)
    victim = {"w": base["w"] + 1, "steps": np.array(9)}
    update, trainer = run("copycat:victim=3", base, shard, victim_update=victim)
    np.testing.assert_array_equal(update["w"], victim["w"])
    assert trainer.seen == []


def test_inflated_samples_trains_honestly_and_claims_more(base: dict, shard: Dataset) -> None:
    update, trainer = run("inflated_samples", base, shard)
    np.testing.assert_allclose(update["w"], trainer(shard)["w"], rtol=1e-6)
    assert claimed_samples(parse_attack_spec("inflated_samples"), 120) == 1200
    assert claimed_samples(parse_attack_spec("inflated_samples:factor=3,scale=4"), 120) == 360
    boosted, _ = run("inflated_samples:factor=3,scale=4", base, shard)
    np.testing.assert_allclose(boosted["w"], base["w"] + 4 * (update["w"] - base["w"]), rtol=1e-5)
    assert claimed_samples(parse_attack_spec("scaled:scale=4"), 120) == 120


def test_a_backdoor_may_claim_a_share_of_its_samples() -> None:
    assert claimed_samples(parse_attack_spec("backdoor"), 120) == 120
    assert claimed_samples(parse_attack_spec("backdoor:claim=0.25"), 120) == 30
    assert claimed_samples(parse_attack_spec("backdoor:claim=0.001"), 120) == 1


@pytest.mark.parametrize(
    "kind",
    ["shuffled_labels", "backdoor", "alie:z=0.5", "gaussian", "free_rider_noise", "noise"],
)
def test_seeded_attacks_repeat_under_the_same_seed(kind: str, base: dict, shard: Dataset) -> None:
    first, _ = run(kind, base, shard, seed=5)
    again, _ = run(kind, base, shard, seed=5)
    other, _ = run(kind, base, shard, seed=6)
    np.testing.assert_array_equal(first["w"], again["w"])
    assert not np.array_equal(first["w"], other["w"])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("label_flip:source=1,target=10", "target = 10 is not a class of this 10-class dataset"),
        ("backdoor:target=12", "target = 12 is not a class"),
        ("alie:z=1,parts=64", "cannot split 20 samples into 64 parts"),
    ],
)
def test_attack_that_does_not_fit_the_shard_is_refused(kind: str, message: str, base: dict) -> None:
    small = Dataset(np.zeros((20, 28, 28), np.uint8), np.zeros(20, np.int64))
    with pytest.raises(ValueError, match=message):
        run(kind, base, small)
