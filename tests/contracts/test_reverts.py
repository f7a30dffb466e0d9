"""Every revert path of Registry and Task, each checked by its custom error name and arguments."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from node.chain import ChainClient, ChainRevert, Phase, Role, TaskStatus, Termination, dev
from protocol import keycert, sortition, vrf
from protocol.limits import MAX_STAKE
from protocol.manifest import MAX_ABS_SCORE
from tests.contracts.harness import (
    DURATION,
    ETHER,
    MAX_SAMPLES,
    Vote,
    World,
    certificate,
    encryption_key_for,
    peer_id_for,
    play_round,
    register,
)
from tests.vrf_test_keys import non_permutation_primes, rfc_vectors, small_factor_primes

SALT = b"\x5a" * 32


def reverts(name: str, action: Callable[..., Any], *args: Any, **kwargs: Any) -> ChainRevert:
    with pytest.raises(ChainRevert) as caught:
        action(*args, **kwargs)
    assert caught.value.name == name, str(caught.value)
    return caught.value


def commit(
    world: World, validator: ChainClient, task: str, round: int, workers: list[str], **vote: Any
) -> Vote:
    chosen = Vote(
        scores=vote.get("scores", tuple(100_000 for _ in workers)),
        verdicts=vote.get("accepts", tuple(True for _ in workers)),
        accuracy=vote.get("accuracy", 900_000),
    )
    commitment = validator.manifest_commitment(
        task, round, workers, list(chosen.scores), list(chosen.verdicts), chosen.accuracy, SALT
    )
    world.commit(validator, task, round, commitment)
    return chosen


def reveal(validator: ChainClient, task: str, round: int, workers: list[str], vote: Vote) -> Any:
    return validator.reveal_manifest(
        task, round, workers, list(vote.scores), list(vote.verdicts), vote.accuracy, SALT
    )


# ---------------------------------------------------------------------- registry


def test_double_registration_reverts(any_world: World) -> None:
    worker = any_world.workers[0]
    key = any_world.vrf_keys[worker.address]
    err = reverts("AlreadyRegistered", register, worker, key, b"\x01another-peer")
    assert err.args_by_name["account"].lower() == worker.address.lower()


def test_registration_input_checks(world: World) -> None:
    fresh = world.unregistered
    key = world.spare_vrf_keys[0]
    modulus, proof = key.public_key.modulus_bytes(), certificate(key, fresh.address)
    x25519 = encryption_key_for(fresh.address)
    reverts("EmptyPeerId", fresh.register, b"", x25519, modulus, proof)
    err = reverts("PeerIdTooLong", fresh.register, b"\x01" * 129, x25519, modulus, proof)
    assert err.values == (129, 128)
    outsider_peer = peer_id_for(world.outsider.address)
    taken = reverts("PeerIdTaken", fresh.register, outsider_peer, x25519, modulus, proof)
    assert taken.args_by_name["owner"].lower() == world.outsider.address.lower()
    reverts("EmptyEncryptionKey", fresh.register, b"\x01peer", b"\x00" * 32, modulus, proof)
    assert not fresh.is_registered()
    reverts("NotRegistered", fresh.participant, fresh.address)
    fresh.register(b"\x01peer", x25519, modulus, proof)
    participant = fresh.participant(fresh.address)
    assert (participant.peer_id, participant.vrf_modulus) == (b"\x01peer", modulus)
    assert fresh.account_of_peer(b"\x01peer") == fresh.address
    assert fresh.account_of_peer(b"\x01unknown") is None


def _roots(modulus: int, owner: str, exponent: int, primes: tuple[int, ...]) -> bytes:
    """A certificate made with the private exponent of `exponent`: what the owner of the key
    (modulus, exponent) can compute; e = 65537 on an honest key gives keycert.certify's."""
    phi = 1
    for prime in primes:
        phi *= prime - 1
    private = pow(exponent, -1, phi)
    rhos = keycert.challenges(modulus, bytes.fromhex(owner[2:]))
    return b"".join(vrf.i2osp(pow(rho, private, modulus), keycert.KEY_BYTES) for rho in rhos)


