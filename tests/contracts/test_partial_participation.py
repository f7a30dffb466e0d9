"""Partial participation on chain: with Params.workersPerRound = k > 0, worker w trains in
round r iff keccak256(seed_r || w) % nWorkers < k (protocol.sortition.worker_selected);
submitUpdate refuses everyone else, the training phase ends when the last drawn worker
submits, and a round that draws nobody does not stop the task."""

from __future__ import annotations

import pytest

from node.chain import ChainRevert, Phase
from protocol.sortition import worker_selected
from tests.contracts.harness import Vote, World, play_round


def drawn(world: World, task: str, round: int, per_round: int) -> list[bool]:
    seed = world.seed(task, round)
    n = len(world.workers)
    return [worker_selected(seed, bytes.fromhex(w.address[2:]), per_round, n) for w in world.workers]


def test_only_drawn_workers_submit_and_the_last_one_ends_training(world: World) -> None:
    per_round = 2
    for _attempt in range(20):  # a task whose first round draws at least one, not everyone
        task = world.started_task(n_validators=1, workers_per_round=per_round)
        selected = drawn(world, task, 1, per_round)
        if 0 < sum(selected) < len(selected):
            break
    else:
        pytest.fail("20 tasks in a row drew nobody or everyone in round 1")
    assert world.requester.task_params(task).workers_per_round == per_round
    for worker, chosen in zip(world.workers, selected, strict=True):
        assert world.requester.worker_selected(task, 1, worker.address) == chosen
    left_out = [w for w, chosen in zip(world.workers, selected, strict=True) if not chosen]
    with pytest.raises(ChainRevert) as refused:
        left_out[0].submit_update(task, 1, "bafkrei-left-out", 10)
    assert refused.value.name == "WorkerNotSelected"
    round, worker = refused.value.values
    assert (round, worker.lower()) == (1, left_out[0].address.lower())
    chosen_workers = [w for w, chosen in zip(world.workers, selected, strict=True) if chosen]
    for index, worker in enumerate(chosen_workers):
        assert world.requester.phase(task) == Phase.TRAINING
        worker.submit_update(task, 1, f"bafkrei-drawn-{index}", 10)
    assert world.requester.phase(task) == Phase.COMMIT  # no deadline waited for


def test_a_round_that_draws_nobody_does_not_stop_the_task(world: World) -> None:
    for _attempt in range(30):  # 1 of 4 per round: nobody is drawn with probability (3/4)^4
        task = world.started_task(n_validators=1, workers_per_round=1, rounds=2)
        if not any(drawn(world, task, 1, 1)):
            break
    else:
        pytest.fail("30 tasks in a row drew someone in round 1")
    # Training is over at once: nobody can submit, the committee settles an empty round.
    assert world.requester.phase(task) == Phase.COMMIT
    validator = world.validators[0]
    params = world.requester.task_params(task)
    escrow_before = world.requester.escrow(task)
    credited_before = world.requester.credited_balance(task, validator.address)
    play = play_round(world, task, 1, [], [(validator, Vote((), (), 900_000))])
    assert play.result.finalized and play.result.workers == ()
    # The seated member judged nothing: it agrees, is not slashed and is not paid; both pools
    # return to escrow to the wei.
    assert play.result.agreed == (True,) and play.result.validator_payouts == (0,)
    assert play.result.validator_slashes == (0,)
    pools = params.worker_reward_per_round + params.validator_reward_per_round
    assert play.result.returned_to_escrow == pools
    assert world.requester.escrow(task) == escrow_before
    assert world.requester.credited_balance(task, validator.address) == credited_before
    assert world.requester.current_round(task) == 2
    assert world.requester.phase(task) in (Phase.TRAINING, Phase.COMMIT)


def test_workers_per_round_above_max_workers_is_refused(world: World) -> None:
    params = world.params(workers_per_round=len(world.workers) + 1)
    with pytest.raises(ChainRevert) as refused:
        world.requester.validate_params(params)
    assert refused.value.name == "InvalidParameter"
    assert refused.value.values == ("workersPerRound",)
