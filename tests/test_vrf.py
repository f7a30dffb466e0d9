"""RSA-FDH-VRF-SHA256 against RFC 9381's vectors, and every way a proof must be refused."""

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from protocol import vrf
from protocol.errors import VRFError
from tests.vrf_test_keys import honest_keys, non_permutation_primes, rfc_vectors


def _rfc_key(name: str) -> vrf.VRFPrivateKey:
    entry = rfc_vectors()["keys"][name]
    key = vrf.VRFPrivateKey(int(entry["p"], 16), int(entry["q"], 16), int(entry["e"], 16))
    assert key.modulus == int(entry["n"], 16)
    return key


RFC_EXAMPLES = rfc_vectors()["examples"]


@pytest.mark.parametrize("example", RFC_EXAMPLES, ids=[e["name"] for e in RFC_EXAMPLES])
def test_rfc9381_vectors_prove_hash_and_verify(example: dict) -> None:
    key = _rfc_key(example["key"])
    alpha = bytes.fromhex(example["alpha"])
    if "em" in example:
        assert vrf.encode_to_message(key.public_key, alpha) == int(example["em"], 16)
    pi = vrf.prove(key, alpha)
    assert pi.hex() == example["pi"]
    assert vrf.proof_to_hash(pi).hex() == example["beta"]
    assert vrf.verify(key.public_key, alpha, pi).hex() == example["beta"]


def test_rfc_private_exponent_matches_published_d() -> None:
    # The RFC prints d; ours is the lcm-reduced inverse, so they agree modulo lambda(n).
    for name, entry in rfc_vectors()["keys"].items():
        key = _rfc_key(name)
        published = int(entry["d"], 16)
        p, q = key.prime_p, key.prime_q
        assert published % (p - 1) == key.private_exponent() % (p - 1)
        assert published % (q - 1) == key.private_exponent() % (q - 1)


def test_cross_implementation_vectors_with_a_2047_bit_modulus() -> None:
    extra = rfc_vectors()["extra"]
    n, e, d = (int(extra["key"][c], 16) for c in "ned")
    p, q = rsa.rsa_recover_prime_factors(n, e, d)
    key = vrf.VRFPrivateKey(p, q, e)
    assert n.bit_length() == 2047 and key.public_key.byte_length == 256
    for example in extra["examples"]:
        alpha = bytes.fromhex(example["alpha"])
        pi = vrf.prove(key, alpha)
        assert pi.hex() == example["pi"]
        assert vrf.verify(key.public_key, alpha, pi).hex() == example["beta"]


def test_mgf1_matches_reference_output() -> None:
    # The RFC's reference generator self-tests MGF1-SHA256 on seed deadbeef at every length.
    full = bytes.fromhex(
        "a49eea4c082081ca8e405f9e8c880f57de8f7e2a121eabd1e2815c233b22e4538cc20abb816f996a86b3c5"
        "a3bf047e8c4eab43a7158434aa5e57c28576f2e04cd3e83885d191ce6fddaff08622befb66ea1b2b2ed092"
        "a90551d873303717cb605491a9ba17d6692cc489c606ac2429b69ac02a5cf350514df6b7d0858bab80ec"
    )
    for length in range(len(full) + 1):
        assert vrf.mgf1_sha256(bytes.fromhex("deadbeef"), length) == full[:length]


def test_i2osp_refuses_values_that_do_not_fit() -> None:
    assert vrf.i2osp(255, 1) == b"\xff"
    with pytest.raises(VRFError, match="too large"):
        vrf.i2osp(256, 1)
    with pytest.raises(VRFError):
        vrf.i2osp(-1, 4)


@pytest.fixture(scope="module")
def key() -> vrf.VRFPrivateKey:
    return honest_keys()[0]


def test_prove_verify_roundtrip_and_beta_is_deterministic(key: vrf.VRFPrivateKey) -> None:
    pi = vrf.prove(key, b"round 7")
    assert len(pi) == 256
    beta = vrf.verify(key.public_key, b"round 7", pi)
    assert beta == vrf.proof_to_hash(pi) == hashlib.sha256(b"\x01\x02" + pi).digest()
    assert vrf.prove(key, b"round 7") == pi
    assert vrf.prove(key, b"round 8") != pi