def test_uncertified_vrf_keys_are_refused(world: World) -> None:
    """Every way a VRF key can fail its certificate reverts with VRF's named error, so only
    keys with one proof per round (x -> x^65537 mod n a permutation) are ever registered."""
    fresh = world.unregistered
    peer, x25519 = peer_id_for(fresh.address), encryption_key_for(fresh.address)
    key = world.spare_vrf_keys[0]
    modulus = key.public_key.modulus_bytes()
    good = certificate(key, fresh.address)

    def refused(name: str, modulus: bytes, proof: bytes) -> tuple[Any, ...]:
        return reverts(name, fresh.register, peer, x25519, modulus, proof).values

    altered = bytearray(good)
    altered[3 * keycert.KEY_BYTES + 17] ^= 0x01
    assert refused("CertificateRootInvalid", modulus, bytes(altered)) == (3,)
    # A certificate is bound to its owner: another account's does not transfer.
    stolen = certificate(key, world.outsider.address)
    assert refused("CertificateRootInvalid", modulus, stolen) == (0,)
    assert refused("CertificateLengthInvalid", modulus, good[:-1]) == (len(good) - 1,)
    assert refused("CertificateLengthInvalid", modulus, b"") == (0,)
    # The registry stores n only and fixes e = 65537: a key (n, 3) proves cube roots.
    cube_key = next(
        k
        for k in (key, *world.spare_vrf_keys, *world.vrf_keys.values())
        if (k.prime_p - 1) % 3 and (k.prime_q - 1) % 3
    )
    cube_modulus = cube_key.public_key.modulus_bytes()
    cube_roots = _roots(cube_key.modulus, fresh.address, 3, (cube_key.prime_p, cube_key.prime_q))
    assert refused("CertificateRootInvalid", cube_modulus, cube_roots) == (0,)
    # e | p - 1: x -> x^e is not a permutation, most challenges have no e-th root at all;
    # its owner's best try (roots with e^-1 mod phi/e) fails.
    p, q = non_permutation_primes()
    bad_n = p * q
    partial = pow(keycert.PUBLIC_EXPONENT, -1, (p - 1) * (q - 1) // keycert.PUBLIC_EXPONENT)
    guesses = b"".join(
        vrf.i2osp(pow(rho, partial, bad_n), keycert.KEY_BYTES)
        for rho in keycert.challenges(bad_n, bytes.fromhex(fresh.address[2:]))
    )
    assert refused("CertificateRootInvalid", vrf.i2osp(bad_n, keycert.KEY_BYTES), guesses)
    # Sizes and shapes, checked before any root.
    rfc_3072 = vrf.VRFPublicKey(int(rfc_vectors()["keys"]["3072"]["n"], 16))
    assert refused("KeySizeInvalid", rfc_3072.modulus_bytes(), good) == (384,)
    assert refused("KeySizeInvalid", modulus + b"\x01", good) == (257,)
    assert refused("KeySizeInvalid", b"\x00" + modulus[1:], good) == (256,)
    assert refused("KeySizeInvalid", b"", good) == (0,)
    even = modulus[:-1] + bytes([modulus[-1] ^ 1])
    assert refused("ModulusEven", even, good) == ()
    factor, big_p, big_q = small_factor_primes()
    with_factor = vrf.i2osp(factor * big_p * big_q, keycert.KEY_BYTES)
    assert refused("ModulusHasSmallFactor", with_factor, good) == (factor,)
    assert not fresh.is_registered()
    register(fresh, key)
    assert fresh.participant(fresh.address).vrf_modulus == modulus


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_arch", ""),
        ("aggregator", ""),
        ("initial_model_cid", ""),
        ("rounds", 0),
        ("committee_size", 0),
        ("training_duration", 0),
        ("slash_fraction_bps", 10_001),
        ("min_workers", 0),
        ("max_validators", 257),
        ("worker_deposit", 2**112 + 1),
        ("validator_stake", 0),
        ("max_samples_per_worker", 0),
        ("max_samples_per_worker", 2**40 + 1),
    ],
)
def test_invalid_task_parameters_are_named(world: World, field: str, value: Any) -> None:
    params = world.params(**{field: value})
    err = reverts("InvalidParameter", world.requester.validate_params, params)
    contract_name = {
        "model_arch": "modelArch",
        "initial_model_cid": "initialModelCid",
        "committee_size": "committeeSize",
        "training_duration": "trainingDuration",
        "slash_fraction_bps": "slashFractionBps",
        "min_workers": "minWorkers",
        "max_validators": "maxValidators",
        "worker_deposit": "workerDeposit",
        "validator_stake": "validatorStake",
        "max_samples_per_worker": "maxSamplesPerWorker",
    }.get(field, field)
    assert err.values == (contract_name,)
    reverts("InvalidParameter", world.requester.create_task, params)


