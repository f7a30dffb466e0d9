"""Training ahead in a whole in-process task (embedded chain, real libp2p hosts, real
MNIST): each worker trains the next round's update while the committee judges the
round, and submits it when the round accepted what it was trained from. Rounds complete,
every honest worker is paid, and the updates trained ahead are the ones accepted."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from node.runtime.driver import TRAIN_AHEAD_ENV
from protocol.fixedpoint import SCALE
from tests.conftest import needs_mnist, run_mnist_task

pytestmark = needs_mnist()

HIT = re.compile(r"\[(worker\d+)\] round (\d+): the update trained ahead is from this round's")


async def test_updates_trained_ahead_are_submitted_and_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRAIN_AHEAD_ENV, "1")
    caplog.set_level(logging.INFO, logger="fl_node.runtime")
    rounds = 3
    result = await run_mnist_task(
        tmp_path, workers=3, validators=2, rounds=rounds, model="mnist_2nn", max_samples=3000,
        validation_samples=500, timeout_s=600,
        # the localnet's policy: every accepted worker is paid (leave-one-out pays none
        # whose update the average does not need)
        task={"qualification_threshold": 0.3, "reward_policy": "topk", "top_k": 3},
    )  # fmt: skip
    assert [r.finalized for r in result.rounds] == [True] * rounds
    for r in result.rounds:
        assert len(r.workers) == 3 and all(r.accepted)
        assert all(paid > 0 for paid in r.worker_payouts)
        assert not any(r.worker_slashes)
    texts = [record.getMessage() for record in caplog.records]
    hits = {(m.group(1), int(m.group(2))) for t in texts if (m := HIT.search(t))}
    # after round 1 every round had updates trained ahead submitted, and (above) accepted
    assert {r for _, r in hits} == set(range(2, rounds + 1)), sorted(hits)
    # nobody trains ahead for a round the task does not have
    assert not [t for t in texts if f"training round {rounds + 1}'s update ahead" in t]
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    # the committee's measure of the last round's global model, built from updates trained
    # ahead, and the requester's own: a node stops only once its last aggregation is done
    assert result.rounds[-1].consensus_accuracy > 0.5 * SCALE
    (requester,) = [node for node in result.nodes if node.role == "requester"]
    assert requester.accuracy_by_round[rounds] > 0.5
