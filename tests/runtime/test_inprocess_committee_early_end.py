"""A committee smaller than the validator set, in one process (requester, workers and
validators on the embedded chain, real libp2p hosts, real MNIST): the commit phase ends as
soon as the seated validators have committed, not at its deadline. The unseated validators
gossip the VRF proofs that show them unseated; the requester checks them and sends
Task.endCommitPhase with them; every node moves to REVEAL on PhaseEndedEarly, and the round
settles as usual.

The draw is made certain by the stakes: the seated validators stake 1 ETH each and the others
the task's minimum of 1 wei, with the committee size the number of 1-ETH stakes, so a 1-ETH
validator sits with probability about 1 - 1e-18 and a 1-wei one with about 1e-18.

The default run has 1 worker and 3 validators (1 seated); FL_HEAVY_INPROCESS=1 adds 2
workers and 5 validators (2 seated), a few minutes on a loaded machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_typing import HexStr
from eth_utils import to_checksum_address

from node.blocks import BlockStore
from node.chain import Phase
from tests.conftest import needs_mnist, run_mnist_task

pytestmark = needs_mnist("train")

ETHER = 10**18
COMMIT_SECONDS = 120  # far beyond what the seated members need: the early end is visible


async def run_and_check(tmp_path: Path, workers: int, validators: int, seated: int) -> None:
    result = await run_mnist_task(
        tmp_path,
        workers=workers,
        validators=validators,
        rounds=1,
        model="mnist_2nn",
        max_samples=500 * workers,
        validation_samples=200,
        validator_stakes=[ETHER] * seated,  # the others stake the task's minimum, 1 wei
        task={
            "committee_size": seated,
            "validator_stake_wei": 1,
            "qualification_threshold": 0.3,
            "reward_policy": "topk",
            "top_k": workers,
            "commit_seconds": COMMIT_SECONDS,
            "reveal_seconds": 120,
        },
        timeout_s=600,
    )
    reader, task = result.reader, result.task
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    assert [node.failed_txs for node in result.nodes] == [[]] * len(result.nodes)
    info = reader.round_info(task, 1)

    # the commit phase ended early, by the requester's endCommitPhase
    logs = reader._decode_logs(
        reader.w3.eth.get_logs({"address": to_checksum_address(task), "fromBlock": 0})
    )
    early = [e for e in logs if e.name == "PhaseEndedEarly" and e.args["round"] == 1]
    reveal = [e for e in early if Phase(e.args["nextPhase"]) == Phase.REVEAL]
    assert len(reveal) == 1, early
    ended = reveal[0]
    assert ended.args["timestamp"] == info.commit_end < info.training_end + COMMIT_SECONDS
    sender = reader.w3.eth.get_transaction(HexStr(ended.tx_hash))["from"]
    assert sender == result.requester.address
    print(f"commit phase: {info.commit_end - info.training_end} s of {COMMIT_SECONDS} s")

    # the round settled as usual: the seated committed, agreed and were paid, nobody else sat
    (only,) = result.rounds
    assert only.finalized
    assert set(only.validators) == {v.address for v in result.validators[:seated]}
    assert all(only.revealed) and all(only.agreed) and all(only.validator_payouts)
    assert len(only.workers) == workers and all(only.accepted)
    assert all(pay > 0 for pay in only.worker_payouts)
    assert not any(only.worker_slashes) and not any(only.validator_slashes)
    for validator in result.validators:  # each took back its own stake plus its pay
        paid = dict(zip(only.validators, only.validator_payouts, strict=True)).get(validator.address, 0)
        assert validator.withdrawn_wei == reader.stake_of(task, validator.address) + paid

    # an unseated validator fetched nothing, not even the validation set; a seated one did
    for index in range(validators):
        with BlockStore(tmp_path / f"validator{index}" / "blocks") as store:
            assert bool(store.cids()) == (index < seated), (index, store.cids())


async def test_the_commit_phase_ends_once_the_seated_validator_committed(tmp_path: Path) -> None:
    await run_and_check(tmp_path, workers=1, validators=3, seated=1)


@pytest.mark.skipif(not os.environ.get("FL_HEAVY_INPROCESS"), reason="set FL_HEAVY_INPROCESS=1")
async def test_with_two_seated_of_five_validators_and_two_workers(tmp_path: Path) -> None:
    await run_and_check(tmp_path, workers=2, validators=5, seated=2)
