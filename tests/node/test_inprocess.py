"""A whole task in one process: requester + 3 workers + 2 validators (+ bootstrap) on the
embedded chain, real libp2p hosts on 127.0.0.1, real gossip, block exchange and MNIST.

Checks what the chain says against what the nodes did: the task terminates after its
round limit, the global model beats chance, every honest party is paid exactly what the
contract's round results credit it, and no transaction reverted.
"""

from __future__ import annotations

from pathlib import Path

from node.chain import EventFollower, TaskStatus, Termination
from node.datasets import load_mnist
from node.localnet.inprocess import InProcessResult
from node.runtime.chainside import ChainFollower, address_bytes
from node.runtime.learning import ModelBook  # noqa: F401  (import check of the job module)
from node.status import TaskWatch
from protocol.codec import ModelSpec, decode_state_dict
from protocol.data import to_tensors
from protocol.models import build_model
from protocol.training import evaluate
from tests.conftest import MNIST_ROOT, needs_mnist, run_mnist_task

CHANCE = 0.1

pytestmark = needs_mnist()


async def test_two_rounds_of_an_honest_task(tmp_path: Path) -> None:
    result = await run_mnist_task(
        tmp_path,
        workers=3,
        validators=2,
        rounds=2,
        model="mnist_2nn",
        max_samples=3000,
        validation_samples=500,
        # n = 3 updates, 2 when one is left out: the rule lowers f to what n allows
        task={"qualification_threshold": 0.3, "aggregator": "median:1"},
        timeout_s=540,
    )
    reader = result.reader
    task = result.task
    assert reader.task_params(task).aggregator == "median:1"

    # the task ran to its round limit, every node saw it end, nothing reverted
    assert reader.status(task) == TaskStatus.TERMINATED
    assert reader.termination(task) == Termination.ROUND_LIMIT
    assert [r.finalized for r in result.rounds] == [True, True]
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    assert [node.failed_txs for node in result.nodes] == [[]] * len(result.nodes)

    # learning: above chance by the committee's consensus, the requester's own measure,
    # and the saved final model on the MNIST test split
    assert all(r.consensus_accuracy > CHANCE * 1e6 for r in result.rounds)
    assert result.requester.accuracy_by_round[2] > CHANCE
    final = result.requester.final_model
    assert final is not None and final.exists()
    model = build_model("mnist_2nn")
    model.load_state_dict(decode_state_dict(final.read_bytes(), ModelSpec.of(model)))
    images, labels = to_tensors(load_mnist(MNIST_ROOT, "test"))
    assert evaluate(model, images[:2000], labels[:2000]).accuracy > 3 * CHANCE

    for r in result.rounds:
        assert all(r.agreed) and all(r.revealed)
        assert not any(r.worker_slashes) and all(r.validator_payouts)
    assert_paid_as_credited(result)
    assert_status_page_agrees(result, tmp_path / "status")
    # the requester took back exactly what no round paid out
    assert result.requester.reclaimed_wei == sum(r.returned_to_escrow for r in result.rounds)
    assert reader.escrow(task) == 0


def assert_paid_as_credited(result: InProcessResult) -> None:
    """Every party withdrew exactly its deposit plus what the contract's rounds credited,
    minus what they slashed."""
    reader, task = result.reader, result.task
    params = reader.task_params(task)
    credited: dict[str, int] = {}
    for r in result.rounds:
        assert sum(r.worker_payouts) > 0
        for address, paid, slashed in zip(r.workers, r.worker_payouts, r.worker_slashes, strict=True):
            credited[address] = credited.get(address, 0) + paid - slashed
        for address, paid, slashed in zip(
            r.validators, r.validator_payouts, r.validator_slashes, strict=True
        ):
            credited[address] = credited.get(address, 0) + paid - slashed
    for worker in result.workers:
        assert worker.withdrawn_wei == params.worker_deposit + credited.get(worker.address, 0)
    for validator in result.validators:
        assert validator.withdrawn_wei == params.validator_stake + credited[validator.address]
    for node in [*result.workers, *result.validators]:
        assert reader.withdrawable(task, node.address) == 0


