"""Dishonest validators in a whole task (requester, 3 workers and the validators on the
embedded chain, real libp2p, real MNIST):

- a copycat of four members commits to a placeholder (no manifest is public before the
  reveal phase), then reveals a copy of another member's revealed manifest: the contract
  refuses it (RevealMismatch: the commitment binds the committer), so it never reveals and
  is unpaid and slashed, while the three honest members agree and are paid;
- two colluders of seven reveal the same altered scores (the lowest-address worker boosted,
  every other one zeroed and rejected); the five honest members are a majority of every
  vote, so the consensus stands and the colluders are unpaid and slashed. Eleven nodes in
  one process took 200 s on a loaded 2-core machine and missed fetch deadlines when the
  load was higher, so this one runs with FL_HEAVY_INPROCESS=1 (the same settlement is
  checked without a network in test_validator_attacks.py).

One lying and one lazy member of four: tests/node/test_inprocess.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_mnist, run_mnist_task

pytestmark = needs_mnist("train")


async def run_task(tmp_path: Path, validators: tuple[str, ...]) -> Any:
    return await run_mnist_task(
        tmp_path,
        workers=3,
        validators=len(validators),
        rounds=1,
        model="mnist_2nn",
        max_samples=1500,
        validation_samples=500,
        # a member that never opens its commitment keeps the reveal phase open to its deadline
        task={"qualification_threshold": 0.3, "reveal_seconds": 20},
        validator_behaviours=validators,
        timeout_s=600,
    )


def check_honest_consensus(result: Any, honest: list[Any]) -> dict[str, int]:
    """Every worker accepted, every honest member agreed with the consensus (its scores
    within the tolerance) and was paid, none slashed; returns each member's seat."""
    (only,) = result.rounds
    assert only.finalized
    seat = {address: i for i, address in enumerate(only.validators)}
    assert set(seat) == {v.address for v in result.validators}  # equal stakes: all seated
    assert all(only.accepted)
    for member in honest:
        i = seat[member.address]
        assert only.revealed[i] and only.agreed[i]
        assert only.validator_payouts[i] > 0 and only.validator_slashes[i] == 0
    return seat


async def test_a_copycat_validator_cannot_open_its_commitment_with_a_copy(tmp_path: Path) -> None:
    result = await run_task(tmp_path, ("honest", "honest", "honest", "copycat"))
    seat = check_honest_consensus(result, result.validators[:3])
    (only,) = result.rounds
    copycat = result.validators[3]
    assert any("RevealMismatch" in failed for failed in copycat.failed_txs), copycat.failed_txs
    i = seat[copycat.address]
    assert not only.revealed[i]
    assert only.validator_payouts[i] == 0 and only.validator_slashes[i] > 0
    assert only.reveals == 3


@pytest.mark.skipif(not os.environ.get("FL_HEAVY_INPROCESS"), reason="set FL_HEAVY_INPROCESS=1")
async def test_two_colluding_validators_of_seven_are_outvoted_and_slashed(tmp_path: Path) -> None:
    result = await run_task(tmp_path, ("honest",) * 5 + ("colluding", "colluding"))
    seat = check_honest_consensus(result, result.validators[:5])
    (only,) = result.rounds
    for member in result.validators[5:]:
        i = seat[member.address]
        assert only.revealed[i] and not only.agreed[i]
        assert only.validator_payouts[i] == 0 and only.validator_slashes[i] > 0
    assert only.reveals == 7