def test_tampered_proof_is_refused(key: vrf.VRFPrivateKey) -> None:
    pi = bytearray(vrf.prove(key, b"alpha"))
    for position in (0, 100, 255):
        forged = bytearray(pi)
        forged[position] ^= 0x01
        with pytest.raises(VRFError, match="does not match"):
            vrf.verify(key.public_key, b"alpha", bytes(forged))


def test_proof_for_another_input_or_key_is_refused(key: vrf.VRFPrivateKey) -> None:
    pi = vrf.prove(key, b"alpha")
    with pytest.raises(VRFError, match="does not match"):
        vrf.verify(key.public_key, b"alphb", pi)
    with pytest.raises(VRFError, match="does not match"):
        vrf.verify(honest_keys()[1].public_key, b"alpha", pi)


def test_non_canonical_proof_encodings_are_refused(key: vrf.VRFPrivateKey) -> None:
    pi = vrf.prove(key, b"alpha")
    # Same integer, one more byte: RSAVP1 alone would accept it and beta would change.
    with pytest.raises(VRFError, match="257 bytes"):
        vrf.verify(key.public_key, b"alpha", b"\x00" + pi)
    with pytest.raises(VRFError, match="255 bytes"):
        vrf.verify(key.public_key, b"alpha", pi[1:])
    # pi + n encodes the same residue but is out of range.
    shifted = vrf.os2ip(pi) + key.modulus
    if shifted < 1 << 2048:
        with pytest.raises(VRFError, match="out of range"):
            vrf.verify(key.public_key, b"alpha", vrf.i2osp(shifted, 256))
    with pytest.raises(VRFError, match="out of range"):
        vrf.verify(key.public_key, b"alpha", b"\xff" * 256)


def test_bad_public_keys_and_inputs_are_refused() -> None:
    with pytest.raises(VRFError, match="even"):
        vrf.VRFPublicKey((1 << 2047) + 2)
    with pytest.raises(VRFError, match="bytes"):
        vrf.VRFPublicKey((1 << 1000) + 1)
    with pytest.raises(VRFError, match="exponent"):
        vrf.VRFPublicKey((1 << 2047) + 1, exponent=4)
    with pytest.raises(VRFError, match="leading zero"):
        vrf.VRFPublicKey.from_modulus_bytes(b"\x00" + b"\x01" * 255)
    public = honest_keys()[0].public_key
    assert vrf.VRFPublicKey.from_modulus_bytes(public.modulus_bytes()) == public
    with pytest.raises(VRFError, match="at most"):
        vrf.encode_to_message(public, bytes(vrf.MAX_ALPHA_BYTES + 1))


def test_private_key_pem_roundtrip_and_refusals(key: vrf.VRFPrivateKey) -> None:
    loaded = vrf.private_key_from_pem(vrf.private_key_to_pem(key))
    assert loaded.modulus == key.modulus
    assert vrf.prove(loaded, b"x") == vrf.prove(key, b"x")
    assert "secret" in repr(key) and format(key.prime_p, "x")[:16] not in repr(key)
    with pytest.raises(VRFError, match="PEM"):
        vrf.private_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    with pytest.raises(VRFError, match="bytes"):
        vrf.private_key_from_pem(b"x" * (vrf.MAX_PEM_BYTES + 1))


def test_inconsistent_private_key_is_refused() -> None:
    p = honest_keys()[0].prime_p
    with pytest.raises(VRFError, match="distinct"):
        vrf.VRFPrivateKey(p, p)
    bad_p, bad_q = non_permutation_primes()  # e | p - 1: no private exponent exists
    with pytest.raises(VRFError, match="inconsistent"):
        vrf.VRFPrivateKey(bad_p, bad_q)


def test_generated_key_has_the_protocol_shape() -> None:
    key = vrf.generate_private_key(1024)  # the size only; 2048 is the default
    assert key.modulus.bit_length() == 1024 and key.exponent == 65537
    assert vrf.verify(key.public_key, b"", vrf.prove(key, b"")) == vrf.proof_to_hash(vrf.prove(key, b""))
    with pytest.raises(VRFError, match="key size"):
        vrf.generate_private_key(1000)
