"""ChainSide on a real (embedded) chain: a transaction no retry can fix comes back as a
permanent TxFailed with the client's reason, which stops the machine (test_driver) and
ends `fl-node run` with exit status 2 (tests/node/test_run_errors)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from eth_account import Account

from node.chain import ChainClient, EventFollower, dev
from node.config import load_config
from node.runtime.chainside import ChainAccess, ChainFollower, address_bytes
from node.runtime.effects import NodeStatus
from node.runtime.effects_chain import ChainSide
from protocol.state import events as ev
from protocol.state.actions import SendTx
from protocol.state.records import Role, TxKind
from tests.contracts.harness import ETHER, World, make_world

REPO = Path(__file__).resolve().parents[2]
LOG = logging.LoggerAdapter(logging.getLogger("tests.runtime"), {})


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(dev.embedded_web3())


def chain_side(world: World, client: ChainClient, folder: Path) -> ChainSide:
    status = NodeStatus("node", "worker", client.address)
    cursor = EventFollower(world.w3, folder / "cursor.json")
    follower = ChainFollower(client, cursor, address_bytes(client.address))
    return ChainSide(load_config(REPO / "node.toml"), ChainAccess(client), follower, status, LOG)


async def test_a_revert_fixed_by_the_inputs_is_a_permanent_failure(
    world: World, tmp_path: Path
) -> None:
    world.reset()
    task = world.started_task(n_workers=2, n_validators=1, max_samples_per_worker=1_000)
    side = chain_side(world, world.workers[0], tmp_path)
    await side.follow(address_bytes(task))
    submit = SendTx(TxKind.SUBMIT_UPDATE, 1, (1, b"\x01" * 32, 2**64 - 1))
    failed = await side.send(submit)
    assert isinstance(failed, ev.TxFailed) and failed.permanent
    assert failed.error_name == "SamplesOutOfRange" and "SamplesOutOfRange" in failed.reason
    assert side.status.failed_txs == ["submitUpdate@1: SamplesOutOfRange"]


async def test_a_deposit_the_account_cannot_pay_is_a_permanent_failure(
    world: World, tmp_path: Path
) -> None:
    world.reset()
    task = world.create_task()
    key = hashlib.sha256(b"fl-node runtime tests: poor worker").digest()  # test key only
    # enough for gas (eth-tester checks it even for views), not for the 1 ETH deposit
    dev.fund(world.w3, Account.from_key(key).address, ETHER // 10)
    poor = ChainClient(world.w3, key, registry=world.deployment.registry)
    side = chain_side(world, poor, tmp_path)
    failed = await side.send(SendTx(TxKind.JOIN_TASK, 0, (address_bytes(task), Role.WORKER)))
    assert isinstance(failed, ev.TxFailed) and failed.permanent
    assert failed.error_name == "InsufficientFunds"
    assert "fund the account with at least" in failed.reason
    assert poor.balance() == ETHER // 10  # nothing was sent


async def test_a_poll_without_a_new_block_reads_no_logs(world: World, tmp_path: Path) -> None:
    world.reset()
    task = world.started_task(n_workers=2, n_validators=1)
    side = chain_side(world, world.workers[0], tmp_path)
    await side.follow(address_bytes(task))
    reads: list[int] = []
    read = side.follower.poll

    def counted() -> list[ev.Event]:
        reads.append(1)
        return read()

    side.follower.poll = counted  # type: ignore[method-assign]
    first = await side.poll()
    assert first is not None and any(isinstance(e, ev.RoundOpened) for e in first)
    await side.commit()
    assert await side.poll() is None  # no block since: nothing to read
    assert len(reads) == 1
    world.w3.testing.mine(1)  # type: ignore[attr-defined]
    later = await side.poll()
    assert later is not None and isinstance(later[-1], ev.Tick)  # the new block's clock
    assert len(reads) == 2
