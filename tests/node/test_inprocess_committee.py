"""A real committee: 8 validators with unequal stakes, committee size 4, in one process
(requester, 2 workers, 8 validators on the embedded chain, real libp2p, real MNIST).

The seated validators must be exactly those the VRF draws, recomputed here with
protocol.sortition from the chain's seed, each validator's own key and stake, and the round's
total stake; they agree, the seated honest ones are paid, nobody is slashed.

Under sortition the commit phase ends early only once every seated member has committed and
every other validator has proved itself unseated (`Task.endCommitPhase`); the seated members'
evaluation starts at the latest halfway through the phase (ValidatorMachine's evaluation
cutoff), so that half is the time they have to fetch the workers' updates; on a loaded
machine a 1-round run of eleven nodes takes a few minutes, hence FL_HEAVY_INPROCESS=1. The same draw on the chain without a
network, in every default run: tests/contracts/test_committee.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.localnet.inprocess import InProcessResult
from node.runtime.keys import VRF_KEY_FILE
from protocol import sortition, vrf
from tests.conftest import needs_mnist, run_mnist_task

ETHER = 10**18
STAKES = (1, 1, 1, 1, 2, 2, 4, 4)  # ETH; W = 16, tau = 4: every tau * w <= W
COMMITTEE_SIZE = 4
# The seated members fetch the two updates in the first half of the commit phase (the
# evaluation cutoff); 120 s leaves them a minute under load, where last time a shorter
# phase let one seated member miss both updates and go unpaid.
COMMIT_SECONDS = 120

pytestmark = [
    needs_mnist("train"),
    pytest.mark.skipif(not os.environ.get("FL_HEAVY_INPROCESS"), reason="set FL_HEAVY_INPROCESS=1"),
]


def vrf_draw(result: InProcessResult, workdir: Path, round: int) -> set[str]:
    """The validators protocol.sortition seats in `round`, from the chain's seed, total stake
    and each validator's stake, with each validator's own VRF key (checked against the
    modulus the registry holds for it)."""
    reader, task = result.reader, result.task
    info = reader.round_info(task, round)
    # Round 1: nobody slashed yet, so each validator's weight is the stake it joined with.
    stakes = {v.address: reader.stake_of(task, v.address) for v in result.validators}
    assert info.total_stake == sum(stakes.values())
    drawn = set()
    for i, validator in enumerate(result.validators):
        key = vrf.private_key_from_pem((workdir / f"validator{i}" / VRF_KEY_FILE).read_bytes())
        assert int.from_bytes(reader.participant(validator.address).vrf_modulus, "big") == key.public_key.modulus
        ticket = sortition.committee_proof(key, info.seed, round)
        if sortition.is_selected(ticket.beta, COMMITTEE_SIZE, stakes[validator.address], info.total_stake):
            drawn.add(validator.address)
    return drawn


async def test_the_committee_is_the_stake_weighted_vrf_draw(tmp_path: Path) -> None:
    result = await run_mnist_task(
        tmp_path,
        workers=2,
        validators=len(STAKES),
        rounds=1,
        model="mnist_2nn",
        max_samples=1000,
        validation_samples=300,
        validator_stakes=[s * ETHER for s in STAKES],
        task={
            "committee_size": COMMITTEE_SIZE,
            "validator_stake_wei": ETHER,
            "qualification_threshold": 0.3,
            "commit_seconds": COMMIT_SECONDS,
            "reveal_seconds": 60,
        },
        timeout_s=900,
    )
    reader, task = result.reader, result.task
    assert [reader.stake_of(task, v.address) for v in result.validators] == [s * ETHER for s in STAKES]
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    assert [node.failed_txs for node in result.nodes] == [[]] * len(result.nodes)
    (only,) = result.rounds
    drawn = vrf_draw(result, tmp_path, 1)
    # tau * w = W for the two 4-ETH validators: their threshold is 1, they always sit.
    assert {v.address for v, s in zip(result.validators, STAKES, strict=True) if s == 4} <= drawn
    assert set(only.validators) == drawn  # every drawn member committed, nobody else could
    assert all(only.revealed) and all(only.agreed) and all(only.accepted)
    assert all(only.validator_payouts) and not any(only.validator_slashes)
    assert not any(only.worker_slashes)
    for validator in result.validators:  # each withdrew its own stake plus its pay
        paid = dict(zip(only.validators, only.validator_payouts, strict=True)).get(validator.address, 0)
        assert validator.withdrawn_wei == reader.stake_of(task, validator.address) + paid
