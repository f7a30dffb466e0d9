"""Under sampling (`workers_per_round` below the task's workers) a worker fetches no update
ahead: it builds a round's model only once a later round draws it, and fetching every
announced update would cost each worker every round's updates (W x updates in all)."""

from __future__ import annotations

from types import SimpleNamespace

import trio
import trio.testing

from protocol.state.records import Role
from tests.runtime.test_fetch_ahead import (
    ME,
    OTHER,
    THIRD,
    HeldExchange,
    announcement,
    heard,
    network,
)
from tests.state.helpers import update_cid


async def fetched_ahead(workers_per_round: int) -> list[str]:
    exchange = HeldExchange()
    net = network(ME, Role.WORKER, exchange)  # three workers
    net._params = SimpleNamespace(workers_per_round=workers_per_round)  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        heard(net, nursery, announcement(OTHER, update_cid(OTHER, 1)))
        heard(net, nursery, announcement(THIRD, update_cid(THIRD, 1)))
        await trio.testing.wait_all_tasks_blocked()
        exchange.release.set()
    return exchange.fetched


async def test_a_worker_of_a_sampled_task_fetches_nothing_ahead() -> None:
    assert await fetched_ahead(workers_per_round=2) == []


async def test_a_task_that_draws_every_worker_still_fetches_ahead() -> None:
    # workers_per_round 0 (unset) or at least the workers: every worker trains every round
    for per_round in (0, 3):
        assert sorted(await fetched_ahead(per_round)) == sorted([update_cid(OTHER, 1), update_cid(THIRD, 1)])
