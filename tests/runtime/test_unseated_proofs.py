"""The runtime's side of ending a commit phase early, on the embedded chain with registered
VRF keys: the gossip check an UnseatedProof passes before it reaches a machine
(TaskNetwork._check_committee_proof, protocol.sortition.verify_unseated), and the
requester's endCommitPhase (ChainSide). The lying claims (a seated validator's own proof
passed as unseated, a forged proof, a proof for another round) fail the local check and the
contract alike, and a refused or late endCommitPhase never stops the node."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from node.chain import ChainClient, Phase, dev
from node.config import BehaviourConfig
from node.runtime.chainside import ChainAccess, address_bytes
from node.runtime.effects_network import TaskNetwork
from protocol import sortition
from protocol.errors import VRFError
from protocol.messages import UnseatedProof
from protocol.sortition import RegisteredKey
from protocol.state import events as ev
from protocol.state.actions import SendTx
from protocol.state.records import TxKind
from tests.contracts.harness import World, make_world
from tests.contracts.test_commit_early_end import _proofs, _task_with, _train
from tests.runtime.test_chain_effects import chain_side

LOG = logging.LoggerAdapter(logging.getLogger("tests.runtime"), {})


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(dev.embedded_web3())


def bundle(world: World, task: str, validators: list[ChainClient]) -> tuple[tuple[bytes, bytes], ...]:
    """(validator, proof) pairs as the requester's machine sends them."""
    return tuple(sorted((address_bytes(a), p) for a, p in _proofs(world, task, 1, validators)))


def end_commit_phase(pairs: tuple[tuple[bytes, bytes], ...]) -> SendTx:
    return SendTx(TxKind.END_COMMIT_PHASE, 1, (1, pairs))


def forged_for(validator: ChainClient, world: World) -> bytes:
    """256 bytes that are not the validator's proof, under its modulus (a valid RSA input)."""
    modulus = world.vrf_keys[validator.address].public_key.modulus
    return (int.from_bytes(os.urandom(256), "big") % modulus).to_bytes(256, "big")


async def test_the_requester_ends_the_phase_once_and_a_late_repeat_is_no_error(
    world: World, tmp_path: Path
) -> None:
    world.reset()
    task, seated, unseated = _task_with(world, 1, 2)
    _train(world, task)
    for validator in seated:
        world.commit(validator, task, 1, b"\x07" * 32)
    side = chain_side(world, world.requester, tmp_path)
    await side.follow(address_bytes(task))
    tx = end_commit_phase(bundle(world, task, unseated))
    assert await side.send(tx) == ev.TxConfirmed(TxKind.END_COMMIT_PHASE, 1)
    assert world.requester.phase(task) == Phase.REVEAL
    # sent again (a lost receipt, another party first, or the deadline passed): WrongPhase
    assert await side.send(tx) == ev.TxConfirmed(TxKind.END_COMMIT_PHASE, 1)
    assert side.status.failed_txs == []


async def test_a_lying_unseated_claim_fails_the_local_check_and_the_contract(
    world: World, tmp_path: Path
) -> None:
    world.reset()
    task, seated, unseated = _task_with(world, 2, 1)
    _train(world, task)
    late, on_time = seated[0], seated[1:]
    for validator in on_time:
        world.commit(validator, task, 1, b"\x07" * 32)
    info = world.requester.round_info(task, 1)
    tau = world.requester.task_params(task).committee_size

    def local_check(validator: ChainClient, proof: bytes) -> None:
        key = RegisteredKey(world.vrf_keys[validator.address].public_key.modulus, address_bytes(validator.address))
        stake = world.requester.stake_of(task, validator.address)
        sortition.verify_unseated(key, info.seed, 1, proof, stake, info.total_stake, tau)

    honest = [(v, p) for v, (_, p) in zip(unseated, _proofs(world, task, 1, unseated), strict=True)]
    for validator, proof in honest:
        local_check(validator, proof)  # the true claims pass
    side = chain_side(world, world.requester, tmp_path)
    await side.follow(address_bytes(task))
    network = TaskNetwork(
        ChainAccess(world.requester), None, address_bytes(world.requester.address),  # type: ignore[arg-type]
        None, None, None, BehaviourConfig(), LOG,  # type: ignore[arg-type]
    )
    network.task = task
    for validator in world.validators:  # what load_members reads (the requester is unregistered here)
        registered = world.requester.participant(validator.address).vrf_modulus
        network.vrf_keys[address_bytes(validator.address)] = registered

    def message(validator: ChainClient, proof: bytes) -> UnseatedProof:
        return UnseatedProof(
            world.requester.chain_id, address_bytes(task), 1, address_bytes(validator.address), proof
        )

    for validator, proof in honest:
        assert await network._check_committee_proof(message(validator, proof), None)  # type: ignore[arg-type]

    async def refused(liar: ChainClient, proof: bytes, errors: set[str]) -> None:
        with pytest.raises(VRFError):
            local_check(liar, proof)
        # gossip: the extra validator's False is a reject, and the forwarder pays for it
        assert not await network._check_committee_proof(message(liar, proof), None)  # type: ignore[arg-type]
        claim = {address_bytes(v.address): p for v, p in honest} | {address_bytes(liar.address): proof}
        failed = await side.send(end_commit_phase(tuple(sorted(claim.items()))))
        assert isinstance(failed, ev.TxFailed) and not failed.permanent, failed
        assert failed.error_name in errors, failed
        assert world.requester.phase(task) == Phase.COMMIT

    # a seated member that has not committed yet, passed as unseated with its own proof
    await refused(late, world.ticket(late, task, 1).proof, {"Selected"})
    world.commit(late, task, 1, b"\x07" * 32)
    # every seated member committed: now the count matches, and the proofs decide
    liar = unseated[0]
    await refused(liar, forged_for(liar, world), {"ProofInvalid"})
    key = world.vrf_keys[liar.address]
    await refused(liar, sortition.committee_proof(key, info.seed, 2).proof, {"ProofInvalid"})
    assert await side.send(end_commit_phase(bundle(world, task, unseated))) == ev.TxConfirmed(
        TxKind.END_COMMIT_PHASE, 1
    )
    assert world.requester.phase(task) == Phase.REVEAL
