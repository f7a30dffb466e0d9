"""Task.endCommitPhase: under sortition the commit phase can end before its deadline once every
validator has committed or is shown unseated by its own VRF proof for the round, in one
transaction (anyone's). The attacks: passing a seated validator that has not committed yet as
unseated (its unique proof shows it seated), leaving someone out, listing one twice, another
validator's proof or a proof for another round, a committed member or a worker in the list."""

from __future__ import annotations

import pytest

from node.chain import ChainClient, ChainRevert, Phase
from protocol import sortition
from protocol.sortition import is_selected
from tests.contracts.harness import World

TAU = 2  # of 4 equal stakes: each sits with probability 1/2

# Measured on eth-tester: 100,409 gas for the proof check of one validator inside a
# commitManifest (transaction included); in a bundle each unseated validator adds the
# registry read, the proof check and its calldata, not a transaction.
MAX_GAS_PER_UNSEATED = 85_000


def _draw(world: World, task: str, round: int) -> tuple[list[ChainClient], list[ChainClient]]:
    info = world.requester.round_info(task, round)
    seated: list[ChainClient] = []
    unseated: list[ChainClient] = []
    for v in world.validators:
        stake = world.requester.stake_of(task, v.address)
        chosen = is_selected(world.ticket(v, task, round).beta, TAU, stake, info.total_stake)
        (seated if chosen else unseated).append(v)
    return seated, unseated


def _task_with(world: World, min_seated: int, min_unseated: int) -> tuple[str, list[ChainClient], list[ChainClient]]:
    for _attempt in range(30):
        task = world.started_task(committee_size=TAU, rounds=2)
        seated, unseated = _draw(world, task, 1)
        if len(seated) >= min_seated and len(unseated) >= min_unseated:
            return task, seated, unseated
    pytest.fail(f"30 tasks drew fewer than {min_seated} seated and {min_unseated} unseated")


def _proofs(world: World, task: str, round: int, validators: list[ChainClient]) -> list[tuple[str, bytes]]:
    return [(v.address, world.ticket(v, task, round).proof) for v in validators]


def _train(world: World, task: str) -> None:
    for index, worker in enumerate(world.workers):
        worker.submit_update(task, 1, f"bafkrei-w{index}", 10)
    assert world.requester.phase(task) == Phase.COMMIT  # every worker submitted


def test_the_unseated_proofs_end_the_phase_and_the_round_settles(world: World) -> None:
    task, seated, unseated = _task_with(world, 1, 2)
    _train(world, task)
    workers = [w.address for w in world.workers]
    scores, verdicts = [5] * len(workers), [True] * len(workers)
    salt = b"\x05" * 32
    for v in seated:
        commitment = v.manifest_commitment(task, 1, workers, scores, verdicts, 900_000, salt)
        world.commit(v, task, 1, commitment)
    assert world.requester.phase(task) == Phase.COMMIT  # the unseated never commit
    receipt = world.outsider.end_commit_phase(task, 1, _proofs(world, task, 1, unseated))
    assert world.requester.phase(task) == Phase.REVEAL
    info = world.requester.round_info(task, 1)
    assert info.commit_end == world.w3.eth.get_block(receipt.block_number)["timestamp"]
    per_unseated = (receipt.gas_used - 21_000) // len(unseated)
    print(f"endCommitPhase: {receipt.gas_used} gas for {len(unseated)} unseated, {per_unseated} each")
    assert per_unseated <= MAX_GAS_PER_UNSEATED, receipt.gas_used
    for v in seated:
        v.reveal_manifest(task, 1, workers, scores, verdicts, 900_000, salt)
    world.outsider.finalize_round(task, 1)
    result = world.requester.round_result(task, 1)
    assert result.finalized and result.agreed == (True,) * len(seated)
    assert all(pay > 0 for pay in result.validator_payouts)
    assert world.requester.current_round(task) == 2


def test_a_seated_validator_that_has_not_committed_cannot_be_passed_as_unseated(world: World) -> None:
    task, seated, unseated = _task_with(world, 2, 1)
    _train(world, task)
    early, late = seated[0], seated[1]
    world.commit(early, task, 1, b"\x07" * 32)
    for v in seated[2:]:
        world.commit(v, task, 1, b"\x07" * 32)
    # The late member's only proof shows it seated: the phase stays open for it.
    with pytest.raises(ChainRevert) as refused:
        world.outsider.end_commit_phase(task, 1, _proofs(world, task, 1, [*unseated, late]))
    assert refused.value.name == "Selected" and refused.value.values == (1,)
    assert world.requester.phase(task) == Phase.COMMIT
    world.commit(late, task, 1, b"\x07" * 32)
    world.outsider.end_commit_phase(task, 1, _proofs(world, task, 1, unseated))
    assert world.requester.phase(task) == Phase.REVEAL


def test_incomplete_duplicated_foreign_or_committed_lists_are_refused(world: World) -> None:
    task, seated, unseated = _task_with(world, 1, 2)
    _train(world, task)
    for v in seated:
        world.commit(v, task, 1, b"\x07" * 32)
    proofs = sorted(_proofs(world, task, 1, unseated), key=lambda e: int(e[0], 16))

    def refused(addresses: list[str], bundle: list[bytes]) -> ChainRevert:
        with pytest.raises(ChainRevert) as caught:
            world.outsider.transact("Task", task, "endCommitPhase", 1, addresses, bundle)
        return caught.value

    addresses = [a for a, _ in proofs]
    bundle = [p for _, p in proofs]
    left_out = refused(addresses[1:], bundle[1:])
    assert left_out.name == "UnseatedMismatch"
    assert left_out.values == (1, len(seated), len(unseated) - 1, len(unseated) - 1)
    twice = refused([addresses[0], addresses[0], *addresses[2:]], [bundle[0], bundle[0], *bundle[2:]])
    assert (twice.name, twice.values) == ("UnseatedNotAscending", (1,))
    swapped = refused(list(reversed(addresses)), list(reversed(bundle)))
    assert swapped.name == "UnseatedNotAscending"
    # One validator's proof under another's name is not that validator's proof.
    foreign = refused(addresses, [bundle[1], bundle[0], *bundle[2:]])
    assert foreign.name in ("ProofInvalid", "ProofOutOfRange")
    # The validator's own proof, for round 2 of the same seed: not its proof for round 1.
    key = world.vrf_keys[addresses[0]]
    round_two = sortition.committee_proof(key, world.seed(task, 1), 2).proof
    assert refused(addresses, [round_two, *bundle[1:]]).name == "ProofInvalid"
    # A worker in place of an unseated validator.
    worker = world.workers[0].address
    listed_worker = sorted([*proofs[1:], (worker, bundle[0])], key=lambda e: int(e[0], 16))
    not_member = refused([a for a, _ in listed_worker], [p for _, p in listed_worker])
    assert not_member.name == "NotCommitteeMember"
    assert (not_member.values[0].lower(), not_member.values[1]) == (worker.lower(), 1)
    # A committed member in place of an unseated one: the count matches, the member does not.
    committed = seated[0].address
    listed = sorted([*proofs[1:], (committed, world.ticket(seated[0], task, 1).proof)], key=lambda e: int(e[0], 16))
    again = refused([a for a, _ in listed], [p for _, p in listed])
    assert (again.name, again.values[0]) == ("AlreadyCommitted", 1)
    assert world.requester.phase(task) == Phase.COMMIT
