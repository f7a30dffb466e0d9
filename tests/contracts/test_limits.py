"""protocol/limits.py holds every protocol limit once: its chain constants equal the deployed
contracts' own (read by calling them), and the modules that enforce a limit use that value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import limits
from protocol.manifest import WorkerVerdict
from tests.contracts.harness import World

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"

ON_CHAIN = [
    ("Registry", "BPS", limits.BPS),
    ("Registry", "MAX_PEER_ID_LENGTH", limits.MAX_PEER_ID_LENGTH),
    ("Registry", "MAX_MEMBERS", limits.MAX_MEMBERS),
    ("Registry", "MAX_ROUNDS", limits.MAX_ROUNDS),
    ("Registry", "MAX_AMOUNT", limits.MAX_AMOUNT),
    ("Registry", "MAX_STRING_LENGTH", limits.MAX_STRING_LENGTH),
    ("Registry", "MAX_SAMPLES_PER_WORKER", limits.MAX_SAMPLES_PER_WORKER),
    ("Task", "BPS", limits.BPS),
    ("Task", "MAX_ABS_SCORE", limits.MAX_ABS_SCORE),
    ("Task", "MAX_ACCURACY", limits.MAX_ACCURACY),
    ("Task", "MAX_CID_LENGTH", limits.MAX_CID_LENGTH),
    ("Task", "MAX_STAKE", limits.MAX_STAKE),
]


@pytest.mark.parametrize(("contract", "constant", "expected"), ON_CHAIN)
def test_chain_constants_equal_the_python_limits(
    world: World, contract: str, constant: str, expected: int
) -> None:
    address = (
        world.deployment.registry if contract == "Registry" else world.deployment.task_implementation
    )
    value = world.requester.call(contract, address, constant)
    assert value == expected, f"{contract}.{constant} = {value}, protocol.limits says {expected}"


def test_verdict_encoding_equals_reward_math() -> None:
    source = (CONTRACTS / "RewardMath.sol").read_text(encoding="utf-8")
    for verdict in WorkerVerdict:
        match = re.search(rf"uint8 internal constant {verdict.name} = (\d+);", source)
        assert match is not None, f"RewardMath.sol has no {verdict.name} constant"
        assert int(match.group(1)) == verdict.value


def test_the_derived_bounds_hold_for_the_constants() -> None:
    # Every payout, escrow and balance fits MAX_WEI: rounds x (W + V) at the largest amounts.
    assert limits.MAX_ROUNDS * 2 * limits.MAX_AMOUNT < limits.MAX_WEI
    # A round's float64 sample weights are exact: every worker at the per-worker bound.
    assert limits.MAX_MEMBERS * limits.MAX_SAMPLES_PER_WORKER <= 2**53


def test_enforcing_modules_use_the_one_value() -> None:
    from node.blocks import unixfs
    from node.runtime import learning
    from protocol import envelope, manifest, messages
    from protocol.state import phases

    assert messages.MAX_WORKERS == phases.MAX_WORKERS == limits.MAX_WORKERS == limits.MAX_MEMBERS
    assert messages.MAX_MESSAGE_SIZE == limits.MAX_MESSAGE_SIZE
    assert messages.MAX_VRF_PROOF_SIZE == limits.MAX_VRF_PROOF_SIZE
    assert envelope.MAX_RECIPIENTS == learning.MAX_RECIPIENTS == limits.MAX_RECIPIENTS
    assert unixfs.MAX_DAG_DEPTH == learning.MAX_DAG_DEPTH == limits.MAX_DAG_DEPTH
    assert unixfs.MAX_BLOCK_SIZE == limits.MAX_BLOCK_SIZE
    assert manifest.MAX_ABS_SCORE == limits.MAX_ABS_SCORE
    assert manifest.MAX_ACCURACY == limits.MAX_ACCURACY
