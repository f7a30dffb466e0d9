"""The `work` reward policy in a whole task: requester, two honest workers, a free
rider and two validators on the embedded chain, real libp2p, real MNIST, three rounds.

The free rider resubmits the round's base model. From round 2 on the base is good enough to
pass the accuracy threshold, so only the improvement bound (`protocol.work`) can tell it
from a worker: it must be rejected, unpaid and slashed in every round, while each honest
worker is accepted and paid in every round."""

from __future__ import annotations

from pathlib import Path

from node.chain import TaskStatus
from protocol.rewards import RewardPolicy
from tests.conftest import needs_mnist, run_mnist_task

pytestmark = needs_mnist()


async def test_free_rider_is_slashed_and_honest_workers_paid_every_round(tmp_path: Path) -> None:
    result = await run_mnist_task(
        tmp_path,
        workers=3,
        validators=2,
        rounds=3,
        model="mnist_2nn",
        max_samples=1500,
        validation_samples=500,
        # the base passes the threshold from round 2 on; 10% a round leaves a deposit to
        # slash in every round
        task={"reward_policy": "work", "qualification_threshold": 0.3, "slash_fraction_bps": 1000},
        worker_behaviours=("honest", "honest", "free_rider"),
        timeout_s=420,
    )
    reader, task = result.reader, result.task
    assert reader.task_params(task).reward_policy == RewardPolicy.WORK
    assert reader.status(task) == TaskStatus.TERMINATED
    assert [r.finalized for r in result.rounds] == [True, True, True]
    free_rider = result.workers[2].address
    honest = [w.address for w in result.workers[:2]]
    for number, outcome in enumerate(result.rounds, start=1):
        assert all(outcome.revealed) and all(outcome.agreed), f"round {number}"
        rider = outcome.workers.index(free_rider)
        assert not outcome.accepted[rider], f"round {number}: the free rider was accepted"
        assert outcome.worker_payouts[rider] == 0, f"round {number}"
        assert outcome.worker_slashes[rider] > 0, f"round {number}: the free rider kept its deposit"
        for address in honest:
            index = outcome.workers.index(address)
            assert outcome.accepted[index], f"round {number}: honest {address} rejected"
            assert outcome.worker_payouts[index] > 0, f"round {number}: honest {address} unpaid"
            assert outcome.worker_slashes[index] == 0
    # the base passed the accuracy threshold after round 1: the bound, not the threshold,
    # rejected the free rider in later rounds
    assert result.rounds[0].consensus_accuracy >= 300_000
