"""The WORK reward policy on chain: RewardMath's arithmetic equals protocol/rewards.py on
hand-built rounds, and a task paying for work rejects, slashes and leaves unpaid a free
rider while every honest worker is paid, with the books balanced to the wei."""

from __future__ import annotations

import pytest
from web3 import Web3

from node.chain import TaskStatus
from protocol.manifest import WorkerVerdict
from protocol.rewards import CommitteeMember, Policy, RewardPolicy, settle_round
from tests.contracts.harness import (
    ETHER,
    SAMPLES_CLAIMED,
    Vote,
    World,
    play_round,
    policy_of,
    settle_on_chain,
)

OK, NO, GONE = WorkerVerdict.ACCEPT, WorkerVerdict.REJECT, WorkerVerdict.UNAVAILABLE


def _policy(worker_reward: int = 10**18 + 7) -> Policy:
    return Policy(
        worker_reward=worker_reward,
        validator_reward=10**17 + 3,
        worker_slash=5 * 10**16,
        slash_fraction_bps=500,  # 10**17 of a member's 2 ETH
        tolerance=500,
        reward_policy=RewardPolicy.WORK,
        top_k=0,
    )


def _member(scores: tuple[int, ...], verdicts: tuple[WorkerVerdict, ...]) -> CommitteeMember:
    return CommitteeMember(True, scores, verdicts, 980_000, 2 * ETHER)


ROUNDS = [
    # equal honest workers and a free rider (rejected, score 0)
    ([ETHER] * 4, [600] * 4, [_member((30_000, 30_000, 30_000, 0), (OK, OK, OK, NO))] * 3),
    # an inflated claim (10x, then 2**64 - 1) is clipped to the median claim
    ([ETHER] * 3, [600, 6_000, 600], [_member((20_000, 20_000, 20_000), (OK,) * 3)] * 2),
    ([ETHER] * 3, [600, 2**64 - 1, 600], [_member((20_000, 20_000, 20_000), (OK,) * 3)]),
    # pay in proportion to clipped data x improvement; one judge could not fetch worker 1;
    # the scores differ within the tolerance
    (
        [ETHER] * 3,
        [300, 100, 450],
        [
            _member((10_000, 31_000, 20_000), (OK, OK, OK)),
            _member((10_100, 0, 19_900), (OK, GONE, OK)),
            _member((9_900, 30_900, 20_050), (OK, OK, OK)),
        ],
    ),
    # accepted without a positive score: nothing is paid for no measured work
    ([ETHER] * 2, [5, 5], [_member((0, -7), (OK, OK))] * 3),
]


@pytest.mark.parametrize(("deposits", "claims", "committee"), ROUNDS)
def test_solidity_settles_work_rounds_as_the_reference(
    world: World, deposits: list[int], claims: list[int], committee: list[CommitteeMember]
) -> None:
    policy = _policy()
    expected = settle_round(policy, deposits, committee, claims)
    assert settle_on_chain(world, policy, deposits, claims, committee) == expected


def test_a_work_task_slashes_the_free_rider_and_pays_every_honest_worker(world: World) -> None:
    task = world.started_task(n_workers=4, n_validators=3, rounds=2, reward_policy=RewardPolicy.WORK)
    params = world.requester.task_params(task)
    deposits = {w.address: params.worker_deposit for w in world.workers}
    for round in (1, 2):
        # workers 0-2 honest (equal improvement), worker 3 a free rider the validators reject
        scores, verdicts = (40_000, 40_000, 40_000, 0), (OK, OK, OK, NO)
        vote = Vote(scores, verdicts, 970_000)
        votes = [(v, vote) for v in world.validators[:3]]
        played = play_round(world, task, round, world.workers, votes)
        result = played.result
        committee = [CommitteeMember(True, scores, verdicts, vote.accuracy, params.validator_stake)] * 3
        claims = [SAMPLES_CLAIMED + i for i in range(4)]
        expected = settle_round(policy_of(params), [deposits[w.address] for w in world.workers], committee, claims)
        assert result.worker_payouts == expected.worker_payouts
        assert result.worker_slashes == expected.worker_slashes
        assert result.returned_to_escrow == expected.returned_to_escrow
        for worker, slash in zip(world.workers, result.worker_slashes, strict=True):
            deposits[worker.address] -= slash
        assert result.worker_payouts[3] == 0 and result.worker_slashes[3] > 0
        assert all(p > 0 for p in result.worker_payouts[:3])
        assert not any(result.worker_slashes[:3])
        # claims 100, 101, 102 against a cap of 101 (the lower median of the accepted ones):
        # the largest claim earns what the median claim earns
        assert result.worker_payouts[1] == result.worker_payouts[2]
        assert result.worker_payouts[0] < result.worker_payouts[1]
    assert world.requester.status(task) == TaskStatus.TERMINATED
    assert world.accounted(task) == world.w3.eth.get_balance(Web3.to_checksum_address(task))
