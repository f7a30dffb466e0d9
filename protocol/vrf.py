"""RSA-FDH-VRF-SHA256, exactly as RFC 9381 section 4.

A verifiable random function: the key owner maps an input ``alpha`` to a pseudo-random
32-byte ``beta`` and a proof ``pi`` that anyone with the public key checks.  For an honestly
generated key (see :mod:`protocol.keycert` for proving that) there is exactly one valid
proof per input, so the owner cannot grind ``beta``.

The suite (RFC 9381 section 4.4): ``suite_string = 0x01``, Hash = SHA-256,
``MGF_salt = I2OSP(k, 4) || I2OSP(n, k)`` with ``k`` the modulus length in bytes.

    prove:         EM = MGF1(suite || 0x01 || MGF_salt || alpha, k - 1)
                   pi = I2OSP(RSASP1(K, OS2IP(EM)), k)
    proof_to_hash: beta = SHA256(suite || 0x02 || pi)
    verify:        RSAVP1(pi) == OS2IP(EM) for the same EM, then beta = proof_to_hash(pi)

Everything is integer arithmetic (``pow`` with three arguments); ``cryptography`` is used
only to generate keys and to read and write them as PEM.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from protocol.errors import VRFError

SUITE_STRING = b"\x01"  # RSA-FDH-VRF-SHA256
MGF_DOMAIN_SEPARATOR = b"\x01"
PROOF_TO_HASH_DOMAIN_SEPARATOR = b"\x02"
HASH_LENGTH = 32  # SHA-256 output, also the length of beta

PUBLIC_EXPONENT = 65537
DEFAULT_MODULUS_BITS = 2048
# Accepted by the generic functions here (and by VRF.sol), as modulus lengths in bytes;
# the protocol itself pins 2048-bit keys (protocol.keycert).
MIN_MODULUS_BYTES = 128
MAX_MODULUS_BYTES = 512
# alpha is hashed, so its size only bounds the work a caller can make us do.
MAX_ALPHA_BYTES = 1 << 16
MAX_PEM_BYTES = 16 * 1024


def i2osp(value: int, length: int) -> bytes:
    """RFC 8017 I2OSP: a non-negative integer as exactly ``length`` big-endian bytes."""
    if value < 0 or value >= 1 << (8 * length):
        raise VRFError(f"integer too large for {length} bytes (I2OSP)")
    return value.to_bytes(length, "big")


def os2ip(data: bytes) -> int:
    """RFC 8017 OS2IP: big-endian bytes as a non-negative integer."""
    return int.from_bytes(data, "big")


def mgf1_sha256(seed: bytes, mask_length: int) -> bytes:
    """RFC 8017 B.2.1 MGF1 with SHA-256: SHA256(seed || I2OSP(counter, 4)) blocks, truncated."""
    if mask_length < 0 or mask_length > HASH_LENGTH << 32:
        raise VRFError(f"MGF1 mask length {mask_length} out of range")
    blocks = [
        hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        for counter in range(-(-mask_length // HASH_LENGTH))
    ]
    return b"".join(blocks)[:mask_length]


def _check_modulus_shape(modulus: int) -> None:
    length = (modulus.bit_length() + 7) // 8
    if not MIN_MODULUS_BYTES <= length <= MAX_MODULUS_BYTES:
        raise VRFError(
            f"RSA modulus is {length} bytes; VRF keys must be {MIN_MODULUS_BYTES}..{MAX_MODULUS_BYTES}"
            f" bytes (the protocol uses {DEFAULT_MODULUS_BITS}-bit keys)"
        )
    if modulus % 2 == 0:
        raise VRFError("RSA modulus is even; it must be a product of odd primes")


@dataclass(frozen=True)
class VRFPublicKey:
    """An RSA public key (n, e) used as a VRF verification key."""

    modulus: int
    exponent: int = PUBLIC_EXPONENT

    def __post_init__(self) -> None:
        _check_modulus_shape(self.modulus)
        if self.exponent < 3 or self.exponent % 2 == 0 or self.exponent >= self.modulus:
            raise VRFError(f"RSA public exponent {self.exponent} is invalid; use {PUBLIC_EXPONENT}")

    @property
    def byte_length(self) -> int:
        """``k`` of RFC 9381: the length of the modulus in bytes (and of every proof)."""
        return (self.modulus.bit_length() + 7) // 8

    def modulus_bytes(self) -> bytes:
        """I2OSP(n, k): how the registry stores the key (e is fixed to 65537 there)."""
        return i2osp(self.modulus, self.byte_length)

    @classmethod
    def from_modulus_bytes(cls, data: bytes) -> VRFPublicKey:
        """Parse I2OSP(n, k) as stored on chain; the encoding must be minimal (no leading zero)."""
        if not data or data[0] == 0:
            raise VRFError("VRF modulus bytes are empty or have a leading zero byte; expected I2OSP(n, k)")
        return cls(os2ip(data))


@dataclass(frozen=True, repr=False)
class VRFPrivateKey:
    """An RSA private key given by its two primes; the CRT values are derived once."""

    prime_p: int
    prime_q: int
    exponent: int = PUBLIC_EXPONENT
    public_key: VRFPublicKey = field(init=False)
    _d_p: int = field(init=False)
    _d_q: int = field(init=False)
    _q_inverse: int = field(init=False)

    def __post_init__(self) -> None:
        p, q = self.prime_p, self.prime_q
        if p == q or p < 3 or q < 3:
            raise VRFError("RSA private key needs two distinct odd primes")
        public_key = VRFPublicKey(p * q, self.exponent)
        try:
            d_p = pow(self.exponent, -1, p - 1)
            d_q = pow(self.exponent, -1, q - 1)
            q_inverse = pow(q, -1, p)
        except ValueError as exc:
            raise VRFError(f"RSA private key is inconsistent: {exc}") from None
        object.__setattr__(self, "public_key", public_key)
        object.__setattr__(self, "_d_p", d_p)
        object.__setattr__(self, "_d_q", d_q)
        object.__setattr__(self, "_q_inverse", q_inverse)

    def __repr__(self) -> str:  # never print the primes
        return f"VRFPrivateKey(<{self.public_key.modulus.bit_length()}-bit, secret>)"

    @property
    def modulus(self) -> int:
        return self.public_key.modulus

    def private_exponent(self) -> int:
        """d = e^-1 mod lcm(p-1, q-1)."""
        p, q = self.prime_p, self.prime_q
        return pow(self.exponent, -1, (p - 1) * (q - 1) // math.gcd(p - 1, q - 1))


def generate_private_key(bits: int = DEFAULT_MODULUS_BITS) -> VRFPrivateKey:
    """A fresh RSA key with e = 65537 (OpenSSL through ``cryptography``)."""
    if bits % 8 or not MIN_MODULUS_BYTES <= bits // 8 <= MAX_MODULUS_BYTES:
        raise VRFError(
            f"key size {bits} bits; use a multiple of 8 in {8 * MIN_MODULUS_BYTES}..{8 * MAX_MODULUS_BYTES}"
        )
    numbers = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits).private_numbers()
    return VRFPrivateKey(numbers.p, numbers.q, numbers.public_numbers.e)


def private_key_to_pem(key: VRFPrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (the node keeps it in a 0600 file)."""
    p, q, e = key.prime_p, key.prime_q, key.exponent
    d = key.private_exponent()
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes) -> VRFPrivateKey:
    """Load a key written by :func:`private_key_to_pem` (or any unencrypted RSA PEM)."""
    if len(data) > MAX_PEM_BYTES:
        raise VRFError(f"VRF key file is {len(data)} bytes; a PEM RSA key is under {MAX_PEM_BYTES}")
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise VRFError(f"VRF key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise VRFError("VRF key must be an RSA key; generate one with protocol.vrf.generate_private_key")
    numbers = loaded.private_numbers()
    return VRFPrivateKey(numbers.p, numbers.q, numbers.public_numbers.e)


def rsasp1(key: VRFPrivateKey, message: int) -> int:
    """RFC 8017 RSASP1 (s = m^d mod n) via the CRT, checked by re-encrypting.

    The check costs one small exponentiation and stops a faulty computation from ever
    publishing a wrong root (which would reveal a factor of n).
    """
    n = key.modulus
    if not 0 <= message < n:
        raise VRFError("message representative out of range (RSASP1)")
    s_p = pow(message, key._d_p, key.prime_p)
    s_q = pow(message, key._d_q, key.prime_q)
    s = s_q + key.prime_q * ((key._q_inverse * (s_p - s_q)) % key.prime_p)
    if pow(s, key.exponent, n) != message:
        raise VRFError("RSA signing self-check failed; the private key is corrupt")
    return s


def rsavp1(key: VRFPublicKey, signature: int) -> int:
    """RFC 8017 RSAVP1 (m = s^e mod n); s must lie in [0, n - 1]."""
    if not 0 <= signature < key.modulus:
        raise VRFError("signature representative out of range (RSAVP1)")
    return pow(signature, key.exponent, key.modulus)


def mgf_salt(key: VRFPublicKey) -> bytes:
    """MGF_salt = I2OSP(k, 4) || I2OSP(n, k) (RFC 9381 section 4.4)."""
    return i2osp(key.byte_length, 4) + key.modulus_bytes()


def _check_alpha(alpha: bytes) -> None:
    if len(alpha) > MAX_ALPHA_BYTES:
        raise VRFError(f"VRF input is {len(alpha)} bytes; at most {MAX_ALPHA_BYTES} allowed")


def encode_to_message(key: VRFPublicKey, alpha: bytes) -> int:
    """OS2IP(EM) with EM = MGF1(suite || 0x01 || MGF_salt || alpha, k - 1); always < n."""
    _check_alpha(alpha)
    seed = SUITE_STRING + MGF_DOMAIN_SEPARATOR + mgf_salt(key) + alpha
    return os2ip(mgf1_sha256(seed, key.byte_length - 1))


def prove(key: VRFPrivateKey, alpha: bytes) -> bytes:
    """RSAFDHVRF_prove (RFC 9381 section 4.1): the k-byte proof pi for ``alpha``."""
    public = key.public_key
    return i2osp(rsasp1(key, encode_to_message(public, alpha)), public.byte_length)


def proof_to_hash(pi: bytes) -> bytes:
    """RSAFDHVRF_proof_to_hash (section 4.2). Only meaningful for a proof that verified."""
    return hashlib.sha256(SUITE_STRING + PROOF_TO_HASH_DOMAIN_SEPARATOR + pi).digest()


def verify(key: VRFPublicKey, alpha: bytes, pi: bytes) -> bytes:
    """RSAFDHVRF_verify (section 4.3): beta if ``pi`` is the proof for ``alpha``, else VRFError.

    ``pi`` must be exactly k bytes: OS2IP ignores leading zeros, so a longer encoding of the
    same integer would pass the RSA check yet hash to a different beta.
    """
    if len(pi) != key.byte_length:
        raise VRFError(f"VRF proof is {len(pi)} bytes; a proof for this key is {key.byte_length}")
    if rsavp1(key, os2ip(pi)) != encode_to_message(key, alpha):
        raise VRFError("VRF proof does not match this key and input")
    return proof_to_hash(pi)
