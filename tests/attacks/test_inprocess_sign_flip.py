"""A sign-flipping worker in a whole task (requester, 3 workers, 2 validators on the
embedded chain, real libp2p, real MNIST): its update is scored below the qualification
threshold, rejected, unpaid and slashed, while the honest workers are accepted and paid."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import needs_mnist, run_mnist_task

pytestmark = needs_mnist("train")


async def test_sign_flip_worker_is_rejected_and_slashed(tmp_path: Path) -> None:
    result = await run_mnist_task(
        tmp_path,
        workers=3,
        validators=2,
        rounds=1,
        model="mnist_2nn",
        max_samples=1500,
        validation_samples=500,
        task={"qualification_threshold": 0.3},
        worker_behaviours=("honest", "honest", "sign_flip:scale=1.0"),
        timeout_s=300,
    )
    (only,) = result.rounds
    assert only.finalized
    flipper = only.workers.index(result.workers[2].address)
    assert not only.accepted[flipper]
    assert only.worker_payouts[flipper] == 0 and only.worker_slashes[flipper] > 0
    for honest in result.workers[:2]:
        index = only.workers.index(honest.address)
        assert only.accepted[index] and only.worker_payouts[index] > 0
