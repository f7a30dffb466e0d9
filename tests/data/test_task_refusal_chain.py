"""A worker looking at real tasks on an (embedded) chain: the task check it runs before any
deposit refuses a pinned architecture it cannot reproduce, an imported model its config
does not trust, and a task its own data cannot train, each with one line naming why."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from node.chain import ChainClient, EventFollower, dev
from node.chain.types import Role as ChainRole
from node.config import DataConfig, NodeConfig, load_config
from node.models import architecture_of
from node.runtime.chainside import ChainAccess, ChainFollower, address_bytes
from node.runtime.effects import NodeStatus
from node.runtime.effects_chain import ChainSide
from protocol.state import events as ev
from protocol.state.actions import FindTask
from tests.contracts.harness import World, make_world

REPO = Path(__file__).resolve().parents[2]
LOG = logging.LoggerAdapter(logging.getLogger("tests.data"), {})


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(dev.embedded_web3())


def chain_side(world: World, client: ChainClient, config: NodeConfig, folder: Path) -> ChainSide:
    cursor = EventFollower(world.w3, folder / "cursor.json")
    follower = ChainFollower(client, cursor, address_bytes(client.address))
    status = NodeStatus("worker", "worker", client.address)
    return ChainSide(config, ChainAccess(client), follower, status, LOG)


async def offered(side: ChainSide, task: str) -> str | None:
    answer = await side.find_task(FindTask())
    assert isinstance(answer, ev.TasksOffered)
    (offer,) = [o for o in answer.offers if o.task == address_bytes(task)]
    return offer.problem


async def test_a_worker_refuses_what_it_cannot_do_before_depositing(
    world: World, tmp_path: Path
) -> None:
    world.reset()
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.zeros((8, 6), np.float32), y=np.arange(8) % 2)
    config = dataclasses.replace(
        load_config(REPO / "node.toml"), data=DataConfig(source=str(rows))
    )
    worker = world.workers[0]
    side = chain_side(world, worker, config, tmp_path)
    tabular = "tabular_mlp(features=6, classes=2)"
    ours = architecture_of(tabular).hash()

    fits = world.create_task(model_arch=tabular, model_spec_hash=ours)
    assert await offered(side, fits) is None

    other = architecture_of("tabular_mlp(features=6, classes=2, hidden=32)").hash()
    pinned = world.create_task(model_arch=tabular, model_spec_hash=other)
    problem = await offered(side, pinned)
    assert problem is not None and "\n" not in problem
    assert f"0x{other.hex()}" in problem and f"0x{ours.hex()}" in problem

    hostile = world.create_task(model_arch="os:abort")
    assert "does not trust" in str(await offered(side, hostile))

    images = world.create_task(model_arch="mnist_2nn")
    mismatch = await offered(side, images)
    assert mismatch is not None and str(rows) in mismatch and "mnist_2nn" in mismatch

    for task in (fits, pinned, hostile, images):  # nothing joined, nothing deposited
        assert worker.role_of(task) == ChainRole.NONE