def assert_status_page_agrees(result: InProcessResult, folder: Path) -> None:
    """The status page of a node restarted after the task ended (its cursor past every event)
    shows the task as the chain's round results do: the page reads the task's history."""
    folder.mkdir()
    handled = EventFollower(result.w3, folder / "cursor.json")
    handled.follow(result.task, 0)
    handled.poll()
    handled.commit()
    me = address_bytes(result.requester.address)
    follower = ChainFollower(result.reader, EventFollower(result.w3, folder / "cursor.json"), me)
    follower.task = result.task
    watch = TaskWatch(result.requester, result.reader, follower.history)
    follower.subscribe(watch.feed)
    follower.poll()
    document = watch.document()
    assert document["task"]["status"] == "terminated"
    assert document["task"]["params"]["aggregator"] == "median:1"
    assert [r["phase"] for r in document["rounds"]] == ["finalized"] * len(result.rounds)
    assert len(document["members"]) == len(result.workers) + len(result.validators)
    paid = sum(sum(r.worker_payouts) + sum(r.validator_payouts) for r in result.rounds)
    assert sum(int(m["earned_wei"]) for m in document["members"]) == paid
    assert all(int(m["withdrawn_wei"]) > 0 for m in document["members"])


async def test_a_killed_worker_resumes_and_cheaters_are_slashed(tmp_path: Path) -> None:
    """worker0 is killed in round 1's reveal phase and restarted; worker2 sends noise;
    validator2 lies (reveals flipped verdicts), validator3 is lazy (commits, never reveals)."""
    result = await run_mnist_task(
        tmp_path,
        workers=3,
        validators=4,
        rounds=2,
        model="mnist_2nn",
        max_samples=3000,
        validation_samples=500,
        # a validator the VRF leaves out never commits, so that commit phase runs to its
        # deadline: keep it short
        task={"qualification_threshold": 0.3, "commit_seconds": 60, "reveal_seconds": 20},
        crash={"worker0": (1, "reveal")},
        worker_behaviours=("honest", "honest", "noise"),
        validator_behaviours=("honest", "honest", "lying", "lazy"),
        timeout_s=540,
    )
    assert result.restarted == ["worker0"]
    assert result.reader.status(result.task) == TaskStatus.TERMINATED
    restarted = result.workers[0]
    assert restarted.done and restarted.failed_txs == []
    # the new process took part in round 2 (trained, submitted, was accepted)
    last = result.rounds[-1]
    assert restarted.address in last.workers
    assert last.accepted[last.workers.index(restarted.address)]
    # the noise worker's updates were rejected by both validators and its deposit slashed
    noisy = result.workers[2].address
    for r in result.rounds:
        index = r.workers.index(noisy)
        assert not r.accepted[index] and r.worker_slashes[index] > 0 and r.worker_payouts[index] == 0
    # the honest validators agree and are paid; the liar disagrees, the lazy one never
    # revealed: both lose stake to the honest ones
    # (round 1: equal stakes, so the VRF seats everyone; later a slashed validator's
    # smaller stake may cost it its seat)
    honest, liar, lazy = result.validators[:2], result.validators[2], result.validators[3]
    first = result.rounds[0]
    assert {liar.address, lazy.address} <= set(first.validators)
    for r in result.rounds:
        seat = {address: i for i, address in enumerate(r.validators)}
        assert all(r.agreed[seat[v.address]] and r.validator_payouts[seat[v.address]] > 0 for v in honest)
        if liar.address in seat:
            assert r.revealed[seat[liar.address]] and not r.agreed[seat[liar.address]]
            assert r.validator_slashes[seat[liar.address]] > 0
        if lazy.address in seat:
            assert not r.revealed[seat[lazy.address]] and r.validator_slashes[seat[lazy.address]] > 0
    assert_paid_as_credited(result)
