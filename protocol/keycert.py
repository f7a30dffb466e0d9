"""Certifying a VRF key: a non-interactive proof that x -> x^e mod n is a permutation.

RSA-FDH-VRF gives one proof per input only if the key was generated honestly (RFC 9381,
security considerations on key generation); a validator who picks a bad modulus could hold several valid
proofs, hence several betas, per round.  So a validator registers its modulus together
with the "perm" proof of Goldberg, Reyzin, Sagga and Baldimtsi ("Efficient Noninteractive
Certification of RSA Moduli and Beyond", ASIACRYPT 2019, ePrint 2018/057): the verifier
checks that n has no small prime factors, and the prover sends e-th roots of challenges
that a hash derives from the key and the owner's address.  The paper itself was not at
hand offline, so the parameters below are derived here, with the arithmetic shown.

What :func:`verify_certificate` checks
--------------------------------------
1. ``e = 65537`` (implicit: the registry stores only n) and n has exactly 2048 bits.
2. n is odd and has no prime factor below ``ALPHA = 2**13`` (1027 odd primes).
3. For i = 0..8: ``sigma_i^e = rho_i (mod n)``, with 0 <= sigma_i < n, where

       context = keccak256(DOMAIN || I2OSP(n, 256) || I2OSP(e, 32) || owner)   # 20-byte owner
       B(i, j) = keccak256(context || I2OSP(i, 32) || I2OSP(j, 32))            # j = 0..8
       rho_i   = OS2IP(B(i, 0) || ... || B(i, 8)) mod n                        # 288 bytes

   (``abi.encodePacked(DOMAIN, n, uint256(e), owner)`` and ``abi.encode(context, i, j)``
   in Solidity, so ``VRF.sol`` recomputes exactly the same challenges).  The certificate
   is ``I2OSP(sigma_0, 256) || ... || I2OSP(sigma_8, 256)`` (2304 bytes); the honest
   prover sets ``sigma_i = rho_i^d mod n``.

Soundness (why 9 challenges)
----------------------------
Suppose x -> x^e is not a permutation of Z_n^*, i.e. gcd(e, lambda(n)) != 1.  As e is
prime, e divides phi(q^k) = q^(k-1) (q - 1) for some prime power q^k exactly dividing n.
Z_(q^k)^* is cyclic (q is odd), so x -> x^e is e-to-one on it and only 1/e of the units
mod q^k are e-th powers.  A challenge rho is (statistically, within 2^-256) uniform mod n,
hence uniform mod q^k, and an e-th root of rho mod n is one mod q^k too:

* if q does not divide rho, rho must be an e-th power unit: probability <= 1/e;
* if q divides rho, so does sigma, and then sigma^e = 0 mod q^k (k < e, since
  q^k < 2^2048): rho must be 0 mod q^k, probability 1/q^k.

Either e | q - 1, so q >= 2e + 1, or q = e with k >= 2.  One challenge is answerable with
probability at most 1/e + 1/(2e + 1) < 3/(2e) = 2^-15.41, and m independent ones with
(3/(2e))^m.  m = ceil(128 / 15.41) = 9 gives 2^-138: a prover who tries Q keys or
addresses still succeeds with probability <= Q * 2^-138, far below the required 2^-64
(which alone would need m = 5).

Why the small-factor check (ALPHA)
----------------------------------
Given 3., every VRF input m coprime to n has exactly one e-th root, so one proof.  A
second root of m needs a prime q with q^k exactly dividing n for some k >= 2 and q^k | m
(if q | m but q^k does not, m has no root at all and the owner simply cannot prove).
Honest keys are square-free, so this never happens to them.  For a crafted key, check 2.
bounds it: over the random-oracle choice of m, the probability is at most
sum(q^-2 for q >= ALPHA with q^2 | n) <= (2048 / 26) * 2^-26 < 2^-19.7 per VRF input,
i.e. a crafted key gains a choice of beta in about one round in 800,000.  Proving
square-freeness as well (N-th roots, the paper's section 3.2) would cost a 2048-bit
exponent per challenge, about 0.7M gas each on chain, which that residual does not
justify.  ALPHA = 2^13 keeps the on-chain prime table at 2 KB; VRF.verifyKeyCertificate
spends about 0.36M gas in all (python -m bench.vrf), 0.23M of it on the small primes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eth_hash.auto import keccak

from protocol.errors import VRFError
from protocol.vrf import PUBLIC_EXPONENT, VRFPrivateKey, VRFPublicKey, i2osp, os2ip, rsasp1

KEY_BITS = 2048
KEY_BYTES = KEY_BITS // 8
ALPHA = 1 << 13
CHALLENGE_COUNT = 9
CERTIFICATE_BYTES = CHALLENGE_COUNT * KEY_BYTES
# 9 keccak blocks: 288 bytes = n's 256 bytes + 32, so rho mod n is within 2^-256 of uniform.
CHALLENGE_BLOCKS = 9
DOMAIN = b"fl-node/vrf-key-certificate/perm/v1"
ADDRESS_BYTES = 20


def _odd_primes_below(bound: int) -> tuple[int, ...]:
    sieve = bytearray([1]) * bound
    sieve[0:2] = b"\x00\x00"
    for candidate in range(2, math.isqrt(bound - 1) + 1):
        if sieve[candidate]:
            sieve[candidate * candidate :: candidate] = bytes(len(range(candidate * candidate, bound, candidate)))
    return tuple(number for number in range(3, bound) if sieve[number])


SMALL_PRIMES: tuple[int, ...] = _odd_primes_below(ALPHA)
_SMALL_PRIMES_PRODUCT = math.prod(SMALL_PRIMES)


def _check_owner(owner: bytes) -> None:
    if not isinstance(owner, bytes | bytearray) or len(owner) != ADDRESS_BYTES:
        raise VRFError(
            "key owner must be a 20-byte address as bytes (e.g. bytes.fromhex(address[2:]));"
            f" got {owner!r:.60}"
        )


def _check_size(modulus: int) -> None:
    if modulus.bit_length() != KEY_BITS:
        raise VRFError(
            f"VRF modulus has {modulus.bit_length()} bits; registered keys must have exactly"
            f" {KEY_BITS} (generate one with protocol.vrf.generate_private_key())"
        )


def check_modulus(modulus: int) -> None:
    """Refuse a modulus the certificate cannot vouch for; the error names the problem."""
    _check_size(modulus)
    if modulus % 2 == 0:
        raise VRFError("VRF modulus is even; an RSA modulus is a product of odd primes")
    if math.gcd(modulus, _SMALL_PRIMES_PRODUCT) != 1:
        factor = next(prime for prime in SMALL_PRIMES if modulus % prime == 0)
        raise VRFError(
            f"VRF modulus is divisible by the small prime {factor} (< {ALPHA}); generate a fresh key"
        )


def challenges(modulus: int, owner: bytes) -> list[int]:
    """rho_0..rho_8: the values whose e-th roots the certificate holds (any 2048-bit n)."""
    _check_size(modulus)
    _check_owner(owner)
    context = keccak(DOMAIN + i2osp(modulus, KEY_BYTES) + i2osp(PUBLIC_EXPONENT, 32) + bytes(owner))
    return [
        os2ip(
            b"".join(
                keccak(context + i2osp(index, 32) + i2osp(block, 32)) for block in range(CHALLENGE_BLOCKS)
            )
        )
        % modulus
        for index in range(CHALLENGE_COUNT)
    ]


def certify(key: VRFPrivateKey, owner: bytes) -> bytes:
    """The certificate binding ``key``'s modulus to ``owner`` (a 20-byte chain address)."""
    if key.exponent != PUBLIC_EXPONENT:
        raise VRFError(f"VRF key has public exponent {key.exponent}; registered keys use {PUBLIC_EXPONENT}")
    if math.gcd(PUBLIC_EXPONENT, (key.prime_p - 1) * (key.prime_q - 1)) != 1:
        raise VRFError("x -> x^e is not a permutation for this key (e divides p-1 or q-1); generate a fresh key")
    check_modulus(key.modulus)
    roots = (rsasp1(key, rho) for rho in challenges(key.modulus, owner))
    return b"".join(i2osp(root, KEY_BYTES) for root in roots)