def test_topk_without_k_and_past_deadline_are_refused(world: World) -> None:
    from protocol.rewards import RewardPolicy

    reverts(
        "InvalidParameter",
        world.requester.validate_params,
        world.params(reward_policy=RewardPolicy.TOPK, top_k=0),
    )
    past = dev.latest_timestamp(world.w3)
    err = reverts(
        "InvalidParameter", world.requester.validate_params, world.params(recruit_deadline=past)
    )
    assert err.values == ("recruitDeadline",)


def test_wrong_escrow_reverts(world: World) -> None:
    params = world.params()
    registry = world.requester.registry
    err = reverts(
        "WrongEscrow",
        world.requester.transact,
        "Registry",
        registry.address,
        "createTask",
        params.to_abi(),
        value=params.escrow - 1,
    )
    assert err.values == (params.escrow, params.escrow - 1)


def test_implementation_and_tasks_cannot_be_reinitialized(world: World) -> None:
    params = world.params()
    implementation = world.deployment.task_implementation
    for target in (implementation, world.create_task()):
        reverts(
            "AlreadyInitialized",
            world.outsider.transact,
            "Task",
            target,
            "initialize",
            world.outsider.address,
            params.to_abi(),
            params.abi_hash(),
        )


# ---------------------------------------------------------------------- recruiting


def test_join_rules(any_world: World) -> None:
    world = any_world
    task = world.create_task(max_workers=2)
    worker, validator = world.workers[0], world.validators[0]
    reverts("NotRegistered", world.unregistered.join_as_worker, task, ETHER)
    err = reverts("WrongDeposit", worker.join_as_worker, task, ETHER - 1)
    assert err.values == (ETHER, ETHER - 1)
    err = reverts("StakeOutOfRange", validator.join_as_validator, task, 2 * ETHER - 1)
    assert err.values == (2 * ETHER, MAX_STAKE, 2 * ETHER - 1)
    reverts("RequesterCannotJoin", world.requester.join_as_worker, task, ETHER)
    worker.join_as_worker(task)
    # One address is never both worker and validator, nor joins twice.
    err = reverts("AlreadyMember", worker.join_as_validator, task)
    assert err.values[1] == Role.WORKER
    reverts("AlreadyMember", worker.join_as_worker, task)
    world.workers[1].join_as_worker(task)
    err = reverts("TaskFull", world.workers[2].join_as_worker, task)
    assert err.values == (Role.WORKER, 2)


def test_validators_stake_any_amount_from_the_minimum_to_max_stake(world: World) -> None:
    task = world.create_task()
    small, big = world.validators[:2]
    small.join_as_validator(task)
    big.join_as_validator(task, 5 * ETHER + 1)
    assert (small.locked_deposit(task), big.locked_deposit(task)) == (2 * ETHER, 5 * ETHER + 1)
    assert (small.stake_of(task), big.stake_of(task)) == (2 * ETHER, 5 * ETHER + 1)
    assert world.requester.total_stake(task) == 7 * ETHER + 1
    big.leave_task(task)
    assert world.requester.total_stake(task) == 2 * ETHER and big.stake_of(task) == 0
    assert big.withdrawable(task) == 5 * ETHER + 1


@pytest.mark.anvil
def test_a_stake_above_max_stake_reverts(anvil_world_session: World) -> None:
    """Only anvil can give an account more than MAX_STAKE wei to try it with."""
    world = anvil_world_session
    world.reset()
    task = world.create_task()
    whale = world.validators[0]
    world.w3.provider.make_request("anvil_setBalance", [whale.address, hex(2 * MAX_STAKE)])  # type: ignore[arg-type]
    err = reverts("StakeOutOfRange", whale.join_as_validator, task, MAX_STAKE + 1)
    assert err.values == (2 * ETHER, MAX_STAKE, MAX_STAKE + 1)
    whale.join_as_validator(task, MAX_STAKE)
    assert world.requester.total_stake(task) == MAX_STAKE


def test_leave_refunds_and_rejoin(world: World) -> None:
    task = world.create_task()
    worker = world.workers[0]
    reverts("NotMember", worker.leave_task, task)
    worker.join_as_worker(task)
    world.workers[1].join_as_worker(task)
    worker.leave_task(task)
    assert world.requester.members(task)[0] == [world.workers[1].address]
    assert worker.role_of(task) == Role.NONE
    assert worker.withdrawable(task) == ETHER
    before = worker.balance()
    fee = worker.withdraw(task).fee_wei
    assert worker.balance() == before + ETHER - fee
    reverts("NothingToWithdraw", worker.withdraw, task)
    worker.join_as_validator(task)  # after leaving, any role again
    assert world.requester.total_stake(task) == 2 * ETHER


