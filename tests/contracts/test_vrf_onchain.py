"""VRF.sol against the Python reference: RFC 9381 vectors on chain, and property tests that
both sides accept and refuse exactly the same inputs (through contracts/test/VRFHarness.sol
deployed on an in-process eth-tester chain)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.providers.eth_tester import EthereumTesterProvider

from node.chain import dev
from node.chain.artifacts import load_artifact, revert_data_from_exception
from protocol import keycert, sortition, vrf
from protocol.errors import VRFError
from tests.vrf_test_keys import (
    honest_keys,
    non_permutation_primes,
    rfc_vectors,
    small_factor_primes,
)

ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "artifacts" / "VRFHarness.json"
OWNER = bytes.fromhex("5b38da6a701c568545dcfcb03fcb875f56beddc4")
UINT256_MAX = 2**256 - 1
PROPERTY_SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def harness() -> Contract:
    artifact = json.loads(ARTIFACT.read_text())
    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    w3.eth.default_account = w3.eth.accounts[0]
    # verifySeat is the deployed VRF library's (as linked into Task); the rest inline.
    library = dev.deploy_from_dev_account(w3, "VRF")
    address = dev.deploy_from_dev_account(w3, "VRFHarness", {"VRF": library})
    return w3.eth.contract(address=address, abi=artifact["abi"])


def _error_names(harness: Contract) -> dict[str, str]:
    names = {}
    # The linked library's errors bubble up from its DELEGATECALL; the harness ABI lacks them.
    for item in [*harness.abi, *load_artifact("VRF").abi]:
        if item["type"] == "error":
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            names["0x" + keccak(text=signature)[:4].hex()] = item["name"]
    return names


def outcome(harness: Contract, call: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value) or ("revert", custom error name)."""
    try:
        return "ok", call()
    except (ContractCustomError, TransactionFailed) as exc:
        data = revert_data_from_exception(exc)
        assert data is not None, f"revert without data: {exc!r}"
        return "revert", _error_names(harness).get("0x" + data[:4].hex(), "0x" + data.hex())


def python_outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except VRFError:
        return "revert", None


def assert_agree(
    harness: Contract, chain: Callable[[], Any], python: Callable[[], Any]
) -> str | None:
    """Both accept with the same value, or both refuse; returns the chain's error name."""
    chain_kind, chain_value = outcome(harness, chain)
    python_kind, python_value = python_outcome(python)
    assert chain_kind == python_kind, (chain_kind, chain_value, python_kind, python_value)
    if chain_kind == "ok":
        assert chain_value == python_value
        return None
    return str(chain_value)


def test_small_prime_table_matches_python(harness: Contract) -> None:
    table = harness.functions.smallPrimes().call()
    assert [int.from_bytes(table[i : i + 2], "big") for i in range(0, len(table), 2)] == list(
        keycert.SMALL_PRIMES
    )


def _examples() -> list[tuple[str, int, bytes, bytes, bytes]]:
    vectors = rfc_vectors()
    cases = [
        (e["name"], int(vectors["keys"][e["key"]]["n"], 16), e["alpha"], e["pi"], e["beta"])
        for e in vectors["examples"]
    ]
    extra_n = int(vectors["extra"]["key"]["n"], 16)
    cases += [
        (f"extra {i}", extra_n, e["alpha"], e["pi"], e["beta"])
        for i, e in enumerate(vectors["extra"]["examples"])
    ]
    return [
        (name, n, bytes.fromhex(a), bytes.fromhex(p), bytes.fromhex(b))
        for name, n, a, p, b in cases
    ]


