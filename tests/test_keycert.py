"""VRF key certificates: honest keys pass; bad keys, other owners and altered proofs do not."""

import pytest

from protocol import keycert, vrf
from protocol.errors import VRFError
from tests.vrf_test_keys import (
    honest_keys,
    non_permutation_primes,
    rfc_vectors,
    small_factor_primes,
)

OWNER = bytes.fromhex("5b38da6a701c568545dcfcb03fcb875f56beddc4")
OTHER_OWNER = bytes.fromhex("ab8483f64d9c6d1ecf9b849ae677dd3315835cb2")


@pytest.fixture(scope="module")
def key() -> vrf.VRFPrivateKey:
    return honest_keys()[0]


@pytest.fixture(scope="module")
def certificate(key: vrf.VRFPrivateKey) -> bytes:
    return keycert.certify(key, OWNER)


def _roots(modulus: int, private_exponent: int, owner: bytes) -> bytes:
    """e-th roots of the challenges computed straight from d (works for any square-free n)."""
    return b"".join(
        vrf.i2osp(pow(rho, private_exponent, modulus), keycert.KEY_BYTES)
        for rho in keycert.challenges(modulus, owner)
    )


def test_parameters_match_the_documented_derivation() -> None:
    assert keycert.SMALL_PRIMES[0] == 3 and keycert.SMALL_PRIMES[-1] == 8191
    assert len(keycert.SMALL_PRIMES) == 1027
    assert keycert.CERTIFICATE_BYTES == 9 * 256
    # (3 / 2e)^9 <= 2^-128: nine challenges give the 128-bit target with margin.
    assert (3 / (2 * 65537)) ** keycert.CHALLENGE_COUNT < 2.0**-128
    assert (3 / (2 * 65537)) ** (keycert.CHALLENGE_COUNT - 1) > 2.0**-128


def test_honest_key_certifies_and_verifies(key: vrf.VRFPrivateKey, certificate: bytes) -> None:
    assert len(certificate) == keycert.CERTIFICATE_BYTES
    keycert.verify_certificate(key.modulus, OWNER, certificate)
    certified = keycert.CertifiedKey(key.modulus, OWNER, certificate)
    assert certified.public_key == key.public_key
    # Deterministic: the roots are unique.
    assert keycert.certify(key, OWNER) == certificate


def test_rfc_2048_bit_key_certifies() -> None:
    entry = rfc_vectors()["keys"]["2048"]
    key = vrf.VRFPrivateKey(int(entry["p"], 16), int(entry["q"], 16))
    keycert.verify_certificate(key.modulus, OTHER_OWNER, keycert.certify(key, OTHER_OWNER))


def test_certificate_is_bound_to_its_owner_and_key(key: vrf.VRFPrivateKey, certificate: bytes) -> None:
    with pytest.raises(VRFError, match="root 0 is wrong"):
        keycert.verify_certificate(key.modulus, OTHER_OWNER, certificate)
    with pytest.raises(VRFError, match="root 0 is wrong"):
        keycert.verify_certificate(honest_keys()[1].modulus, OWNER, certificate)
    with pytest.raises(VRFError):
        keycert.CertifiedKey(key.modulus, OTHER_OWNER, certificate)


@pytest.mark.parametrize("index", range(keycert.CHALLENGE_COUNT))
def test_every_root_is_checked(key: vrf.VRFPrivateKey, certificate: bytes, index: int) -> None:
    forged = bytearray(certificate)
    forged[index * keycert.KEY_BYTES + 200] ^= 0x40
    with pytest.raises(VRFError, match=f"root {index} is wrong"):
        keycert.verify_certificate(key.modulus, OWNER, bytes(forged))