def test_start_rules(world: World) -> None:
    task = world.create_task(min_workers=2, min_validators=1)
    world.workers[0].join_as_worker(task)
    world.validators[0].join_as_validator(task)
    reverts("NotRequester", world.workers[0].start, task, "bafkreival")
    err = reverts("NotEnoughMembers", world.requester.start, task, "bafkreival")
    assert err.values == (1, 2, 1, 1)
    world.workers[1].join_as_worker(task)
    reverts("EmptyValidationSet", world.requester.start, task, "")
    world.requester.start(task, "bafkreival")
    err = reverts("WrongStatus", world.requester.start, task, "bafkreival")
    assert err.values == (TaskStatus.RECRUITING, TaskStatus.RUNNING)
    reverts("WrongStatus", world.workers[2].join_as_worker, task)
    reverts("WrongStatus", world.workers[0].leave_task, task)
    reverts("WrongStatus", world.requester.cancel, task)


def test_recruit_deadline_and_cancel(world: World) -> None:
    task = world.create_task()
    worker = world.workers[0]
    worker.join_as_worker(task)
    deadline = world.requester.task_params(task).recruit_deadline
    reverts("RecruitmentStillOpen", world.outsider.cancel, task)
    world.advance_to(deadline)
    reverts("RecruitmentClosed", world.workers[1].join_as_worker, task)
    reverts("RecruitmentClosed", world.requester.start, task, "bafkreival")
    world.outsider.cancel(task)  # anyone, once the deadline passed
    assert world.requester.termination(task) == Termination.CANCELLED
    assert worker.withdrawable(task) == ETHER
    escrow = world.requester.escrow(task)
    assert escrow == world.requester.task_params(task).escrow
    worker.withdraw(task)
    world.requester.reclaim_escrow(task, escrow)
    assert world.w3.eth.get_balance(task) == 0


# ---------------------------------------------------------------------- rounds


def test_phase_and_round_guards(any_world: World) -> None:
    world = any_world
    task = world.started_task(n_workers=2, n_validators=2)
    w0, w1 = world.workers[:2]
    v0, v1 = world.validators[:2]
    assert world.requester.phase(task) == Phase.TRAINING
    err = reverts("WrongRound", w0.submit_update, task, 2, "bafkreiupdate", 10)
    assert err.values == (1, 2)
    err = reverts("WrongPhase", world.commit, v0, task, 1, b"\x01" * 32)
    assert err.values == (Phase.COMMIT, Phase.TRAINING)
    reverts("WrongPhase", world.outsider.finalize_round, task, 1)  # finalize too early
    reverts("NotWorker", v0.submit_update, task, 1, "bafkreiupdate", 10)
    err = reverts("SamplesOutOfRange", w0.submit_update, task, 1, "bafkreiupdate", 0)
    assert err.values == (0, MAX_SAMPLES)
    reverts("EmptyCommitment", w0.submit_update_commitment, task, 1, b"\x00" * 32, 10)
    w0.submit_update(task, 1, "bafkreiupdate0", 10)
    err = reverts("AlreadySubmitted", w0.submit_update, task, 1, "bafkreiupdate0", 10)
    assert err.values[0] == 1
    w1.submit_update(task, 1, "bafkreiupdate1", 10)
    # Every worker submitted: the training phase ended early.
    assert world.requester.phase(task) == Phase.COMMIT
    err = reverts("WrongPhase", world.workers[0].submit_update, task, 1, "bafkreilate", 10)
    assert err.values == (Phase.TRAINING, Phase.COMMIT)
    workers = world.requester.submitted_workers(task, 1)
    # A registered key's valid VRF proof does not make a worker or an outsider a member.
    reverts("NotCommitteeMember", world.commit, w0, task, 1, b"\x01" * 32)
    reverts("NotCommitteeMember", world.commit, world.outsider, task, 1, b"\x01" * 32)
    reverts("EmptyCommitment", world.commit, v0, task, 1, b"\x00" * 32)
    vote0 = commit(world, v0, task, 1, workers)
    reverts("AlreadyCommitted", world.commit, v0, task, 1, b"\x02" * 32)
    err = reverts("WrongPhase", reveal, v0, task, 1, workers, vote0)
    assert err.values == (Phase.REVEAL, Phase.COMMIT)
    reverts("WrongPhase", world.outsider.finalize_round, task, 1)
    vote1 = commit(world, v1, task, 1, workers)
    assert world.requester.phase(task) == Phase.REVEAL
    reverts("WrongPhase", world.outsider.finalize_round, task, 1)  # still too early
    reverts("NotCommitted", reveal, world.validators[2], task, 1, workers, vote0)
    reveal(v0, task, 1, workers, vote0)
    reverts("AlreadyRevealed", reveal, v0, task, 1, workers, vote0)
    reveal(v1, task, 1, workers, vote1)
    assert world.requester.phase(task) == Phase.FINALIZE
    world.outsider.finalize_round(task, 1)
    err = reverts("WrongRound", world.outsider.finalize_round, task, 1)
    assert err.values == (2, 1)


