"""Work nothing waits on runs beside the node's sequential jobs, in a thread of lower CPU
priority: the lower-priority thread itself, the driver's lane for jobs put aside; a
validator opens each update of a round once."""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

import pytest
import torch
import trio
import trio.testing

from node.blocks import BlockStore, BlockStoreError
from node.models import build_model
from node.runtime import learning
from node.runtime.background import LowPriorityThread
from node.runtime.driver import _Pump
from node.runtime.effects_jobs import ReleasedUpdates
from protocol.codec import encode_state_dict
from protocol.envelope import generate_keypair, seal
from protocol.state import events as ev
from protocol.state.actions import Action, Aggregate, StartTraining
from protocol.state.records import GlobalModel, Update
from protocol.state.worker import WorkerMachine
from tests.runtime.test_driver import ME, FakeJobs, Harness
from tests.runtime.test_key_release import put
from tests.state.helpers import INITIAL_CID

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a per-thread nice value is Linux's"
)


def thread_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
async def test_the_background_thread_runs_at_a_higher_nice_value_than_the_node() -> None:
    process = os.getpriority(os.PRIO_PROCESS, 0)
    background = LowPriorityThread(by=5)
    try:
        assert await background.run(thread_niceness) == min(19, process + 5)
        # the caller's own threads keep the process's priority
        assert await trio.to_thread.run_sync(thread_niceness) == process
        assert thread_niceness() == process
    finally:
        background.close()


async def test_the_background_thread_returns_results_and_raises_failures_in_order() -> None:
    background = LowPriorityThread(by=1)
    order: list[int] = []

    def step(n: int) -> int:
        order.append(n)
        return n * n

    def fail() -> None:
        raise ValueError("a job that fails")

    try:
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(background.run, lambda n=n: step(n))
        assert sorted(order) == list(range(5))
        assert await background.run(lambda: step(7)) == 49
        with pytest.raises(ValueError, match="a job that fails"):
            await background.run(fail)
    finally:
        background.close()


class AsideJobs(FakeJobs):
    """Aggregate never finishes; it is put aside when `aside_aggregate`."""

    def __init__(self, aside_aggregate: bool) -> None:
        super().__init__()
        self.aside_aggregate = aside_aggregate

    def aside(self, action: Action) -> bool:
        return self.aside_aggregate and isinstance(action, Aggregate)

    async def run(self, action: Action) -> ev.Event | None:
        if isinstance(action, Aggregate):
            self.ran.append(action)
            await trio.sleep_forever()
        return await super().run(action)


@pytest.mark.parametrize("aside", [True, False])
async def test_a_job_put_aside_does_not_hold_up_the_jobs_after_it(aside: bool) -> None:
    jobs = AsideJobs(aside_aggregate=aside)
    harness = Harness(WorkerMachine(ME), jobs=jobs)
    base = GlobalModel(INITIAL_CID)
    send, receive = trio.open_memory_channel[object](math.inf)
    async with trio.open_nursery() as nursery:
        pump = _Pump(harness.driver, nursery, send)  # type: ignore[arg-type]
        nursery.start_soon(pump.run_jobs)
        await pump.run(Aggregate(1, (), base, "fedavg"))
        await pump.run(StartTraining(2, base))
        await trio.testing.wait_all_tasks_blocked()
        if aside:  # training ran while the aggregate is still going
            assert [type(a) for a in jobs.ran] == [Aggregate, StartTraining]
            assert isinstance(receive.receive_nowait(), ev.TrainingDone)
        else:  # the sequential lane: training waits behind the aggregate
            assert [type(a) for a in jobs.ran] == [Aggregate]
            with pytest.raises(trio.WouldBlock):
                receive.receive_nowait()
        nursery.cancel_scope.cancel()


def test_a_validator_opens_each_update_once_until_the_rounds_global_model_is_built(
    tmp_path: Path,
) -> None:
    """The copy check, the evaluation and the global model share one opening of each
    update (a real sealed update in a real block store); once the global model is built
    the opened updates are let go, so the next opening reads the store again."""
    task = b"\x5f" * 20
    private, public = generate_keypair()
    store = BlockStore(tmp_path / "blocks")
    book = ReleasedUpdates(task, "mnist_2nn", store, learning.TaskCrypto(private, task))
    trained = build_model("mnist_2nn", seed=1).state_dict()
    cid = put(store, seal(encode_state_dict(trained), [public], task))
    initial = put(store, encode_state_dict(build_model("mnist_2nn", seed=0).state_dict()))
    model = GlobalModel(initial, 1, (Update(ME, cid, 100),))

    book.keep_opened()
    first = book.update(cid)
    store.delete(cid)  # the update is gone from the store
    assert book.update(cid) is first  # the evaluation's second look
    state = book.global_state(model)  # the round's global model, from the same opening
    assert all(torch.equal(state[n], trained[n]) for n in trained)
    book.drop_opened()
    with pytest.raises(BlockStoreError):
        book.update(cid)