def test_root_out_of_range_and_wrong_length_are_refused(key: vrf.VRFPrivateKey, certificate: bytes) -> None:
    first = vrf.os2ip(certificate[:256]) + key.modulus  # same residue, not reduced
    if first < 1 << 2048:
        with pytest.raises(VRFError, match="root 0"):
            keycert.verify_certificate(key.modulus, OWNER, vrf.i2osp(first, 256) + certificate[256:])
    with pytest.raises(VRFError, match="expected 2304"):
        keycert.verify_certificate(key.modulus, OWNER, certificate[:-1])
    with pytest.raises(VRFError, match="expected 2304"):
        keycert.verify_certificate(key.modulus, OWNER, certificate + b"\x00")


def test_wrong_exponent_or_size_is_refused(key: vrf.VRFPrivateKey) -> None:
    three = vrf.VRFPrivateKey(key.prime_p, key.prime_q, exponent=next(
        e for e in (3, 5, 17, 257) if (key.prime_p - 1) % e and (key.prime_q - 1) % e
    ))
    with pytest.raises(VRFError, match="exponent"):
        keycert.certify(three, OWNER)
    entry = rfc_vectors()["keys"]["3072"]
    big = vrf.VRFPrivateKey(int(entry["p"], 16), int(entry["q"], 16))
    with pytest.raises(VRFError, match="3072 bits"):
        keycert.certify(big, OWNER)
    with pytest.raises(VRFError, match="exactly 2048"):
        keycert.verify_certificate(big.modulus, OWNER, bytes(keycert.CERTIFICATE_BYTES))


def test_even_modulus_is_refused() -> None:
    with pytest.raises(VRFError, match="even"):
        keycert.verify_certificate((1 << 2047) + 2, OWNER, bytes(keycert.CERTIFICATE_BYTES))


def test_small_factor_is_refused_even_with_valid_roots() -> None:
    small, p, q = small_factor_primes()
    modulus = small * p * q
    lam = (small - 1) * (p - 1) * (q - 1)
    roots = _roots(modulus, pow(65537, -1, lam), OWNER)
    # The roots are right: only the small-factor check stands between this key and a pass.
    for index, rho in enumerate(keycert.challenges(modulus, OWNER)):
        assert pow(vrf.os2ip(roots[index * 256 : (index + 1) * 256]), 65537, modulus) == rho
    with pytest.raises(VRFError, match="small prime 8191"):
        keycert.verify_certificate(modulus, OWNER, roots)


def test_non_permutation_key_cannot_be_certified() -> None:
    p, q = non_permutation_primes()
    modulus = p * q
    assert (p - 1) % 65537 == 0
    # e-th powers mod p are exactly the rho with rho^((p-1)/e) = 1; each challenge is one with
    # probability 1/e. None of these is, so no certificate can pass, whatever its roots.
    for rho in keycert.challenges(modulus, OWNER):
        assert pow(rho, (p - 1) // 65537, p) != 1
    # The best a cheater can do: correct roots mod q, anything mod p.
    d_q = pow(65537, -1, q - 1)
    forged = b"".join(
        vrf.i2osp((pow(rho, d_q, q) * p * pow(p, -1, q)) % modulus, 256)
        for rho in keycert.challenges(modulus, OWNER)
    )
    with pytest.raises(VRFError, match="root 0 is wrong"):
        keycert.verify_certificate(modulus, OWNER, forged)


def test_owner_must_be_a_20_byte_address(key: vrf.VRFPrivateKey) -> None:
    with pytest.raises(VRFError, match="20-byte address"):
        keycert.challenges(key.modulus, OWNER[:19])
    with pytest.raises(VRFError, match="20-byte address"):
        keycert.certify(key, "0x" + OWNER.hex())  # type: ignore[arg-type]


def test_challenges_depend_on_every_input(key: vrf.VRFPrivateKey) -> None:
    base = keycert.challenges(key.modulus, OWNER)
    assert len(set(base)) == keycert.CHALLENGE_COUNT
    assert all(0 <= rho < key.modulus for rho in base)
    assert set(base).isdisjoint(keycert.challenges(key.modulus, OTHER_OWNER))
    assert set(base).isdisjoint(keycert.challenges(honest_keys()[1].modulus, OWNER))