def test_committee_seats_are_checked_by_vrf(any_world: World) -> None:
    """Forged proofs, proofs for another seed, round or key, and validators the sortition did
    not pick all revert; the chain seats exactly whom protocol.sortition seats. tau = 2 of four
    equal stakes: each validator's threshold is 1/2, so rounds are played until both a seated
    and an unseated validator were seen (a round lacks one with probability 1/8)."""
    world = any_world
    validators = world.validators[:4]
    task = world.started_task(
        n_workers=1, n_validators=4, committee_size=2, rounds=16, slash_fraction_bps=0
    )
    checked_forgeries = False
    seen = {True: 0, False: 0}
    for round in range(1, 17):
        info = world.requester.round_info(task, round)
        world.advance_to(info.training_end)
        assert info.total_stake == 4 * 2 * ETHER
        tickets = {v.address: world.ticket(v, task, round) for v in validators}
        if not checked_forgeries:
            checked_forgeries = True
            v0 = validators[0]
            key = world.vrf_keys[v0.address]
            pi = tickets[v0.address].proof
            forged = bytearray(pi)
            forged[100] ^= 0x04
            other_seed = sortition.committee_proof(key, bytes(32), round).proof
            other_round = sortition.committee_proof(key, info.seed, round + 1).proof
            modulus = key.public_key.modulus_bytes()
            for name, proof in [
                ("ProofInvalid", bytes(forged)),
                ("ProofInvalid", other_seed),
                ("ProofInvalid", other_round),
                ("ProofOutOfRange", modulus),  # pi >= n
                ("ProofLengthMismatch", pi + b"\x00"),
                ("ProofLengthMismatch", b""),
            ]:
                reverts(name, v0.commit_manifest, task, round, b"\x01" * 32, proof)
            for other in validators[1:]:  # another member's proof: valid, under another key
                proof = tickets[other.address].proof
                name = "ProofInvalid" if proof < modulus else "ProofOutOfRange"  # big-endian
                reverts(name, v0.commit_manifest, task, round, b"\x01" * 32, proof)
        for validator in validators:
            ticket = tickets[validator.address]
            selected = sortition.is_selected(ticket.beta, 2, 2 * ETHER, info.total_stake)
            seen[selected] += 1
            if selected:
                validator.commit_manifest(task, round, b"\x01" * 32, ticket.proof)
            else:
                err = reverts("NotSelected", validator.commit_manifest, task, round, b"\x01" * 32,
                              ticket.proof)  # fmt: skip
                assert err.values == (round,)
        if seen[True] and seen[False]:
            break
        world.advance_to(world.requester.round_info(task, round).reveal_end)
        world.outsider.finalize_round(task, round)
    assert seen[True] and seen[False], seen


def test_reveal_must_match_commitment(any_world: World) -> None:
    world = any_world
    task = world.started_task(n_workers=2, n_validators=2)
    for index, worker in enumerate(world.workers[:2]):
        worker.submit_update(task, 1, f"bafkrei{index}", 10)
    workers = world.requester.submitted_workers(task, 1)
    v0, v1 = world.validators[:2]
    vote = commit(world, v0, task, 1, workers, scores=(5, 6))
    commit(world, v1, task, 1, workers)
    tampered = [
        Vote(scores=(5, 7), verdicts=vote.verdicts, accuracy=vote.accuracy),
        Vote(scores=vote.scores, verdicts=(True, False), accuracy=vote.accuracy),
        Vote(scores=vote.scores, verdicts=vote.verdicts, accuracy=vote.accuracy + 1),
    ]
    for wrong in tampered:
        err = reverts("RevealMismatch", reveal, v0, task, 1, workers, wrong)
        assert err.values[0] == 1
    reverts("RevealMismatch", reveal, v0, task, 1, list(reversed(workers)), vote)
    with pytest.raises(ChainRevert, match="RevealMismatch"):
        v0.reveal_manifest(
            task, 1, workers, list(vote.scores), list(vote.verdicts), vote.accuracy, b"\x00" * 32
        )
    # Another validator cannot replay v0's opening: the commitment binds the validator address.
    reverts("RevealMismatch", reveal, v1, task, 1, workers, vote)
    reveal(v0, task, 1, workers, vote)


