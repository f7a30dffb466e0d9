"""protocol.work's lag check on real MNIST: in a round from a trained base, a backdoor trained
with 30% of its images triggered agrees with the honest updates and lowers the validation
loss, but lags the round's median loss by more than DOUBTFUL_LAG, and is left out of the
average unpaid (rejected and slashed over MAX_LOSS_LAG); honest
workers are paid, a worker with a quarter of the data is paid for what it claims, and the
same worker claiming as much as the others is rejected (it did less work than it claims)."""

from __future__ import annotations

import pytest

from protocol.data import Dataset
from protocol.work import Judgement, judge
from tests.attacks.conftest import needs_mnist
from tests.attacks.mnist_rounds import Measured, MnistTask

pytestmark = [needs_mnist("train"), needs_mnist("test")]

HONEST, SAMPLES, SMALL = 7, 500, 125
KINDS = ["honest"] * HONEST + ["honest"] + ["backdoor:target=0,fraction=0.3,size=4"] * 2


@pytest.fixture(scope="module")
def round_two() -> Measured:
    """Round 2 of a task: the base is the FedAvg of 7 honest workers' round 1 from
    mnist_2nn's initial weights; then 7 honest workers of 500 samples, one of 125 and two
    backdoor attackers train from it as workers do (one epoch of the node's SGD)."""
    task = MnistTask(HONEST + 3, SAMPLES)
    shards = list(task.shards)
    shards[HONEST] = Dataset(shards[HONEST].images[:SMALL], shards[HONEST].labels[:SMALL])
    first = [task.trainer(task.initial, 100 + i)(shards[i]) for i in range(HONEST)]
    base = task.fedavg(first, [SAMPLES] * HONEST)
    return task.measured(base, task.updates(base, KINDS, shards))


def judged(round_two: Measured, claims: list[int]) -> list[Judgement]:
    whole = round_two.whole
    return judge(round_two.deltas, whole, whole_gains=whole, harms=round_two.harms, claims=claims)


def test_a_backdoor_that_agrees_and_descends_lags_the_round_and_is_rejected(
    round_two: Measured,
) -> None:
    whole = round_two.whole
    assert all(gain > 0 for gain in whole)  # every update, the backdoors too, lowers the loss
    assert round_two.harms == [None] * len(KINDS)  # no class is harmed beyond its bound
    judgements = judged(round_two, [SAMPLES] * HONEST + [SMALL] + [SAMPLES] * 2)
    for index in range(HONEST + 1):
        assert judgements[index].shows_work, (index, judgements[index].problem)
    # lagging by 0.36 and 0.44 nats: the first undecided (neither averaged, paid nor
    # slashed), the second over MAX_LOSS_LAG, rejected
    first, second = judgements[HONEST + 1 :]
    assert first.undecided and "above the median" in (first.doubt or ""), first
    assert not second.shows_work and "above the median" in (second.problem or ""), second
    # without the lag check the backdoors agree like honest work, and would be paid
    unchecked = judge(round_two.deltas, whole, whole_gains=whole, harms=round_two.harms)
    assert all(j.shows_work for j in unchecked)


def test_a_worker_with_less_data_is_paid_for_its_claim_and_rejected_for_a_larger_one(
    round_two: Measured,
) -> None:
    honest_claim = judged(round_two, [SAMPLES] * HONEST + [SMALL] + [SAMPLES] * 2)[HONEST]
    assert honest_claim.shows_work
    overclaimed = judged(round_two, [SAMPLES] * (HONEST + 3))[HONEST]
    assert not overclaimed.shows_work and f"its {SAMPLES} samples" in (overclaimed.problem or "")
