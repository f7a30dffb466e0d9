"""A full task with honest parties, to the wei, on the embedded chain and on anvil."""

from __future__ import annotations

import pytest

from node.chain import Phase, TaskStatus, Termination
from tests.contracts.harness import ETHER, Vote, World, play_round

SCORES = (400_000, 200_000, 300_000, 100_000)  # consensus contributions, sum = 1.0 in fixed point


def test_three_honest_rounds_pay_exactly(any_world: World) -> None:
    world = any_world
    workers, validators = world.workers[:4], world.validators[:3]
    task, create = world.requester.create_task(
        world.params(rounds=3, min_workers=4, min_validators=3, aggregator="trimmed_mean:1")
    )
    assert world.requester.task_params(task).aggregator == "trimmed_mean:1"  # stored for nodes
    fees = {c.address: 0 for c in world.everyone}
    start_balance = {c.address: c.balance() for c in world.everyone}
    # Balances are taken after createTask: the requester's escrow is accounted separately.
    assert (
        world.requester.escrow(task)
        == 3 * (3 * ETHER + ETHER)
        == create.event("TaskCreated").args["escrow"]
    )
    assert world.requester.params_hash(task) == world.requester.task_params(task).abi_hash()

    for w in workers:
        fees[w.address] += w.join_as_worker(task).fee_wei
    for v in validators:
        fees[v.address] += v.join_as_validator(task).fee_wei
    assert world.requester.status(task) == TaskStatus.RECRUITING
    fees[world.requester.address] += world.requester.start(task, "bafkreivalidation").fee_wei
    assert world.requester.status(task) == TaskStatus.RUNNING
    assert world.requester.phase(task) == Phase.TRAINING

    honest = Vote(scores=SCORES, verdicts=(True,) * 4, accuracy=910_000)
    for round in (1, 2, 3):
        assert world.requester.current_round(task) == round
        played = play_round(world, task, round, workers, [(v, honest) for v in validators])
        for address, fee in played.fees.items():
            fees[address] += fee
        result = played.result
        assert result.finalized and result.reveals == 3
        assert result.workers == tuple(w.address for w in workers)
        assert result.consensus_scores == SCORES
        assert result.accepted == (True,) * 4
        # W = 3 ETH split 0.4 / 0.2 / 0.3 / 0.1, no remainder.
        assert result.worker_payouts == (
            12 * ETHER // 10,
            6 * ETHER // 10,
            9 * ETHER // 10,
            3 * ETHER // 10,
        )
        assert result.worker_slashes == (0,) * 4
        # V = 1 ETH over 3 agreeing members: 333...333 each, 1 wei back to escrow.
        assert result.agreed == (True,) * 3
        assert result.validator_payouts == (333_333_333_333_333_333,) * 3
        assert result.validator_slashes == (0,) * 3
        assert result.returned_to_escrow == 1
        assert result.consensus_accuracy == 910_000

    assert world.requester.status(task) == TaskStatus.TERMINATED
    assert world.requester.termination(task) == Termination.ROUND_LIMIT
    assert world.requester.escrow(task) == 3  # the three 1-wei remainders
    assert world.w3.eth.get_balance(task) == world.accounted(task)

    expected_worker_total = [
        3 * p for p in (12 * ETHER // 10, 6 * ETHER // 10, 9 * ETHER // 10, 3 * ETHER // 10)
    ]
    for worker, reward in zip(workers, expected_worker_total, strict=True):
        assert worker.withdrawable(task) == ETHER + reward  # deposit back plus three rounds
        fees[worker.address] += worker.withdraw(task).fee_wei
        assert worker.balance() == start_balance[worker.address] - fees[worker.address] + reward
    for validator in validators:
        assert validator.withdrawable(task) == 2 * ETHER + 999_999_999_999_999_999
        fees[validator.address] += validator.withdraw(task).fee_wei
        assert validator.balance() == (
            start_balance[validator.address] - fees[validator.address] + 999_999_999_999_999_999
        )
    fees[world.requester.address] += world.requester.reclaim_escrow(task, 3).fee_wei
    assert (
        world.requester.balance()
        == start_balance[world.requester.address] - fees[world.requester.address] + 3
    )
    assert world.w3.eth.get_balance(task) == 0


@pytest.mark.anvil
def test_round_seeds_follow_the_sortition_seed_chain(anvil_world_session: World) -> None:
    """seed_1 = next(initial(chainId, task, paramsHash), 1, prevrandao of start()), then each
    round's seed chains from the previous one with the prevrandao of the finalize that opened it
    (protocol/sortition.py is the definition). anvil only: eth-tester draws a block's mixHash
    when it mines the block, after executing its transactions, so the prevrandao a transaction
    saw there is not the mined block's mixHash."""
    from protocol.sortition import initial_seed, next_seed

    world = anvil_world_session
    world.reset()
    params = world.params(rounds=2)
    task, _ = world.requester.create_task(params)
    assert world.requester.params_hash(task) == params.abi_hash()
    world.workers[0].join_as_worker(task)
    world.validators[0].join_as_validator(task)
    started = world.requester.start(task, "bafkreivalidation")
    seed = initial_seed(world.requester.chain_id, bytes.fromhex(task[2:]), params.abi_hash())
    prevrandao = int.from_bytes(
        bytes(world.w3.eth.get_block(started.block_number)["mixHash"]), "big"
    )
    seed = next_seed(seed, 1, prevrandao)
    assert world.requester.round_info(task, 1).seed == seed
    assert started.event("RoundStarted").args["seed"] == seed
    played = play_round(
        world, task, 1, world.workers[:1], [(world.validators[0], Vote((1,), (True,), 5))]
    )
    block = world.w3.eth.get_block(played.finalize.block_number)
    prevrandao = int.from_bytes(bytes(block["mixHash"]), "big")
    assert world.requester.round_info(task, 2).seed == next_seed(seed, 2, prevrandao)