def test_manifest_must_list_the_submitters_within_bounds(world: World) -> None:
    task = world.started_task(n_workers=3, n_validators=2)
    for index, worker in enumerate(world.workers[:2]):  # worker 2 stays silent
        worker.submit_update(task, 1, f"bafkrei{index}", 10)
    info = world.requester.round_info(task, 1)
    world.advance_to(info.training_end)
    submitted = world.requester.submitted_workers(task, 1)
    v0, v1 = world.validators[:2]
    wrong_set = [submitted[0], world.workers[2].address]
    bad_set = commit(world, v0, task, 1, wrong_set)
    # protocol.manifest refuses to commit such a score, so build this commitment by hand.
    out_of_range = Vote(scores=(MAX_ABS_SCORE + 1, 0), verdicts=(True, True), accuracy=1)
    encoded = abi_encode(
        ["address", "uint256", "address", "address[]", "int256[]", "uint8[]", "uint256", "bytes32"],
        [task, 1, v1.address, submitted, list(out_of_range.scores), [1, 1], 1, SALT],
    )
    world.commit(v1, task, 1, keccak(encoded))
    err = reverts("ManifestWorkersMismatch", reveal, v0, task, 1, wrong_set, bad_set)
    assert err.values == (1, 1)
    err = reverts("ScoreOutOfRange", reveal, v1, task, 1, submitted, out_of_range)
    assert err.values == (0, MAX_ABS_SCORE + 1)


def test_sample_claims_above_the_task_bound_revert(any_world: World) -> None:
    """A claim of 2**64 - 1 samples, were it accepted, would break every validator's
    weighting (OverflowError in float conversion) and stall the round."""
    world = any_world
    task = world.started_task(n_workers=2, n_validators=1, max_samples_per_worker=1_000)
    w0 = world.workers[0]
    err = reverts("SamplesOutOfRange", w0.submit_update, task, 1, "bafkreihuge", 2**64 - 1)
    assert err.values == (2**64 - 1, 1_000)
    assert err.args_by_name["maxSamplesPerWorker"] == 1_000
    reverts("SamplesOutOfRange", w0.submit_update, task, 1, "bafkreihuge", 1_001)
    w0.submit_update(task, 1, "bafkreiatthebound", 1_000)
    assert world.requester.update_commitment_of(task, 1, w0.address)[1] == 1_000
    assert world.requester.task_params(task).max_samples_per_worker == 1_000


def test_verdicts_outside_the_enum_revert(world: World) -> None:
    task = world.started_task(n_workers=1, n_validators=2)
    world.workers[0].submit_update(task, 1, "bafkrei0", 10)
    workers = world.requester.submitted_workers(task, 1)
    v0 = world.validators[0]
    # protocol.manifest refuses to commit verdict 3, so build this commitment by hand.
    encoded = abi_encode(
        ["address", "uint256", "address", "address[]", "int256[]", "uint8[]", "uint256", "bytes32"],
        [task, 1, v0.address, workers, [0], [3], 1, SALT],
    )
    world.commit(v0, task, 1, keccak(encoded))
    world.advance_to(world.requester.round_info(task, 1).commit_end)
    err = reverts(
        "VerdictOutOfRange", v0.transact, "Task", task, "revealManifest", 1, workers, [0], [3], 1, SALT
    )
    assert err.values == (0, 3)


