"""VRF, key-certificate and sortition costs, against baselines measured in the same run.

    python -m bench.vrf [--repeat 20]

Times (Python, 2048-bit keys, median of the repeats) are printed with their ratio to one
raw RSA private-key operation ``pow(m, d, n)`` without the CRT: the cost RSA-FDH-VRF is
built on.  Gas comes from contracts/test/VRFHarness.sol on an in-process eth-tester chain:
the library's own gas (``gasleft()`` around the call) and the whole transaction's
(``eth_estimateGas``, calldata included), each as a ratio to a plain ether transfer
estimated on the same chain.  Absolute times vary with machine load; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import keycert, sortition, vrf

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "contracts" / "artifacts" / "VRFHarness.json"
RFC_VECTORS = ROOT / "tests" / "data" / "rfc9381_rsa_fdh_vectors.json"
OWNER = bytes.fromhex("5b38da6a701c568545dcfcb03fcb875f56beddc4")


def median_ms(operation: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def python_times(key: vrf.VRFPrivateKey, repeat: int) -> list[tuple[str, float]]:
    alpha = sortition.round_alpha(b"\x42" * 32, 7)
    pi = vrf.prove(key, alpha)
    beta = vrf.proof_to_hash(pi)
    certificate = keycert.certify(key, OWNER)
    message = vrf.encode_to_message(key.public_key, alpha)
    d, n = key.private_exponent(), key.modulus
    return [
        ("baseline: pow(m, d, n), no CRT", median_ms(lambda: pow(message, d, n), repeat)),
        (
            "keygen 2048 (OpenSSL)",
            median_ms(lambda: vrf.generate_private_key(), max(3, repeat // 4)),
        ),
        ("prove (CRT + self-check)", median_ms(lambda: vrf.prove(key, alpha), repeat)),
        ("verify", median_ms(lambda: vrf.verify(key.public_key, alpha, pi), repeat)),
        ("is_selected", median_ms(lambda: sortition.is_selected(beta, 10, 3, 100), repeat)),
        ("certify (9 roots)", median_ms(lambda: keycert.certify(key, OWNER), max(3, repeat // 4))),
        (
            "verify_certificate",
            median_ms(lambda: keycert.verify_certificate(n, OWNER, certificate), repeat),
        ),
    ]


def chain_gas(key: vrf.VRFPrivateKey) -> list[tuple[str, int, int]]:
    """(operation, library gas, transaction gas) on eth-tester."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import Web3
    from web3.providers.eth_tester import EthereumTesterProvider

    from node.chain import dev

    artifact = json.loads(ARTIFACT.read_text())
    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    sender = w3.eth.accounts[0]
    w3.eth.default_account = sender
    library = dev.deploy_from_dev_account(w3, "VRF")
    address = dev.deploy_from_dev_account(w3, "VRFHarness", {"VRF": library})
    harness = w3.eth.contract(address=address, abi=artifact["abi"])
    transfer = w3.eth.estimate_gas({"from": sender, "to": w3.eth.accounts[1], "value": 1})

    rows: list[tuple[str, int, int]] = [("baseline: ether transfer", 0, transfer)]
    alpha = sortition.round_alpha(b"\x42" * 32, 7)
    modulus = key.public_key.modulus_bytes()
    pi = vrf.prove(key, alpha)
    _, library = harness.functions.verifyGas(modulus, alpha, pi).call()
    rows.append(
        (
            "VRF.verify, 2048-bit",
            library,
            harness.functions.verify(modulus, alpha, pi).estimate_gas(),
        )
    )
    vectors = json.loads(RFC_VECTORS.read_text())
    for example in vectors["examples"][1:]:
        rfc_modulus = vrf.VRFPublicKey(
            int(vectors["keys"][example["key"]]["n"], 16)
        ).modulus_bytes()
        args = (rfc_modulus, bytes.fromhex(example["alpha"]), bytes.fromhex(example["pi"]))
        _, library = harness.functions.verifyGas(*args).call()
        rows.append(
            (
                f"VRF.verify, {example['key']}-bit (RFC)",
                library,
                harness.functions.verify(*args).estimate_gas(),
            )
        )
    certificate = keycert.certify(key, OWNER)
    owner = Web3.to_checksum_address(OWNER)
    library = harness.functions.verifyKeyCertificateGas(modulus, owner, certificate).call()
    total = harness.functions.verifyKeyCertificate(modulus, owner, certificate).estimate_gas()
    rows.append(("VRF.verifyKeyCertificate", library, total))
    seed = b"\x42" * 32
    ticket = sortition.committee_proof(key, seed, 7)
    member = harness.functions.verifyCommitteeMember(modulus, seed, 7, ticket.proof, 5, 5, 1)
    rows.append(("VRF.verifyCommitteeMember", 0, member.estimate_gas()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="samples per timing (median)")
    args = parser.parse_args()
    key = vrf.generate_private_key()

    times = python_times(key, args.repeat)
    baseline = times[0][1]
    print(f"{'Python, 2048-bit key':<34} {'median ms':>10} {'x baseline':>11}")
    for name, ms in times:
        print(f"{name:<34} {ms:>10.3f} {ms / baseline:>11.3f}")

    gas = chain_gas(key)
    transfer = gas[0][2]
    print()
    print(
        f"{'on chain (eth-tester, prague)':<34} {'library gas':>12} {'tx gas':>10} {'x transfer':>11}"
    )
    for name, library, total in gas:
        library_text = f"{library:>12,}" if library else f"{'-':>12}"
        print(f"{name:<34} {library_text} {total:>10,} {total / transfer:>11.2f}")


if __name__ == "__main__":
    main()
