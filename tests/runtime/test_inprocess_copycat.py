"""A copycat in a whole in-process task (embedded chain, real libp2p hosts, real MNIST):
with updates sealed for the requester and the validators only, the copy left to it is
resubmitting another worker's sealed blob, by CID, under its own name. The validators can
open it, find the same delta as an earlier on-chain submission, and reject it: the copycat
is slashed and unpaid every round, the honest workers are paid, and every member still
averages the accepted updates through the key releases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import needs_mnist, run_mnist_task

pytestmark = needs_mnist()


async def test_a_copycat_is_rejected_slashed_and_unpaid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fl_node.runtime")
    result = await run_mnist_task(
        tmp_path,
        workers=3,
        validators=2,
        rounds=2,
        model="mnist_2nn",
        max_samples=3000,
        validation_samples=500,
        worker_behaviours=("honest", "honest", "copycat"),
        task={"qualification_threshold": 0.3},
        timeout_s=540,
    )
    copycat = result.workers[2].address
    honest = {w.address for w in result.workers[:2]}
    assert [r.finalized for r in result.rounds] == [True, True]
    for r in result.rounds:
        assert copycat in r.workers  # it did submit, a copy, every round
        for address, accepted, paid, slashed in zip(
            r.workers, r.accepted, r.worker_payouts, r.worker_slashes, strict=True
        ):
            if address == copycat:
                assert not accepted and paid == 0 and slashed > 0
            else:
                assert address in honest and accepted and paid > 0 and slashed == 0
        assert all(r.agreed) and all(r.revealed)
    # every node averaged every round's accepted updates, the workers opening each other's
    # through the key releases (a missing one is logged and left out of the average)
    texts = [record.getMessage() for record in caplog.records]
    assert sum("training closed; releasing" in text for text in texts) == 2 * len(result.rounds)
    assert not [text for text in texts if "no key release" in text]
    assert sum("copies that of" in text for text in texts) >= len(result.rounds)
    # the copycat cannot release a key to what it copied (not addressed to it): one line each
    failed = [r for r in caplog.records if "job SealKeyRelease failed" in r.getMessage()]
    assert failed and not any(r.exc_info for r in failed)
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    assert result.requester.accuracy_by_round[2] > 0.3