def test_late_reveal_reverts_and_silent_committer_is_slashed(any_world: World) -> None:
    world = any_world
    task = world.started_task(n_workers=1, n_validators=2, slash_fraction_bps=2_500)
    world.workers[0].submit_update(task, 1, "bafkrei0", 10)
    workers = world.requester.submitted_workers(task, 1)
    v0, v1 = world.validators[:2]
    vote0 = commit(world, v0, task, 1, workers)
    vote1 = commit(world, v1, task, 1, workers)
    reveal(v0, task, 1, workers, vote0)
    info = world.requester.round_info(task, 1)
    world.advance_to(info.reveal_end)
    err = reverts("WrongPhase", reveal, v1, task, 1, workers, vote1)
    assert err.values == (Phase.REVEAL, Phase.FINALIZE)
    world.outsider.finalize_round(task, 1)
    result = world.requester.round_result(task, 1)
    assert result.revealed == (True, False)
    assert result.validator_slashes == (0, 2 * ETHER // 4)
    # v0 takes the whole validator reward plus v1's slashed quarter of stake.
    assert result.validator_payouts == (ETHER + 2 * ETHER // 4, 0)


def test_a_slash_is_a_fraction_of_the_members_own_stake(world: World) -> None:
    task = world.create_task(slash_fraction_bps=2_500)
    world.workers[0].join_as_worker(task)
    small, big = world.validators[:2]
    small.join_as_validator(task)
    big.join_as_validator(task, 6 * ETHER + 4)
    world.requester.start(task, "bafkreival")
    assert world.requester.round_info(task, 1).total_stake == 8 * ETHER + 4
    played = play_round(
        world, task, 1, world.workers[:1],
        [(small, Vote((1,), (True,), 5)), (big, Vote((1,), (True,), 5, reveal=False))],
    )  # fmt: skip
    result = played.result
    assert result.validator_slashes == (0, (6 * ETHER + 4) // 4)
    # Pay is per worker judged, not per stake: the small member takes V and the slash.
    assert result.validator_payouts == (ETHER + (6 * ETHER + 4) // 4, 0)
    assert big.locked_deposit(task) == 6 * ETHER + 4 - (6 * ETHER + 4) // 4
    # The next round's snapshot counts what is left of each stake.
    assert world.requester.round_info(task, 2).total_stake == 2 * ETHER + big.locked_deposit(task)


def test_stop_training_and_reclaim_rules(world: World) -> None:
    task = world.started_task(n_workers=1, n_validators=1)
    reverts("NotRequester", world.workers[0].stop_training, task)
    reverts("WrongStatus", world.requester.reclaim_escrow, task, 1)
    world.requester.stop_training(task)
    assert world.requester.termination(task) == Termination.STOPPED
    reverts("WrongStatus", world.requester.stop_training, task)
    escrow = world.requester.escrow(task)
    assert escrow == world.requester.task_params(task).escrow  # no round was paid
    err = reverts("ExceedsUnspentEscrow", world.requester.reclaim_escrow, task, escrow + 1)
    assert err.values == (escrow + 1, escrow)
    reverts("NotRequester", world.workers[0].reclaim_escrow, task, 1)
    world.requester.reclaim_escrow(task, escrow - 5)
    err = reverts("ExceedsUnspentEscrow", world.requester.reclaim_escrow, task, 6)
    assert err.values == (6, 5)
    world.requester.reclaim_escrow(task, 5)
    reverts("ExceedsUnspentEscrow", world.requester.reclaim_escrow, task, 1)


def test_withdraw_twice_reverts(any_world: World) -> None:
    world = any_world
    task = world.started_task(n_workers=1, n_validators=1, rounds=1)
    reverts("NothingToWithdraw", world.workers[0].withdraw, task)  # deposit locked while running
    play_round(world, task, 1, [world.workers[0]], [(world.validators[0], Vote((1,), (True,), 5))])
    assert world.requester.status(task) == TaskStatus.TERMINATED
    world.workers[0].withdraw(task)
    err = reverts("NothingToWithdraw", world.workers[0].withdraw, task)
    assert err.args_by_name["account"].lower() == world.workers[0].address.lower()
    reverts("NothingToWithdraw", world.outsider.withdraw, task)


@pytest.mark.parametrize(
    "swallow", [True, False], ids=["nested-call-caught", "nested-revert-bubbles"]
)
def test_reentrant_withdraw_is_refused(world: World, swallow: bool) -> None:
    attacker_owner = world.outsider
    deployed = attacker_owner.deploy("Reentrant", value=ETHER)
    attacker = deployed.contract_address
    assert attacker is not None
    key = world.spare_vrf_keys[0]
    attacker_owner.transact(
        "Reentrant", attacker, "register", world.deployment.registry, b"\x01reentrant", os.urandom(32),
        key.public_key.modulus_bytes(), certificate(key, attacker),
    )  # fmt: skip
    task = world.create_task()
    attacker_owner.transact("Reentrant", attacker, "join", task, ETHER)
    attacker_owner.transact("Reentrant", attacker, "leaveTask")
    assert world.requester.withdrawable(task, attacker) == ETHER
    task_balance = world.w3.eth.get_balance(task)
    if swallow:
        attacker_owner.transact("Reentrant", attacker, "attack", True)
        assert attacker_owner.call("Reentrant", attacker, "reentryAttempts") == 1
        assert attacker_owner.call("Reentrant", attacker, "reentrySucceeded") is False
        nested_error = attacker_owner.call("Reentrant", attacker, "reentryError")
        from node.chain.artifacts import decode_revert

        assert decode_revert(nested_error)[0] == "ReentrantCall"
        assert attacker_owner.call("Reentrant", attacker, "received") == ETHER  # paid once
        assert world.w3.eth.get_balance(task) == task_balance - ETHER
        reverts("NothingToWithdraw", attacker_owner.transact, "Reentrant", attacker, "attack", True)
    else:
        err = reverts(
            "TransferFailed", attacker_owner.transact, "Reentrant", attacker, "attack", False
        )
        assert err.values[1] == ETHER
        assert world.w3.eth.get_balance(task) == task_balance
        assert world.requester.withdrawable(task, attacker) == ETHER  # nothing lost, nothing paid


def test_no_reveal_round_returns_everything_to_escrow(world: World) -> None:
    task = world.started_task(n_workers=2, n_validators=2, rounds=2, slash_fraction_bps=1_000)
    escrow_before = world.requester.escrow(task)
    played = play_round(
        world, task, 1, world.workers[:2],
        [(world.validators[0], Vote((1, 2), (True, True), 5, reveal=False))],
    )  # fmt: skip
    result = played.result
    assert result.reveals == 0
    assert result.accepted == (False, False) and result.worker_slashes == (0, 0)  # nothing decided
    assert result.validator_slashes == (2 * ETHER // 10,)
    # Both pools plus the silent member's slash stay with the requester's escrow.
    assert world.requester.escrow(task) == escrow_before + 2 * ETHER // 10
    assert world.requester.current_round(task) == 2
    assert world.w3.eth.get_balance(task) == world.accounted(task)


def test_target_accuracy_terminates_early(world: World) -> None:
    task = world.started_task(n_workers=1, n_validators=3, rounds=5, target_accuracy=950_000)
    votes = [
        (v, Vote((1,), (True,), acc))
        for v, acc in zip(world.validators[:3], (990_000, 940_000, 960_000), strict=True)
    ]
    result = play_round(world, task, 1, world.workers[:1], votes).result
    assert result.consensus_accuracy == 960_000  # lower median of 940k, 960k, 990k
    assert world.requester.termination(task) == Termination.TARGET_REACHED
    # Four unplayed rounds, plus 1 wei: the validator pool of 1 ETH split three ways.
    assert world.requester.escrow(task) == 4 * (3 * ETHER + ETHER) + 1
    reverts("WrongStatus", world.workers[0].submit_update, task, 2, "bafkrei", 1)


def test_deadline_driven_phases_without_early_end(world: World) -> None:
    task = world.started_task(n_workers=2, n_validators=2)
    info = world.requester.round_info(task, 1)
    assert (info.training_end - info.training_start, info.commit_end - info.training_end) == (
        DURATION,
        DURATION,
    )
    world.workers[0].submit_update(task, 1, "bafkrei0", 1)
    world.advance_to(info.training_end - 1)
    assert world.requester.round_info(task, 1).phase == Phase.TRAINING
    world.advance_to(info.training_end)
    assert world.requester.round_info(task, 1).phase == Phase.COMMIT
    world.advance_to(info.commit_end)
    # Nobody committed: the reveal phase has nobody to wait for, so the round is finalizable.
    assert world.requester.phase(task) == Phase.FINALIZE
    world.outsider.finalize_round(task, 1)
    assert world.requester.round_result(task, 1).reveals == 0
    assert world.requester.current_round(task) == 2


def test_a_transaction_mined_after_its_deadline_reports_the_revert(world: World) -> None:
    """Simulated one second before the deadline, mined at it: the receipt fails, the client
    replays it on its block and raises the contract's error; the nonce stays in sync."""
    task = world.started_task(n_workers=2, n_validators=1)
    info = world.requester.round_info(task, 1)
    world.advance_to(info.training_end - 1)  # the next block is mined at training_end
    worker = world.workers[0]
    err = reverts("WrongPhase", worker.submit_update, task, 1, "bafkreilate", 1)
    assert err.values == (Phase.TRAINING, Phase.COMMIT)
    worker.join_as_worker(world.create_task())  # the next transaction still goes through
