"""Colluding ALIE and IPM: the attackers pool their honestly trained updates through the
in-process side channel and each submits the attack computed on all of them (Baruch et
al.'s non-omniscient setting), not on its own shard alone."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from node.attacks._state import State
from node.attacks.alie import alie
from node.attacks.collusion import SideChannel
from node.attacks.ipm import ipm
from node.attacks.spec import parse_attack_spec
from node.attacks.worker import attacked_update
from protocol.data import Dataset

BASE = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array(4)}


def honest_of(index: int) -> dict[str, np.ndarray]:
    """Colluder `index`'s honest update: a distinct move away from the base."""
    rng = np.random.default_rng(100 + index)
    return {"w": (BASE["w"] + rng.normal(0.3, 0.2, (2, 3))).astype(np.float32), "steps": BASE["steps"] + 1}


def shard_of(index: int) -> Dataset:
    rng = np.random.default_rng(index)
    return Dataset(rng.integers(0, 255, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20))


def collude(text: str, colluders: int, channel: SideChannel) -> list[dict[str, np.ndarray]]:
    """Run `colluders` workers at once, each in its own thread as the runtime's jobs are."""
    spec = parse_attack_spec(text)
    results: list[dict[str, np.ndarray]] = [{}] * colluders

    def worker(index: int) -> None:
        update = attacked_update(
            spec, BASE, shard_of(index), lambda data: honest_of(index),
            np.random.default_rng(index), side_channel=channel,
        )
        results[index] = dict(update)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(colluders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.mark.parametrize(
    ("text", "attack"),
    [
        ("alie:z=0.7,colluders=3", lambda updates: alie(BASE, updates, 0.7)),
        ("ipm:epsilon=0.5,colluders=3", lambda updates: ipm(BASE, updates, 0.5)),
    ],
)
def test_colluders_submit_the_attack_on_all_their_honest_updates(
    text: str, attack: Callable[[list[State]], State]
) -> None:
    results = collude(text, 3, SideChannel())
    expected = attack([honest_of(i) for i in range(3)])
    for result in results:
        np.testing.assert_allclose(result["w"], expected["w"], rtol=1e-6)
        assert result["steps"] == BASE["steps"] + 1
    # not what any one of them would submit from its own update alone
    alone = attack([honest_of(0)])
    assert not np.allclose(results[0]["w"], alone["w"])


def test_alie_on_pooled_updates_is_mean_minus_z_std() -> None:
    (result, *_) = collude("alie:z=1.5,colluders=3", 3, SideChannel())
    deltas = np.stack([honest_of(i)["w"].astype(np.float64) - BASE["w"] for i in range(3)])
    expected = BASE["w"] + deltas.mean(axis=0) - 1.5 * deltas.std(axis=0)
    np.testing.assert_allclose(result["w"], expected, rtol=1e-6)


def test_a_colluder_left_alone_goes_on_with_what_it_has() -> None:
    channel = SideChannel()
    pooled = channel.pool("alie", BASE, honest_of(0), colluders=3, wait_s=0.05)
    assert len(pooled) == 1
    # the pool is dropped once its waiters left: a later round starts afresh
    again = channel.pool("alie", BASE, honest_of(1), colluders=1, wait_s=0.05)
    assert len(again) == 1 and np.array_equal(again[0]["w"], honest_of(1)["w"])


def test_pools_are_kept_apart_by_attack_and_base() -> None:
    channel = SideChannel()
    other_base = {"w": BASE["w"] + 1, "steps": BASE["steps"]}
    assert len(channel.pool("alie", BASE, honest_of(0), colluders=2, wait_s=0.05)) == 1
    assert len(channel.pool("ipm", BASE, honest_of(1), colluders=2, wait_s=0.05)) == 1
    assert len(channel.pool("alie", other_base, honest_of(2), colluders=2, wait_s=0.05)) == 1
