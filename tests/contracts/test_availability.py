"""Availability is not disagreement, on chain: UNAVAILABLE verdicts in real rounds.

A worker whose update most of the committee could not fetch is unpaid and never slashed; a
validator that could not fetch what others fetched is not slashed; a validator that fetched
an update nobody else could is not slashed either; and the cheapest dodge of that rule, a
lazy validator marking every worker UNAVAILABLE to skip the evaluation, earns nothing while
the honest ones share the pool.
"""

from __future__ import annotations

from protocol.manifest import WorkerVerdict
from tests.contracts.harness import ETHER, Vote, World, play_round

OK, NO, GONE = WorkerVerdict.ACCEPT, WorkerVerdict.REJECT, WorkerVerdict.UNAVAILABLE
SCORES = (300_000, 200_000, 100_000)


def test_a_flooded_worker_is_unpaid_not_slashed_and_nobody_disagrees(any_world: World) -> None:
    world = any_world
    task = world.started_task(n_workers=3, n_validators=3)
    workers, (v0, v1, v2) = world.workers[:3], world.validators[:3]
    stakes = [world.requester.locked_deposit(task, v.address) for v in (v0, v1, v2)]
    # Worker 2's update was kept from v1 and v2 by a flood; v0 fetched and judged it.
    played = play_round(
        world,
        task,
        1,
        workers,
        [
            (v0, Vote(SCORES, (OK, OK, OK), 900_000)),
            (v1, Vote(SCORES[:2] + (0,), (OK, OK, GONE), 900_000)),
            (v2, Vote(SCORES[:2] + (0,), (OK, OK, GONE), 900_000)),
        ],
    )
    result = played.result
    assert result.accepted == (True, True, False)
    assert result.worker_slashes == (0, 0, 0)  # the flooded worker keeps its deposit
    assert result.worker_payouts[2] == 0
    assert world.requester.locked_deposit(task, workers[2].address) == ETHER
    assert result.agreed == (True, True, True)
    assert result.validator_slashes == (0, 0, 0)
    assert [world.requester.locked_deposit(task, v.address) for v in (v0, v1, v2)] == stakes
    # Paid per worker judged: v0 judged 3, the others 2 each (V = 1 ETH over 7 judgements).
    assert result.validator_payouts == (ETHER * 3 // 7, ETHER * 2 // 7, ETHER * 2 // 7)


def test_a_majority_reject_still_slashes(any_world: World) -> None:
    world = any_world
    task = world.started_task(n_workers=2, n_validators=3)
    workers, validators = world.workers[:2], world.validators[:3]
    votes = [(v, Vote(SCORES[:2], (OK, NO), 900_000)) for v in validators[:2]]
    votes.append((validators[2], Vote((SCORES[0], 0), (OK, GONE), 900_000)))
    result = play_round(world, task, 1, workers, votes).result
    assert result.accepted == (True, False)
    assert result.worker_slashes == (0, ETHER // 2)  # slash_fraction_bps = 5000
    assert result.agreed == (True, True, True)


def test_a_lazy_validator_earns_nothing_and_the_honest_ones_share_the_pool(world: World) -> None:
    """The dodge: mark every worker UNAVAILABLE (nothing to evaluate, never disagrees).
    It keeps its stake, but is paid per worker judged: zero, less than any honest member."""
    task = world.started_task(n_workers=3, n_validators=3)
    workers, (honest0, honest1, lazy) = world.workers[:3], world.validators[:3]
    played = play_round(
        world,
        task,
        1,
        workers,
        [
            (honest0, Vote(SCORES, (OK, OK, OK), 900_000)),
            (honest1, Vote(SCORES, (OK, OK, OK), 900_000)),
            (lazy, Vote((0, 0, 0), (GONE, GONE, GONE), 900_000)),
        ],
    )
    result = played.result
    assert result.agreed == (True, True, True) and result.validator_slashes == (0, 0, 0)
    assert result.validator_payouts == (ETHER // 2, ETHER // 2, 0)
    lazy_net = result.validator_payouts[2] - played.fees[lazy.address]
    honest_net = result.validator_payouts[0] - played.fees[honest0.address]
    assert lazy_net < 0 < honest_net  # it even pays its own gas for nothing
    assert result.accepted == (True, True, True)  # two honest reveals of three decide
