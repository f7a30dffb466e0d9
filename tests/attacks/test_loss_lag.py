"""protocol.work's lag check on real MNIST: in a round from a trained base, a backdoor trained
with 30% of its images triggered agrees with the honest updates and lowers the validation
loss, but lags the round's median loss by more than DOUBTFUL_LAG, and is left out of the
average unpaid (rejected and slashed over MAX_LOSS_LAG); honest
workers are paid, a worker with a quarter of the data is paid for what it claims, and the
same worker claiming as much as the others is rejected (it did less work than it claims)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest
import torch

from node.attacks.spec import parse_attack_spec
from node.attacks.worker import attacked_update
from node.config import TrainingConfig
from node.datasets import load_mnist
from node.models import train_config
from protocol import verdict as verdicts
from protocol.aggregation.fedavg import fedavg
from protocol.data import Dataset, partition_iid, to_tensors
from protocol.models import build_model
from protocol.training import train_local
from protocol.work import Judgement, class_harm, improvement, judge, measure
from tests.attacks.conftest import DATA_ROOT, needs_mnist

pytestmark = [needs_mnist("train"), needs_mnist("test")]

State = dict[str, np.ndarray]
HONEST, SAMPLES, SMALL = 7, 500, 125
KINDS = ["honest"] * HONEST + ["honest"] + ["backdoor:target=0,fraction=0.3,size=4"] * 2


def as_torch(state: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.asarray(a)) for name, a in state.items()}


def module(state: Mapping[str, np.ndarray]) -> torch.nn.Module:
    model = build_model("mnist_2nn", seed=0)
    model.load_state_dict(as_torch(state))
    return model


@pytest.fixture(scope="module")
def round_two() -> dict[str, object]:
    """Round 2 of a task: the base is the FedAvg of 7 honest workers' round 1 from
    mnist_2nn's initial weights; then 7 honest workers of 500 samples, one of 125 and two
    backdoor attackers train from it as workers do (one epoch of the node's SGD)."""
    node = TrainingConfig()
    train_split, test_split = load_mnist(DATA_ROOT, "train"), load_mnist(DATA_ROOT, "test")
    shards = [train_split.subset(part) for part in partition_iid(SAMPLES * (HONEST + 3), HONEST + 3, seed=5)]
    shards[HONEST] = Dataset(shards[HONEST].images[:SMALL], shards[HONEST].labels[:SMALL])
    images, labels = to_tensors(Dataset(test_split.images[:1000], test_split.labels[:1000]))

    def trainer(base: State, seed: int) -> Callable[[Dataset], State]:
        def train(data: Dataset) -> State:
            model = module(base)
            x, y = to_tensors(data)
            train_local(model, x, y, train_config(node, seed))
            return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

        return train

    initial = {k: v.numpy().copy() for k, v in build_model("mnist_2nn", seed=0).state_dict().items()}
    first = [trainer(initial, 100 + i)(shards[i]) for i in range(HONEST)]
    base = {k: v.numpy() for k, v in fedavg([as_torch(s) for s in first], [SAMPLES] * HONEST).items()}
    states = [
        attacked_update(parse_attack_spec(kind), base, shards[i], trainer(base, i), np.random.default_rng(i))
        for i, kind in enumerate(KINDS)
    ]
    at_base = measure(module(base), images, labels)
    measured = [measure(module(s), images, labels) for s in states]
    return {
        "deltas": [verdicts.flat_delta(as_torch(s), as_torch(base)) for s in states],
        "whole": [improvement(at_base.loss, m.loss) for m in measured],
        "harms": [class_harm(at_base, m) for m in measured],
    }


def judged(round_two: dict[str, object], claims: list[int]) -> list[Judgement]:
    whole = round_two["whole"]
    assert isinstance(whole, list)
    return judge(round_two["deltas"], whole, whole_gains=whole, harms=round_two["harms"], claims=claims)  # type: ignore[arg-type]


def test_a_backdoor_that_agrees_and_descends_lags_the_round_and_is_rejected(
    round_two: dict[str, object],
) -> None:
    whole = round_two["whole"]
    assert isinstance(whole, list)
    assert all(gain > 0 for gain in whole)  # every update, the backdoors too, lowers the loss
    assert round_two["harms"] == [None] * len(KINDS)  # no class is harmed beyond its bound
    judgements = judged(round_two, [SAMPLES] * HONEST + [SMALL] + [SAMPLES] * 2)
    for index in range(HONEST + 1):
        assert judgements[index].shows_work, (index, judgements[index].problem)
    # lagging by 0.36 and 0.44 nats: the first undecided (neither averaged, paid nor
    # slashed), the second over MAX_LOSS_LAG, rejected
    first, second = judgements[HONEST + 1 :]
    assert first.undecided and "above the median" in (first.doubt or ""), first
    assert not second.shows_work and "above the median" in (second.problem or ""), second
    # without the lag check the backdoors agree like honest work, and would be paid
    unchecked = judge(round_two["deltas"], whole, whole_gains=whole, harms=round_two["harms"])  # type: ignore[arg-type]
    assert all(j.shows_work for j in unchecked)


def test_a_worker_with_less_data_is_paid_for_its_claim_and_rejected_for_a_larger_one(
    round_two: dict[str, object],
) -> None:
    honest_claim = judged(round_two, [SAMPLES] * HONEST + [SMALL] + [SAMPLES] * 2)[HONEST]
    assert honest_claim.shows_work
    overclaimed = judged(round_two, [SAMPLES] * (HONEST + 3))[HONEST]
    assert not overclaimed.shows_work and f"its {SAMPLES} samples" in (overclaimed.problem or "")
