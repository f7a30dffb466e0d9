"""Contract reads with Foundry's `cast` (npm @foundry-rs/cast) against a real anvil: what a
user's `cast call` decodes from the Registry and a running Task equals what our client reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from node.anvil import Anvil
from node.chain.artifacts import abi_function
from tests.contracts import conftest as contract_fixtures
from tests.contracts.harness import World

REPO = Path(__file__).resolve().parents[2]
CAST = REPO / "node_modules" / ".bin" / "cast"
CAST_TIMEOUT_S = 60.0  # a hang guard on a loaded machine, not a speed bound
MODEL_SPEC_HASH = bytes(range(32))

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.skipif(
        not CAST.exists(),
        reason=f"{CAST.relative_to(REPO)} is missing; run scripts/setup.sh (npm install) "
        "to get @foundry-rs/cast",
    ),
]


def cast_call(rpc_url: str, address: str, signature: str, *args: str) -> list[Any]:
    """`cast call --json`: the decoded return values, as cast prints them."""
    done = subprocess.run(
        [str(CAST), "call", "--rpc-url", rpc_url, address, signature, *args, "--json"],
        capture_output=True, text=True, timeout=CAST_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, f"cast call {signature} failed: {done.stderr.strip()}"
    assert done.stdout.strip(), f"cast call {signature} printed nothing: {done.stderr.strip()}"
    values: list[Any] = json.loads(done.stdout)
    return values


def as_cast_prints(value: Any) -> Any:
    """A value our client decoded, in cast's JSON form (bytes as 0x hex, tuples as lists)."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (tuple, list)):
        return [as_cast_prints(v) for v in value]
    return value


# the contract tests' fixtures: an anvil chain and a world of registered participants
anvil_chain = contract_fixtures.anvil_chain
anvil_world_session = contract_fixtures.anvil_world_session


@pytest.fixture
def world(anvil_world_session: World) -> World:
    anvil_world_session.reset()
    return anvil_world_session


def test_cast_reads_the_registry_as_our_client_does(anvil_chain: Anvil, world: World) -> None:
    client = world.requester
    running = world.started_task(model_spec_hash=MODEL_SPEC_HASH)
    recruiting = world.create_task()
    registry = world.deployment.registry

    count = cast_call(anvil_chain.url, registry, "taskCount()(uint256)")
    assert count == [client.task_count()] and client.task_count() >= 2
    for index in range(client.task_count()):
        assert cast_call(anvil_chain.url, registry, "taskAt(uint256)(address)", str(index)) == [
            client.task_at(index)
        ]
    assert {running, recruiting} <= {client.task_at(i) for i in range(client.task_count())}
    open_tasks = cast_call(anvil_chain.url, registry, "openTasks(uint256)(address[])", "10")
    assert open_tasks == [client.open_tasks(10)] and recruiting in client.open_tasks(10)
    for member in (world.workers[0], world.unregistered):
        assert cast_call(anvil_chain.url, registry, "isRegistered(address)(bool)", member.address) == [
            client.is_registered(member.address)
        ]


def test_cast_reads_a_running_task_as_our_client_does(anvil_chain: Anvil, world: World) -> None:
    client = world.requester
    task = world.started_task(model_spec_hash=MODEL_SPEC_HASH)

    # A user writes the struct's types out (here from the ABI, so a new field cannot be missed).
    params_signature = f"params()({','.join(abi_function('Task', 'params').outputs)})"
    params = client.task_params(task)
    assert params.model_spec_hash == MODEL_SPEC_HASH
    assert cast_call(anvil_chain.url, task, params_signature) == [as_cast_prints(params.to_abi())]

    assert cast_call(anvil_chain.url, task, "status()(uint8)") == [int(client.status(task))]
    assert cast_call(anvil_chain.url, task, "phase()(uint8)") == [int(client.phase(task))]
    assert cast_call(anvil_chain.url, task, "currentRound()(uint256)") == [client.current_round(task)]
    assert client.current_round(task) == 1
    assert cast_call(anvil_chain.url, task, "requester()(address)") == [client.requester(task)]
    assert cast_call(anvil_chain.url, task, "validationSetCid()(string)") == [
        client.validation_set_cid(task)
    ]
    assert cast_call(anvil_chain.url, task, "paramsHash()(bytes32)") == [
        as_cast_prints(client.params_hash(task))
    ]
    assert cast_call(anvil_chain.url, task, "books()(uint256,uint256,uint256)") == list(
        client.books(task)
    )
    workers, validators = client.members(task)
    assert workers and validators
    assert cast_call(anvil_chain.url, task, "members()(address[],address[])") == [workers, validators]
