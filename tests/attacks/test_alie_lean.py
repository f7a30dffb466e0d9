"""protocol.work's lean check on real MNIST: three lone ALIE attackers among ten workers
(each submits the mean less z_max x the spread of deltas it trained on parts of its own
shard, as `bench.attacks`' `alie` cell does) agree with the honest updates and lower the
validation loss, so nothing but their lean tells them apart; they lean below the others on
over MAX_LEAN of the coordinates and are rejected, in round 1 from the initial weights and in
round 2, while every honest worker is paid. At a quarter of z_max they pass: the cheapest
way around the bound, and a quarter of the shift."""

from __future__ import annotations

import pytest

from node.attacks.spec import alie_z_max
from protocol import work
from protocol.work import DOUBTFUL_LEAN, MAX_LEAN, Judgement, judge, leans
from tests.attacks.conftest import needs_mnist
from tests.attacks.mnist_rounds import Measured, MnistTask

pytestmark = [needs_mnist("train"), needs_mnist("test")]

HONEST, ATTACKERS, SAMPLES = 7, 3, 500
Z_MAX = alie_z_max(HONEST + ATTACKERS, ATTACKERS)


def kinds(z: float) -> list[str]:
    return ["honest"] * HONEST + [f"alie:z={z}"] * ATTACKERS


@pytest.fixture(scope="module")
def rounds() -> dict[str, Measured]:
    """Round 1 from mnist_2nn's initial weights and round 2 from the FedAvg of round 1's
    honest updates, with ALIE at z_max and at a quarter of it."""
    task = MnistTask(HONEST + ATTACKERS, SAMPLES)
    first = task.updates(task.initial, kinds(Z_MAX))
    second_base = task.fedavg(first[:HONEST], [SAMPLES] * HONEST)
    return {
        "round 1": task.measured(task.initial, first),
        "round 2": task.measured(second_base, task.updates(second_base, kinds(Z_MAX))),
        "round 2, z_max / 4": task.measured(second_base, task.updates(second_base, kinds(Z_MAX / 4))),
    }


def judged(measured: Measured) -> list[Judgement]:
    return judge(
        measured.deltas, measured.whole, whole_gains=measured.whole, harms=measured.harms,
        claims=[SAMPLES] * (HONEST + ATTACKERS),
    )


@pytest.mark.parametrize("name", ["round 1", "round 2"])
def test_lone_alie_agrees_and_descends_but_leans_below_the_others_and_is_rejected(
    rounds: dict[str, Measured], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = rounds[name]
    assert all(gain > 0 for gain in measured.whole)  # ALIE lowers the validation loss too
    assert measured.harms == [None] * (HONEST + ATTACKERS)
    measured_leans = leans(dict(enumerate(measured.deltas)))
    assert all(measured_leans[i] < -MAX_LEAN for i in range(HONEST, HONEST + ATTACKERS)), measured_leans
    assert all(abs(measured_leans[i]) < DOUBTFUL_LEAN for i in range(HONEST)), measured_leans
    judgements = judged(measured)
    for judgement in judgements[HONEST:]:
        assert not judgement.shows_work and not judgement.undecided
        assert "leans -" in (judgement.problem or ""), judgement.problem
    assert all(j.shows_work for j in judgements[:HONEST]), [j.problem for j in judgements[:HONEST]]
    # nothing else tells them apart: without the lean check they are paid
    monkeypatch.setattr(work, "leaning", lambda deltas: {})
    assert all(j.shows_work for j in judged(measured))


def test_a_quarter_of_z_max_leans_within_the_bound_and_is_paid(rounds: dict[str, Measured]) -> None:
    assert all(j.shows_work for j in judged(rounds["round 2, z_max / 4"]))
