"""A validator's updates measured ahead of its evaluation (`measure_ahead`, in the
background's lower-priority thread, as MeasureUpdate runs) give the very verdict the
evaluation gives measuring them itself: every validator reveals the same scores whether
it measured early or at commit. Real MNIST, mnist_cnn, updates sealed in a block store."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import torch

from node.blocks import BlockStore
from node.datasets import default_data_root, load_mnist, mnist_available
from node.models import build_model
from node.runtime import learning
from node.runtime.background import LowPriorityThread
from node.runtime.effects_jobs import MeasuredAhead, ReleasedUpdates, judge_round, measure_ahead
from protocol import work as paid_work
from protocol.codec import encode_state_dict
from protocol.data import Dataset
from protocol.envelope import generate_keypair
from protocol.rewards import RewardPolicy
from protocol.state.actions import StartEvaluation
from protocol.state.records import GlobalModel, Update
from tests.runtime.test_key_release import put

DATA_ROOT = default_data_root()
TASK = b"\x6a" * 20
WORKERS = tuple(bytes([0x30 + i]) * 20 for i in range(4))
LOG = logging.LoggerAdapter(logging.getLogger("test_measure_ahead"), {})


@dataclasses.dataclass
class SealedRound:
    store: BlockStore
    crypto: learning.TaskCrypto
    action: StartEvaluation
    validation: Dataset

    def book(self) -> ReleasedUpdates:
        """A validator's own model book over the round's blobs (each validator has one)."""
        return ReleasedUpdates(TASK, "mnist_cnn", self.store, self.crypto)


@pytest.fixture(scope="module")
def sealed_round(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SealedRound]:
    if not mnist_available(DATA_ROOT):
        pytest.skip(f"MNIST not found at {DATA_ROOT} (set FL_NODE_DATA_ROOT)")
    test = load_mnist(DATA_ROOT, "test")
    validation = Dataset(test.images[:200], test.labels[:200], test.spec)
    private, public = generate_keypair()
    crypto = learning.TaskCrypto(private, TASK)
    base = build_model("mnist_cnn", seed=0).state_dict()
    generator = torch.Generator().manual_seed(3)
    with BlockStore(tmp_path_factory.mktemp("measure-ahead") / "blocks") as store:
        initial = put(store, encode_state_dict(base))
        updates: list[Update] = []
        for worker in WORKERS:
            state = {
                name: t + 0.05 * t.std() * torch.randn(t.shape, generator=generator)
                for name, t in base.items()
            }
            cid = put(store, crypto.seal(encode_state_dict(state), [public]))
            updates.append(Update(worker, cid, 100 + len(updates)))
        action = StartEvaluation(1, WORKERS, tuple(updates), "unused", GlobalModel(initial))
        yield SealedRound(store, crypto, action, validation)


def judged(
    round: SealedRound, ahead: MeasuredAhead | None, policy: RewardPolicy = RewardPolicy.TOPK
) -> learning.Evaluation:
    # threshold 0: every update qualifies, so the aggregate and leave-one-out run too
    return judge_round(round.book(), round.action, round.validation, 0, policy, LOG, ahead)


@pytest.mark.parametrize("policy", [RewardPolicy.TOPK, RewardPolicy.WORK])
async def test_updates_measured_ahead_give_the_evaluations_own_verdict(
    sealed_round: SealedRound, policy: RewardPolicy
) -> None:
    plain = judged(sealed_round, None, policy)
    book = sealed_round.book()
    ahead = MeasuredAhead().of_round(1)
    background = LowPriorityThread()
    try:
        for update in sealed_round.action.candidates[:3]:  # the last arrives at commit
            await background.run(
                partial(measure_ahead, book, update.cid, sealed_round.validation, policy, ahead)
            )
    finally:
        background.close()
    early_cids = sorted(u.cid for u in sealed_round.action.candidates[:3])
    assert sorted(ahead.metrics) == early_cids
    early = judge_round(book, sealed_round.action, sealed_round.validation, 0, policy, LOG, ahead)
    assert early == plain  # scores, accepts, accuracies and global accuracy, bit for bit


def test_the_evaluation_takes_what_was_measured_ahead(sealed_round: SealedRound) -> None:
    """The measured-ahead figures are what the verdict is made of (not measured again):
    doctored ones show up in it."""
    plain = judged(sealed_round, None)
    book = sealed_round.book()
    ahead = MeasuredAhead().of_round(1)
    first = sealed_round.action.candidates[0].cid
    measure_ahead(book, first, sealed_round.validation, RewardPolicy.TOPK, ahead)
    ahead.metrics[first] = dataclasses.replace(ahead.metrics[first], accuracy=0.123)
    doctored = judge_round(
        book, sealed_round.action, sealed_round.validation, 0, RewardPolicy.TOPK, LOG, ahead
    )
    assert doctored.accuracies[0] == 0.123 != plain.accuracies[0]
    assert doctored.accuracies[1:] == plain.accuracies[1:]


def test_nothing_is_measured_once_the_evaluation_started(sealed_round: SealedRound) -> None:
    ahead = MeasuredAhead().of_round(1)
    ahead.evaluating = True
    first = sealed_round.action.candidates[0].cid
    measure_ahead(sealed_round.book(), first, sealed_round.validation, RewardPolicy.TOPK, ahead)
    assert ahead.metrics == {} and ahead.opened == {}
    # a later round starts afresh
    assert ahead.of_round(2).evaluating is False


@pytest.mark.parametrize("policy", [RewardPolicy.TOPK, RewardPolicy.WORK])
def test_a_measure_under_way_stops_when_the_evaluation_starts(
    sealed_round: SealedRound, monkeypatch: pytest.MonkeyPatch, policy: RewardPolicy
) -> None:
    """The evaluation measures what was not measured ahead when it started, so a pass
    under way then stops at its next batch rather than being done twice."""
    ahead = MeasuredAhead().of_round(1)
    book = sealed_round.book()
    batches = []
    module = book.module

    def starts_the_evaluation(state: learning.StateDict) -> torch.nn.Module:
        model = module(state)
        forward = model.forward

        def first_batch_then_evaluation(images: torch.Tensor) -> torch.Tensor:
            batches.append(len(images))
            ahead.evaluating = True  # as StartEvaluation sets it, from another thread
            return forward(images)

        model.forward = first_batch_then_evaluation  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(book, "module", starts_the_evaluation)
    first = sealed_round.action.candidates[0].cid
    measure_ahead(book, first, sealed_round.validation, policy, ahead)
    assert len(sealed_round.validation) > paid_work.EVALUATION_BATCH
    assert batches == [paid_work.EVALUATION_BATCH]  # one batch of several, then it stopped
    assert ahead.metrics == {}


def test_an_update_that_does_not_open_is_left_to_the_evaluation(sealed_round: SealedRound) -> None:
    ahead = MeasuredAhead().of_round(1)
    stranger = learning.TaskCrypto(generate_keypair()[0], TASK)  # not a recipient
    book = ReleasedUpdates(TASK, "mnist_cnn", sealed_round.store, stranger)
    first = sealed_round.action.candidates[0].cid
    measure_ahead(book, first, sealed_round.validation, RewardPolicy.TOPK, ahead)
    assert ahead.metrics == {}


def test_under_work_steps_are_measured_only_when_judge_asks(
    sealed_round: SealedRound, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's validation gain decides only a round without agreeing updates, so the
    evaluation hands `protocol.work.judge` a function that measures it when asked: these
    noise updates do not agree, so every one is asked for, and the verdict is bit for bit
    the one judged from every step measured up front (`tests/policy/test_work_scoring.py`:
    agreeing updates ask for none)."""
    lazy = judged(sealed_round, None, RewardPolicy.WORK)
    asked: list[int] = []
    judge = paid_work.judge

    def eager(deltas: Any, step_gains: Any, *args: Any, **kwargs: Any) -> Any:
        gains = [step_gains(i) for i in range(len(deltas))]
        asked.extend(i for i, g in enumerate(gains) if g is not None)
        return judge(deltas, gains, *args, **kwargs)

    monkeypatch.setattr(paid_work, "judge", eager)
    assert judged(sealed_round, None, RewardPolicy.WORK) == lazy
    assert asked == list(range(len(WORKERS)))
