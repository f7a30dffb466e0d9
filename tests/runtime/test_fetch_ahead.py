"""A worker fetches the other workers' updates as they are announced, so that averaging
them when the round is settled needs no fetch: once per worker and round, never its own,
never on a validator, not once training has closed (the validators are fetching it then);
the machine's own Fetch of a blob being fetched ahead waits for it."""

from __future__ import annotations

import logging
from typing import Any

import trio
import trio.testing

from node.config import BehaviourConfig
from node.runtime.effects_network import TaskNetwork
from protocol.messages import ModelAnnouncement
from protocol.state import events as ev
from protocol.state.actions import Fetch
from protocol.state.records import BlobKind, Role
from tests.state.helpers import TASK, WORKERS, update_cid

ME, OTHER, THIRD = WORKERS
VALIDATOR = b"\x0b" * 20
LOG = logging.LoggerAdapter(logging.getLogger("tests.runtime"), {})


class NoChain:
    client = None  # nothing here reads the chain


class FakeHost:
    def get_peerstore(self) -> Any:
        return None

    def get_id(self) -> Any:
        return None


class HeldExchange:
    """BlockExchange.fetch that records each call and finishes when `release` is set."""

    def __init__(self) -> None:
        self.host = FakeHost()
        self.fetched: list[str] = []
        self.release = trio.Event()

    async def fetch(self, cid: str, max_size: int, **options: Any) -> bytes:
        self.fetched.append(cid)
        await self.release.wait()
        return b""


def network(me: bytes, role: Role, exchange: HeldExchange) -> TaskNetwork:
    net = TaskNetwork(
        NoChain(), None, me, exchange, None, None, BehaviourConfig(), LOG,  # type: ignore[arg-type]
    )
    net.roles.update({ME: Role.WORKER, OTHER: Role.WORKER, THIRD: Role.WORKER, VALIDATOR: Role.VALIDATOR})
    net.roles[me] = role
    net.bounds[BlobKind.MODEL] = 1 << 20
    return net


def announcement(worker: bytes, cid: str, round: int = 1) -> ModelAnnouncement:
    return ModelAnnouncement(chain_id=1, task=TASK, round=round, worker=worker, cid=cid, n_samples=100)


def heard(net: TaskNetwork, nursery: trio.Nursery, message: ModelAnnouncement) -> None:
    """What the gossip loop does with a validated announcement, before delivering it."""
    net._remember(message)
    net.fetch_ahead(nursery, message)


async def test_a_worker_fetches_other_workers_updates_once_as_they_are_announced() -> None:
    exchange = HeldExchange()
    net = network(ME, Role.WORKER, exchange)
    theirs, third, mine = update_cid(OTHER, 1), update_cid(THIRD, 1), update_cid(ME, 1)
    async with trio.open_nursery() as nursery:
        heard(net, nursery, announcement(OTHER, theirs))
        heard(net, nursery, announcement(OTHER, theirs))  # the same, again
        heard(net, nursery, announcement(OTHER, update_cid(THIRD, 7)))  # a second CID: not fetched
        heard(net, nursery, announcement(ME, mine))  # our own: we have it
        heard(net, nursery, announcement(THIRD, third))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(exchange.fetched) == sorted([theirs, third])

        # the machine's Fetch waits for the fetch ahead, then finds the blob (fetches again
        # only through the store: a local blob costs no peer a byte)
        answers: list[ev.Event] = []

        async def machine_fetch() -> None:
            answers.append(await net.fetch(Fetch(theirs, (OTHER,), BlobKind.MODEL)))

        nursery.start_soon(machine_fetch)
        await trio.testing.wait_all_tasks_blocked()
        assert not answers and exchange.fetched.count(theirs) == 1
        exchange.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert answers == [ev.BlobFetched(theirs)]


async def test_a_validator_fetches_nothing_ahead() -> None:
    exchange = HeldExchange()
    net = network(VALIDATOR, Role.VALIDATOR, exchange)
    async with trio.open_nursery() as nursery:
        heard(net, nursery, announcement(OTHER, update_cid(OTHER, 1)))
        await trio.testing.wait_all_tasks_blocked()
    assert exchange.fetched == []


async def test_an_update_announced_after_training_closed_is_left_to_the_rounds_fetch() -> None:
    exchange = HeldExchange()
    net = network(ME, Role.WORKER, exchange)
    net._training_over = lambda round: round <= 1
    async with trio.open_nursery() as nursery:
        heard(net, nursery, announcement(OTHER, update_cid(OTHER, 1), round=1))
        heard(net, nursery, announcement(OTHER, update_cid(OTHER, 2), round=2))
        await trio.testing.wait_all_tasks_blocked()
        assert exchange.fetched == [update_cid(OTHER, 2)]
        exchange.release.set()