@pytest.mark.parametrize("case", _examples(), ids=lambda case: case[0])
def test_rfc9381_vectors_verify_on_chain(harness: Contract, case: tuple) -> None:
    _, n, alpha, pi, beta = case
    modulus = vrf.VRFPublicKey(n).modulus_bytes()
    assert harness.functions.verify(modulus, alpha, pi).call() == beta
    assert harness.functions.proofToHash(pi).call() == beta
    forged = bytearray(pi)
    forged[len(pi) // 2] ^= 0x04
    assert outcome(harness, harness.functions.verify(modulus, alpha, bytes(forged)).call) == (
        "revert",
        "ProofInvalid",
    )


def test_malformed_proofs_and_keys_revert_with_named_errors(harness: Contract) -> None:
    key = honest_keys()[0]
    modulus = key.public_key.modulus_bytes()
    pi = vrf.prove(key, b"alpha")
    verify = harness.functions.verify
    cases = {
        "ProofLengthMismatch": (modulus, b"alpha", b"\x00" + pi),
        "ProofOutOfRange": (modulus, b"alpha", b"\xff" * 256),
        "ProofInvalid": (modulus, b"alphb", pi),
        "ModulusLengthInvalid": (b"\x00" + modulus[1:], b"alpha", pi),
        "ModulusEven": (modulus[:-1] + bytes([modulus[-1] ^ 1]), b"alpha", pi),
    }
    for expected, arguments in cases.items():
        assert outcome(harness, verify(*arguments).call) == ("revert", expected)
        with pytest.raises(VRFError):
            vrf.verify(
                vrf.VRFPublicKey.from_modulus_bytes(arguments[0]), arguments[1], arguments[2]
            )


@PROPERTY_SETTINGS
@given(
    key_index=st.integers(0, 3),
    alpha=st.binary(max_size=200),
    flip=st.one_of(st.none(), st.integers(0, 256 * 8 - 1)),
)
def test_verify_agrees_with_python(
    harness: Contract, key_index: int, alpha: bytes, flip: int | None
) -> None:
    key = honest_keys()[key_index]
    pi = bytearray(vrf.prove(key, alpha))
    if flip is not None:
        pi[flip // 8] ^= 1 << (flip % 8)
    error = assert_agree(
        harness,
        harness.functions.verify(key.public_key.modulus_bytes(), alpha, bytes(pi)).call,
        lambda: vrf.verify(key.public_key, alpha, bytes(pi)),
    )
    assert (error is None) == (flip is None)


selection_integers = st.one_of(
    st.sampled_from([0, 1, 2, 3, 2**128, UINT256_MAX - 1, UINT256_MAX]), st.integers(0, UINT256_MAX)
)


@settings(max_examples=150, deadline=None)
@given(
    beta=st.binary(min_size=32, max_size=32),
    tau=selection_integers,
    stake=selection_integers,
    total=selection_integers,
)
def test_is_selected_agrees_with_python(
    harness: Contract, beta: bytes, tau: int, stake: int, total: int
) -> None:
    assert_agree(
        harness,
        harness.functions.isSelected(beta, tau, stake, total).call,
        lambda: sortition.is_selected(beta, tau, stake, total),
    )


@settings(max_examples=60, deadline=None)
@given(
    beta_below=st.integers(0, UINT256_MAX),
    tau=st.integers(1, 1000),
    total=st.integers(1, 2**200),
    data=st.data(),
)
def test_is_selected_agrees_near_the_threshold(
    harness: Contract, beta_below: int, tau: int, total: int, data: st.DataObject
) -> None:
    stake = data.draw(st.integers(0, total))
    # Put beta within a few units of the exact threshold tau * stake * 2^256 / total.
    threshold = min(tau * stake * 2**256 // total, UINT256_MAX)
    beta = max(0, min(UINT256_MAX, threshold + beta_below % 5 - 2)).to_bytes(32, "big")
    assert_agree(
        harness,
        harness.functions.isSelected(beta, tau, stake, total).call,
        lambda: sortition.is_selected(beta, tau, stake, total),
    )


@settings(max_examples=300, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    worker=st.binary(min_size=20, max_size=20),
    n_workers=st.integers(1, 256),
    data=st.data(),
)
def test_worker_selection_agrees_with_python(
    harness: Contract, seed: bytes, worker: bytes, n_workers: int, data: st.DataObject
) -> None:
    per_round = data.draw(st.one_of(st.integers(0, n_workers), st.integers(0, 2**16 - 1)))
    on_chain = harness.functions.workerSelected(
        seed, Web3.to_checksum_address(worker), per_round, n_workers
    ).call()
    assert on_chain == sortition.worker_selected(seed, worker, per_round, n_workers)


@settings(max_examples=40, deadline=None)
@given(
    previous=st.binary(min_size=32, max_size=32),
    round_number=selection_integers,
    prevrandao=selection_integers,
    chain_id=selection_integers,
    task=st.binary(min_size=20, max_size=20),
)
def test_seeds_agree_with_python(
    harness: Contract,
    previous: bytes,
    round_number: int,
    prevrandao: int,
    chain_id: int,
    task: bytes,
) -> None:
    functions = harness.functions
    assert functions.nextSeed(previous, round_number, prevrandao).call() == sortition.next_seed(
        previous, round_number, prevrandao
    )
    task_address = Web3.to_checksum_address(task)
    assert functions.initialSeed(chain_id, task_address, previous).call() == sortition.initial_seed(
        chain_id, task, previous
    )
    assert functions.roundAlpha(previous, round_number).call() == sortition.round_alpha(
        previous, round_number
    )


@pytest.fixture(scope="module")
def certificates() -> dict[int, bytes]:
    return {index: keycert.certify(honest_keys()[index], OWNER) for index in range(2)}


@PROPERTY_SETTINGS
@given(
    key_index=st.integers(0, 1),
    flip=st.one_of(st.none(), st.integers(0, keycert.CERTIFICATE_BYTES * 8 - 1)),
    other_owner=st.one_of(st.none(), st.binary(min_size=20, max_size=20)),
)
def test_certificate_checks_agree_with_python(
    harness: Contract,
    certificates: dict[int, bytes],
    key_index: int,
    flip: int | None,
    other_owner: bytes | None,
) -> None:
    key = honest_keys()[key_index]
    proof = bytearray(certificates[key_index])
    if flip is not None:
        proof[flip // 8] ^= 1 << (flip % 8)
    owner = OWNER if other_owner is None else other_owner
    check = harness.functions.verifyKeyCertificate(
        key.public_key.modulus_bytes(), Web3.to_checksum_address(owner), bytes(proof)
    )
    error = assert_agree(
        harness,
        lambda: check.call() == [],  # no return values: [] on success
        lambda: keycert.verify_certificate(key.modulus, owner, bytes(proof)) is None,
    )
    tampered = flip is not None or (other_owner is not None and other_owner != OWNER)
    assert (error == "CertificateRootInvalid") == tampered


def test_bad_keys_and_certificates_revert_with_named_errors(
    harness: Contract, certificates: dict[int, bytes]
) -> None:
    owner = Web3.to_checksum_address(OWNER)
    check = harness.functions.verifyKeyCertificate
    key = honest_keys()[0]
    modulus = key.public_key.modulus_bytes()
    small, p, q = small_factor_primes()
    small_modulus = small * p * q
    valid_roots = b"".join(
        vrf.i2osp(pow(rho, pow(65537, -1, (small - 1) * (p - 1) * (q - 1)), small_modulus), 256)
        for rho in keycert.challenges(small_modulus, OWNER)
    )
    bad_p, bad_q = non_permutation_primes()
    cases = {
        "KeySizeInvalid": (modulus[1:], certificates[0]),
        "ModulusEven": (modulus[:-1] + bytes([modulus[-1] ^ 1]), certificates[0]),
        "ModulusHasSmallFactor": (vrf.i2osp(small_modulus, 256), valid_roots),
        "CertificateLengthInvalid": (modulus, certificates[0][:-1]),
        "CertificateRootInvalid": (vrf.i2osp(bad_p * bad_q, 256), certificates[0]),
    }
    for expected, (modulus_bytes, proof) in cases.items():
        assert outcome(harness, check(modulus_bytes, owner, proof).call) == ("revert", expected)
        with pytest.raises(VRFError):
            keycert.verify_certificate(int.from_bytes(modulus_bytes, "big"), OWNER, proof)
    assert check(modulus, owner, certificates[0]).call() == []


def test_committee_member_on_chain(harness: Contract) -> None:
    key = honest_keys()[0]
    modulus = key.public_key.modulus_bytes()
    seed = sortition.next_seed(sortition.initial_seed(1, bytes(20), bytes(32)), 1, 12345)
    ticket = sortition.committee_proof(key, seed, 1)
    member = harness.functions.verifyCommitteeMember
    assert member(modulus, seed, 1, ticket.proof, 5, 5, 1).call() == ticket.beta
    assert outcome(harness, member(modulus, seed, 2, ticket.proof, 5, 5, 1).call) == (
        "revert",
        "ProofInvalid",
    )
    assert outcome(harness, member(modulus, seed, 1, ticket.proof, 1, 2**200, 1).call) == (
        "revert",
        "NotSelected",
    )
