"""A worker that serves its update to some validators only, in a whole in-process task
(embedded chain, real libp2p hosts, real MNIST, the `work` policy): one validator cannot
fetch it and marks it UNAVAILABLE. That validator then scores every other update against a
set without the withheld one, and its honest qualities differ from the others'. The
settlement (protocol.rewards) compares scores only among members that judged the round's
reference set, so no honest validator is slashed and the round settles.

The withholding is injected where the victim meets it: its fetches of the attacker's update
fail (`TaskNetwork._fetch` patched for that one validator), as when the worker does not
serve it and nobody relays it; everything else is unchanged. (Sealing the update for fewer
readers is not this attack: the validator fetches a blob it cannot open, and the node
REJECTs it instead of marking it UNAVAILABLE.) Eight nodes for a round take minutes on a
loaded 2-core machine, hence FL_HEAVY_INPROCESS=1; the settlement itself is tested on chain
in tests/contracts/test_withholding.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from node.chain import TaskStatus
from node.chain.artifacts import decode_log
from node.config import TrainingConfig
from node.runtime.effects_network import TaskNetwork
from protocol.manifest import WorkerVerdict
from protocol.rewards import RewardPolicy
from protocol.state import events as ev
from protocol.state.actions import Fetch
from protocol.state.records import BlobKind, Role
from tests.conftest import needs_mnist, run_mnist_task

pytestmark = [
    needs_mnist(),
    pytest.mark.skipif(not os.environ.get("FL_HEAVY_INPROCESS"), reason="set FL_HEAVY_INPROCESS=1"),
]

WORKERS = 4
VALIDATORS = 3
ROUNDS = 1


class Withholder:
    """TaskNetwork._fetch for every node, except that the validator with the lowest address
    cannot fetch the updates of the worker with the lowest address."""

    def __init__(self) -> None:
        self.fetch = TaskNetwork._fetch
        self.attacker: bytes | None = None
        self.victim: bytes | None = None
        self.withheld: set[str] = set()

    async def __call__(self, network: TaskNetwork, action: Fetch) -> ev.Event:
        workers = sorted(m for m, role in network.roles.items() if role == Role.WORKER)
        validators = sorted(m for m, role in network.roles.items() if role == Role.VALIDATOR)
        if len(workers) == WORKERS and len(validators) == VALIDATORS:
            self.attacker, self.victim = workers[0], validators[0]
        if network.me == self.victim and action.kind == BlobKind.MODEL:
            if self.attacker in action.providers:
                self.withheld.add(action.cid)
            if action.cid in self.withheld:
                return ev.FetchFailed(action.cid, "withheld by its worker")
        return await self.fetch(network, action)


def _reveals(w3: Web3, task: str) -> list[dict[str, Any]]:
    """Every ManifestRevealed event of the task."""
    logs = w3.eth.get_logs({"address": Web3.to_checksum_address(task), "fromBlock": 0, "toBlock": "latest"})
    decoded = (decode_log([bytes(t) for t in log["topics"]], bytes(log["data"])) for log in logs)
    return [args for d in decoded if d is not None for name, args in [d] if name == "ManifestRevealed"]


async def test_a_worker_withholding_from_one_validator_gets_no_honest_validator_slashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    withholder = Withholder()

    async def fetch(network: TaskNetwork, action: Fetch) -> ev.Event:
        return await withholder(network, action)

    monkeypatch.setattr(TaskNetwork, "_fetch", fetch)
    result = await run_mnist_task(
        tmp_path,
        workers=WORKERS,
        validators=VALIDATORS,
        rounds=ROUNDS,
        model="mnist_2nn",
        max_samples=500 * WORKERS,
        validation_samples=500,
        # honest complete validators reveal the same numbers, so a tight tolerance: the
        # victim's scores, measured without the withheld update, fall outside it
        task={"reward_policy": "work", "qualification_threshold": 0.3, "tolerance": 0.002},
        training={"lr": TrainingConfig().lr},  # see tests/node/test_inprocess_work.py
        timeout_s=1000,
    )
    reader, task = result.reader, result.task
    assert reader.task_params(task).reward_policy == RewardPolicy.WORK
    assert reader.status(task) == TaskStatus.TERMINATED
    assert [r.finalized for r in result.rounds] == [True] * ROUNDS
    assert withholder.attacker is not None and withholder.victim is not None
    attacker, victim = "0x" + withholder.attacker.hex(), "0x" + withholder.victim.hex()

    reveals = _reveals(result.w3, task)
    for number, outcome in enumerate(result.rounds, start=1):
        what = f"round {number}"
        # the attack happened: the victim could not fetch the attacker's update
        judged = {}
        for args in reveals:
            if args["round"] != number:
                continue
            workers = [str(w).lower() for w in args["workers"]]
            verdicts = dict(zip(workers, args["verdicts"], strict=True))
            judged[str(args["validator"]).lower()] = verdicts[attacker] != WorkerVerdict.UNAVAILABLE
        assert len(judged) == VALIDATORS and judged.pop(victim) is False, what
        # no honest validator is slashed, every one is paid
        assert all(outcome.revealed) and all(outcome.agreed), what
        assert not any(outcome.validator_slashes), what
        assert all(p > 0 for p in outcome.validator_payouts), what
        assert attacker in [w.lower() for w in outcome.workers], what
    assert withholder.withheld  # the victim did try to fetch the attacker's update
