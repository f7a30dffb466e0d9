"""Presence attacks: free riders, copycats and inflated sample counts."""

from __future__ import annotations

import numpy as np
import pytest

from node.attacks.copycat import copycat
from node.attacks.free_rider import free_rider, free_rider_noise
from node.attacks.inflated_samples import inflated_samples
from node.attacks.random_model import random_model
from tests.attacks.conftest import trained


def test_free_rider_resubmits_the_base_as_fresh_arrays(base: dict) -> None:
    copy = free_rider(base)
    for name in base:
        np.testing.assert_array_equal(copy[name], base[name])
        assert copy[name] is not base[name]


def test_noisy_free_rider_is_near_but_not_equal_to_the_base(base: dict) -> None:
    noisy = free_rider_noise(base, 1e-3, np.random.default_rng(0))
    for name in ("w", "b"):
        difference = np.abs(noisy[name].astype(np.float64) - base[name])
        assert difference.max() > 0 and difference.max() < 1e-2
    assert noisy["steps"] == base["steps"]
    again = free_rider_noise(base, 1e-3, np.random.default_rng(0))
    np.testing.assert_array_equal(noisy["w"], again["w"])


def test_copycat_submits_the_victims_update(base: dict) -> None:
    victim = trained(base, seed=7)
    copied = copycat(base, victim)
    for name in base:
        np.testing.assert_array_equal(copied[name], victim[name])
        assert copied[name] is not victim[name]
    with pytest.raises(ValueError, match="copied update"):
        copycat(base, {"w": victim["w"]})


def test_inflated_samples_claims_factor_times_the_data() -> None:
    assert inflated_samples(1200, 10) == 12_000
    with pytest.raises(ValueError):
        inflated_samples(1200, 0)


def test_random_model_replaces_the_weights(base: dict) -> None:
    model = random_model(base, np.random.default_rng(1))
    assert list(model) == list(base)
    assert not np.allclose(model["w"], base["w"]) and model["w"].dtype == np.float32
    np.testing.assert_array_equal(model["w"], random_model(base, np.random.default_rng(1))["w"])