def verify_certificate(modulus: int, owner: bytes, proof: bytes) -> None:
    """Return if ``proof`` certifies ``modulus`` for ``owner``; raise VRFError otherwise."""
    check_modulus(modulus)
    rhos = challenges(modulus, owner)
    if len(proof) != CERTIFICATE_BYTES:
        raise VRFError(
            f"VRF key certificate is {len(proof)} bytes; expected {CERTIFICATE_BYTES}"
            f" ({CHALLENGE_COUNT} roots of {KEY_BYTES} bytes)"
        )
    for index, rho in enumerate(rhos):
        root = os2ip(proof[index * KEY_BYTES : (index + 1) * KEY_BYTES])
        if root >= modulus or pow(root, PUBLIC_EXPONENT, modulus) != rho:
            raise VRFError(
                f"VRF key certificate root {index} is wrong: the certificate was made for another"
                " key or owner, or it was altered"
            )


@dataclass(frozen=True)
class CertifiedKey:
    """A VRF public key whose certificate has been checked; constructing one verifies it."""

    modulus: int
    owner: bytes
    certificate: bytes

    def __post_init__(self) -> None:
        verify_certificate(self.modulus, self.owner, self.certificate)

    @property
    def public_key(self) -> VRFPublicKey:
        return VRFPublicKey(self.modulus, PUBLIC_EXPONENT)
