"""Transactions no retry can fix are told apart (TransactionCannotSucceed), so a node can stop
at once with the reason instead of retrying until a deadline: a sender that cannot pay for
value + gas (InsufficientFunds, before anything is sent), and reverts fixed by the
transaction's own inputs (DeterministicRevert). Timing reverts stay plain ChainRevert."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account

from node.chain import ChainClient, ChainRevert, dev
from node.chain.errors import DeterministicRevert, InsufficientFunds, TransactionCannotSucceed
from tests.contracts.harness import ETHER, World


def _poor_client(world: World, label: str, balance: int) -> ChainClient:
    key = hashlib.sha256(f"fl-node fatal tests {label}".encode()).digest()  # test key only
    dev.fund(world.w3, Account.from_key(key).address, balance)
    return ChainClient(world.w3, key, registry=world.deployment.registry)


def test_an_escrow_above_the_balance_fails_at_once_with_the_amounts(any_world: World) -> None:
    """createTask's escrow (100 ETH for 25 rounds) above the requester's balance: no retry
    helps, so it is InsufficientFunds, naming what is missing, and nothing is sent."""
    world = any_world
    params = world.params(rounds=25, worker_reward_per_round=3 * ETHER)  # escrow 100 ETH
    poor = _poor_client(world, "requester", 10 * ETHER)
    nonce = world.w3.eth.get_transaction_count(poor.address)
    with pytest.raises(InsufficientFunds) as caught:
        poor.create_task(params)
    error = caught.value
    assert isinstance(error, TransactionCannotSucceed)
    assert error.function == "createTask" and error.needed >= params.escrow
    assert error.balance == 10 * ETHER
    assert "fund the account with at least" in error.reason
    assert world.w3.eth.get_transaction_count(poor.address) == nonce
    assert poor.balance() == 10 * ETHER


def test_a_value_covered_but_not_its_gas_is_insufficient_too(any_world: World) -> None:
    world = any_world
    params = world.params()
    poor = _poor_client(world, "almost", params.escrow + 1)
    with pytest.raises(InsufficientFunds) as caught:
        poor.create_task(params)
    assert caught.value.needed > params.escrow + 1
    assert poor.balance() == params.escrow + 1


def test_reverts_fixed_by_the_inputs_are_deterministic_timing_ones_are_not(
    any_world: World,
) -> None:
    world = any_world
    task = world.started_task(n_workers=2, n_validators=1, max_samples_per_worker=1_000)
    worker = world.workers[0]
    with pytest.raises(DeterministicRevert) as caught:
        worker.submit_update(task, 1, "bafkreihuge", 2**64 - 1)
    assert caught.value.name == "SamplesOutOfRange"
    assert isinstance(caught.value, ChainRevert) and isinstance(caught.value, TransactionCannotSucceed)
    with pytest.raises(ChainRevert) as timing:
        world.commit(world.validators[0], task, 1, b"\x01" * 32)  # too early: WrongPhase
    assert timing.value.name == "WrongPhase"
    assert not isinstance(timing.value, TransactionCannotSucceed)
    # Views never count as transactions that cannot succeed: a query may legitimately revert.
    with pytest.raises(ChainRevert) as view:
        world.requester.participant(world.unregistered.address)
    assert not isinstance(view.value, TransactionCannotSucceed)


def test_localnet_funding_covers_the_25_round_task_the_old_fixed_amount_did_not(
    world: World,
) -> None:
    """node/localnet funds each account from the task's needs; here on a real chain: the
    requester's funding creates the 25-round task (escrow 100 ETH plus gas), the old fixed
    100 ETH cannot, and a worker's funding registers and joins with its deposit."""
    from pathlib import Path

    from node.localnet.configs import TaskDefaults, funding_wei
    from tests.contracts.harness import register

    section = TaskDefaults(25, 4, 4).section(Path("unused"))
    params = world.params(
        rounds=section["rounds"],
        worker_reward_per_round=section["worker_reward_per_round_wei"],
        validator_reward_per_round=section["validator_reward_per_round_wei"],
        worker_deposit=section["worker_deposit_wei"],
        validator_stake=section["validator_stake_wei"],
    )
    with pytest.raises(InsufficientFunds):
        _poor_client(world, "fixed funding", 100 * ETHER).create_task(params)
    requester = _poor_client(world, "funded requester", funding_wei("requester", section))
    task, _ = requester.create_task(params)
    assert requester.escrow(task) == 100 * ETHER
    worker = _poor_client(world, "funded worker", funding_wei("worker", section))
    register(worker, world.spare_vrf_keys[0])
    worker.join_as_worker(task)
    assert worker.locked_deposit(task) == section["worker_deposit_wei"]
