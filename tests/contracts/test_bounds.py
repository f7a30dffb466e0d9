"""Range checks at the chain boundary (node/chain/bounds.py): an integer from an event or a view
outside the protocol's range for it is refused by name before it reaches the node's
arithmetic; every integer field of our events has a declared range."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from node.chain import ChainClient, EventFollower, dev
from node.chain.artifacts import decode_log, load_artifact
from node.chain.bounds import (
    EVENT_BOUNDS,
    VIEW_BOUNDS,
    ChainValueOutOfRange,
    check_event,
    check_view,
)
from protocol.limits import MAX_SAMPLES_PER_WORKER
from tests.contracts.harness import World

WORKER = "0x" + "ab" * 20


def _update_submitted_log(n_samples: int) -> tuple[list[bytes], bytes]:
    topic = keccak(text="UpdateSubmitted(uint256,address,bytes32,uint256)")
    topics = [topic, abi_encode(["uint256"], [1]), abi_encode(["address"], [WORKER])]
    return topics, abi_encode(["bytes32", "uint256"], [b"\x01" * 32, n_samples])


def test_an_out_of_range_sample_count_in_a_log_is_refused_by_name() -> None:
    name, args = decode_log(*_update_submitted_log(MAX_SAMPLES_PER_WORKER))  # type: ignore[misc]
    assert (name, args["nSamples"]) == ("UpdateSubmitted", MAX_SAMPLES_PER_WORKER)
    for bad in (2**64 - 1, MAX_SAMPLES_PER_WORKER + 1, 0):
        with pytest.raises(ChainValueOutOfRange, match=r"UpdateSubmitted\.nSamples = \d+ is outside"):
            decode_log(*_update_submitted_log(bad))


def test_every_integer_field_of_our_events_has_a_range() -> None:
    for contract in ("Task", "Registry"):
        for entry in load_artifact(contract).abi:
            if entry["type"] != "event":
                continue
            for field in entry["inputs"]:
                if field["type"].startswith(("uint", "int")):
                    assert field["name"] in EVENT_BOUNDS.get(entry["name"], {}), (
                        f"{contract}.{entry['name']}.{field['name']} has no range in bounds.py"
                    )


def test_a_list_entry_out_of_range_is_named_with_its_index() -> None:
    with pytest.raises(ChainValueOutOfRange, match=r"ManifestRevealed\.scores\[1\]"):
        check_event("ManifestRevealed", {"scores": [0, 10**31]})
    with pytest.raises(ChainValueOutOfRange, match="no declared range"):
        check_view("roundInfo", surprise=1)


def test_every_view_with_ranges_is_a_function_of_our_contracts() -> None:
    functions = {
        entry["name"]
        for contract in ("Task", "Registry")
        for entry in load_artifact(contract).abi
        if entry["type"] == "function"
    }
    assert set(VIEW_BOUNDS) <= functions, f"ranges for views no contract has: {set(VIEW_BOUNDS) - functions}"


def test_a_hostile_contract_cannot_push_huge_values_into_the_node(
    world: World, tmp_path: Path
) -> None:
    """A contract that speaks the Task's ABI (the same event and views) but hands out values
    no Task can produce: the follower and the client refuse them by name."""
    hostile = dev.deploy_from_dev_account(world.w3, "HostileTask")
    follower = EventFollower(world.w3, tmp_path / "cursor.json")
    follower.follow(hostile, from_block=world.w3.eth.block_number)
    reader: ChainClient = world.requester
    # The sender's own receipt is decoded with the same checks (the transaction is mined).
    with pytest.raises(ChainValueOutOfRange, match=r"UpdateSubmitted\.nSamples"):
        reader.transact("HostileTask", hostile, "submitHuge", 2**64 - 1)
    with pytest.raises(ChainValueOutOfRange, match=r"UpdateSubmitted\.nSamples = 18446744073709551615"):
        follower.poll()
    with pytest.raises(ChainValueOutOfRange, match=r"updateCommitment\.n_samples"):
        reader.update_commitment_of(hostile, 1, WORKER)
    with pytest.raises(ChainValueOutOfRange, match=r"currentRound\.round"):
        reader.current_round(hostile)
