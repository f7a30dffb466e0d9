"""Regenerates vrf_test_keys.json: RSA keys for TESTS ONLY (their primes are public).

Committed so tests neither spend seconds on 2048-bit key generation nor depend on random
keys. Run from the repository root: PYTHONPATH=. python tests/data/make_vrf_test_keys.py
"""

import json
import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from protocol.keycert import ALPHA
from protocol.vrf import PUBLIC_EXPONENT

HONEST_KEYS = 12
OUTPUT = Path(__file__).with_name("vrf_test_keys.json")


def _is_probable_prime(candidate: int, rng: random.Random) -> bool:
    if candidate < 2 or candidate % 2 == 0:
        return candidate == 2
    odd, twos = candidate - 1, 0
    while odd % 2 == 0:
        odd, twos = odd // 2, twos + 1
    for _ in range(40):
        witness = pow(rng.randrange(2, candidate - 1), odd, candidate)
        if witness in (1, candidate - 1):
            continue
        for _ in range(twos - 1):
            witness = pow(witness, 2, candidate)
            if witness == candidate - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random, congruent_one_mod: int = 1) -> int:
    """A random prime of exactly ``bits`` bits, = 1 mod ``congruent_one_mod``."""
    while True:
        multiplier = rng.getrandbits(bits) // congruent_one_mod
        candidate = multiplier * congruent_one_mod + 1
        if candidate.bit_length() == bits and candidate % 2 and _is_probable_prime(candidate, rng):
            return candidate


def _honest() -> list[dict[str, str]]:
    keys = []
    for _ in range(HONEST_KEYS):
        numbers = rsa.generate_private_key(PUBLIC_EXPONENT, 2048).private_numbers()
        keys.append({"p": format(numbers.p, "x"), "q": format(numbers.q, "x")})
    return keys


def main() -> None:
    rng = random.Random(20240605)
    # x -> x^e is NOT a permutation: e divides p - 1.
    bad_p = _prime(1024, rng, congruent_one_mod=2 * PUBLIC_EXPONENT)
    bad_q = _prime(1024, rng)
    # A permutation (roots exist), but with the small prime ALPHA - 1 = 8191 as a factor.
    small = ALPHA - 1
    small_p = _prime(1018, rng)
    small_q = _prime(1018, rng)
    assert (small * small_p * small_q).bit_length() == 2048, "rerun: size missed"
    document = {
        "warning": "TEST KEYS ONLY: these primes are public; never use them for anything real.",
        "generated_by": "tests/data/make_vrf_test_keys.py",
        "honest": _honest(),
        "e_divides_p_minus_1": {"p": format(bad_p, "x"), "q": format(bad_q, "x")},
        "small_factor": {
            "factors": [format(small, "x"), format(small_p, "x"), format(small_q, "x")],
        },
    }
    OUTPUT.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
