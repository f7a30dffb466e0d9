"""Model-poisoning attacks on the update's delta: each gives exactly its definition."""

from __future__ import annotations

import numpy as np
import pytest

from node.attacks.alie import alie, alie_delta
from node.attacks.gaussian import gaussian
from node.attacks.ipm import ipm
from node.attacks.scaled import scaled
from node.attacks.sign_flip import sign_flip
from node.attacks.spec import AttackSpecError, alie_z_max
from tests.attacks.conftest import trained

FLOATS = ("w", "b")


def f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_sign_flip_is_base_minus_scaled_delta(base: dict, scale: float) -> None:
    update = trained(base, seed=1)
    attacked = sign_flip(base, update, scale)
    for name in FLOATS:
        delta = f64(update[name]) - f64(base[name])
        np.testing.assert_allclose(attacked[name], f64(base[name]) - scale * delta, rtol=1e-6)
        assert attacked[name].dtype == base[name].dtype
    assert attacked["steps"] == update["steps"]  # integer buffers are not negated


def test_scaled_boosts_the_delta(base: dict) -> None:
    update = trained(base, seed=2)
    attacked = scaled(base, update, 10.0)
    for name in FLOATS:
        expected = f64(base[name]) + 10.0 * (f64(update[name]) - f64(base[name]))
        np.testing.assert_allclose(attacked[name], expected, rtol=1e-6)
    # averaged with 9 copies of the base, the boosted update lands on the attacker's model
    mean = {n: (f64(attacked[n]) + 9 * f64(base[n])) / 10 for n in FLOATS}
    for name in FLOATS:
        np.testing.assert_allclose(mean[name], update[name], rtol=1e-5, atol=1e-6)


def test_gaussian_replaces_the_delta_with_noise_of_sigma() -> None:
    base = {"w": np.zeros((200, 500), np.float32), "steps": np.array(1)}
    attacked = gaussian(base, 0.5, np.random.default_rng(3))
    noise = f64(attacked["w"]) - f64(base["w"])
    assert abs(noise.std() - 0.5) < 0.01 and abs(noise.mean()) < 0.01
    assert attacked["steps"] == 1


def test_gaussian_is_deterministic_under_a_seed(base: dict) -> None:
    first = gaussian(base, 1.0, np.random.default_rng(4))
    again = gaussian(dict(reversed(list(base.items()))), 1.0, np.random.default_rng(4))
    other = gaussian(base, 1.0, np.random.default_rng(5))
    for name in FLOATS:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
    assert list(first) == list(base)


def test_alie_is_mean_minus_z_std_of_the_honest_deltas(base: dict) -> None:
    updates = [trained(base, seed=s) for s in range(5)]
    z = 1.5
    attacked = alie(base, updates, z)
    for name in FLOATS:
        deltas = [f64(u[name]) - f64(base[name]) for u in updates]
        mean = sum(deltas) / len(deltas)
        std = np.sqrt(sum((d - mean) ** 2 for d in deltas) / len(deltas))
        np.testing.assert_allclose(attacked[name], f64(base[name]) + mean - z * std, rtol=1e-5)
    # every coordinate lies within z std of the honest mean, on the low side
    stacked = np.stack([f64(u["w"]) - f64(base["w"]) for u in updates])
    shift = f64(attacked["w"]) - f64(base["w"]) - stacked.mean(axis=0)
    assert np.all(shift <= 1e-6) and np.all(shift >= -z * stacked.std(axis=0) - 1e-6)


def test_alie_of_identical_deltas_is_that_delta() -> None:
    delta = {"w": np.array([1.0, -2.0])}
    np.testing.assert_array_equal(alie_delta([delta, delta], 3.0)["w"], [1.0, -2.0])


@pytest.mark.parametrize(
    ("workers", "attackers", "expected"),
    # s = floor(n/2 + 1) - m; z = Phi^-1((n - s) / n): Phi^-1(0.7), Phi^-1(0.6), Phi^-1(0.72)
    [(10, 3, 0.5244005), (5, 1, 0.2533471), (50, 12, 0.5828415)],
)
def test_alie_z_max_follows_the_paper(workers: int, attackers: int, expected: float) -> None:
    assert alie_z_max(workers, attackers) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("workers", "attackers"), [(10, 6), (4, 0), (4, 4)])
def test_alie_z_max_refuses_majorities_and_empty_sets(workers: int, attackers: int) -> None:
    with pytest.raises(AttackSpecError):
        alie_z_max(workers, attackers)


def test_ipm_opposes_the_honest_mean(base: dict) -> None:
    updates = [trained(base, seed=s) for s in range(4)]
    attacked = ipm(base, updates, 0.5)
    mean = {n: np.mean([f64(u[n]) - f64(base[n]) for u in updates], axis=0) for n in FLOATS}
    inner = 0.0
    for name in FLOATS:
        delta = f64(attacked[name]) - f64(base[name])
        np.testing.assert_allclose(delta, -0.5 * mean[name], rtol=1e-5, atol=1e-7)
        inner += float(np.sum(delta * mean[name]))
    assert inner < 0


def test_update_that_does_not_match_the_base_is_refused(base: dict) -> None:
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        sign_flip(base, {"w": base["w"], "steps": base["steps"]})
    bad = dict(base, w=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="w has shape"):
        scaled(base, bad, 2.0)
    with pytest.raises(ValueError, match="at least one"):
        alie(base, [], 1.0)
