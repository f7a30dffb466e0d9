"""A committee drawn from unequal stakes, on the embedded chain without a network: each round
the chain seats exactly the validators protocol.sortition seats (every seated one commits,
every other one's commit reverts with its real proof), weighing each by its own stake left
against the round's snapshot; slashes take a fraction of the member's own stake and move the
next round's snapshot; pay is per worker judged, whatever the stake.

The same draw in a whole task with a network: tests/node/test_inprocess_committee.py.
"""

from __future__ import annotations

from node.chain import TaskStatus
from protocol.sortition import is_selected
from tests.contracts.harness import ETHER, Vote, World, play_round

STAKES = (2 * ETHER, 2 * ETHER, 4 * ETHER, 8 * ETHER)  # W = 16 ETH
TAU = 2  # thresholds 1/4, 1/4, 1/2, 1: the 8-ETH validator sits until it is slashed
ROUNDS = 6
SLASH_BPS = 2_500


def test_the_chain_seats_exactly_the_stake_weighted_vrf_draw(world: World) -> None:
    requester = world.requester
    task = world.create_task(
        rounds=ROUNDS, committee_size=TAU, slash_fraction_bps=SLASH_BPS,
        max_workers=2, max_validators=len(STAKES),
    )  # fmt: skip
    workers = world.workers[:2]
    for worker in workers:
        worker.join_as_worker(task)
    for validator, stake in zip(world.validators, STAKES, strict=True):
        validator.join_as_validator(task, stake)
    requester.start(task, "bafkreivalidationset")
    locked = {v.address: s for v, s in zip(world.validators, STAKES, strict=True)}
    whale = world.validators[3]
    seats = {v.address: 0 for v in world.validators}
    for round in range(1, ROUNDS + 1):
        info = requester.round_info(task, round)
        assert info.total_stake == sum(locked.values())
        seated = [
            v for v in world.validators
            if is_selected(world.ticket(v, task, round).beta, TAU, locked[v.address], info.total_stake)
        ]  # fmt: skip
        unseated = [v for v in world.validators if v not in seated]
        if TAU * locked[whale.address] >= info.total_stake:  # threshold 1: it always sits
            assert whale in seated
        # In round 1 the whale commits and stays silent: slashed a quarter of its own stake
        # (then 6 of 14 ETH: threshold 6/7, and everyone's W is 14).
        votes = [
            (v, Vote((5, 5), (True, True), 900_000, reveal=not (round == 1 and v is whale)))
            for v in seated
        ]
        result = play_round(world, task, round, workers, votes, unseated=unseated).result
        assert list(result.validators) == [v.address for v in seated]
        for v, slash, pay in zip(seated, result.validator_slashes, result.validator_payouts, strict=True):
            if round == 1 and v is whale:
                assert (slash, pay) == (8 * ETHER * SLASH_BPS // 10_000, 0)
            else:
                assert slash == 0
            locked[v.address] -= slash
            seats[v.address] += 1
        # Stake buys seats, not a rate: every agreeing member judged both workers and gets
        # the same share of V (and of the slash), whatever its stake.
        paid = {p for p, a in zip(result.validator_payouts, result.agreed, strict=True) if a}
        assert len(paid) <= 1
        assert requester.locked_deposit(task, whale.address) == locked[whale.address]
    assert requester.status(task) == TaskStatus.TERMINATED
    assert sum(seats.values()) < ROUNDS * len(STAKES)  # some commits were refused: a real draw
