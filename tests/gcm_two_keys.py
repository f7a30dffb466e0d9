"""The attacker's side of a non-committing AEAD: one AES-GCM ciphertext and tag that
authenticate under two keys chosen in advance ("invisible salamanders", Dodis et al. 2018;
the GCM construction of Len, Grubbs and Ristenpart 2021). Under the first key it opens to
the plaintext asked for, under the second to other bytes; both decryptions succeed.

GCM's tag is E_K(J0) xor GHASH_H(A, C) with H = E_K(0^128), a polynomial in H whose
coefficients are the blocks of A and C. Leaving one ciphertext block free, the two tags are
equal exactly when that block times (H1^e xor H2^e) equals a known value: one division in
GF(2^128). Arithmetic as in NIST SP 800-38D (blocks as 128-bit big-endian integers, bit 0 the
leftmost). `sealed_by_hand` puts such content, or any other, in an envelope."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol import envelope as env

BLOCK = 16
_R = 0xE1 << 120


def gf_multiply(x: int, y: int) -> int:
    product, v = 0, y
    for bit in range(128):
        if (x >> (127 - bit)) & 1:
            product ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return product


def gf_power(x: int, exponent: int) -> int:
    result = 1 << 127  # the field's one: the polynomial 1 is the leftmost bit
    while exponent:
        if exponent & 1:
            result = gf_multiply(result, x)
        x = gf_multiply(x, x)
        exponent >>= 1
    return result


def gf_inverse(x: int) -> int:
    if x == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^128)")
    return gf_power(x, (1 << 128) - 2)


def _aes_block(key: bytes, block: bytes) -> int:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return int.from_bytes(encryptor.update(block) + encryptor.finalize(), "big")


def _blocks(data: bytes) -> list[int]:
    padded = data + bytes(-len(data) % BLOCK)
    return [int.from_bytes(padded[i : i + BLOCK], "big") for i in range(0, len(padded), BLOCK)]


def _ghash(h: int, blocks: list[int]) -> int:
    y = 0
    for block in blocks:
        y = gf_multiply(y ^ block, h)
    return y


def _counter_block(nonce: bytes, counter: int) -> bytes:
    return nonce + counter.to_bytes(4, "big")


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (length + BLOCK - 1) // BLOCK
    return b"".join(
        _aes_block(key, _counter_block(nonce, 2 + i)).to_bytes(BLOCK, "big") for i in range(blocks)
    )[:length]


def two_key_ciphertext(
    first_key: bytes, second_key: bytes, nonce: bytes, plaintext: bytes,
    associated_data: bytes, free_blocks: Iterable[int] = (0,),
    fits: Callable[[int, bytes], bool] = lambda index, block: True,
) -> bytes:
    """Ciphertext + tag that AES-GCM accepts under both keys (a 12-byte `nonce`, the same
    associated data). Under `first_key` it opens to `plaintext` but for one whole 16-byte
    block, which the construction sets: the first of `free_blocks` (indices of whole blocks
    of `plaintext`) whose new bytes `fits(index, block)` accepts. Under `second_key` it
    opens to other bytes."""
    if len(nonce) != 12:
        raise ValueError("GCM with a 12-byte nonce")
    ciphertext = bytearray(
        p ^ k for p, k in zip(plaintext, _keystream(first_key, nonce, len(plaintext)), strict=True)
    )
    lengths = (len(associated_data) * 8 << 64) | (len(plaintext) * 8)
    ad_blocks = _blocks(associated_data)
    blocks = [*ad_blocks, *_blocks(bytes(ciphertext)), lengths]
    h1, h2 = _aes_block(first_key, bytes(BLOCK)), _aes_block(second_key, bytes(BLOCK))
    mask1 = _aes_block(first_key, _counter_block(nonce, 1))
    mask2 = _aes_block(second_key, _counter_block(nonce, 1))
    ghash1 = _ghash(h1, blocks)
    difference = mask1 ^ mask2 ^ ghash1 ^ _ghash(h2, blocks)  # the tags' difference as it is
    for index in free_blocks:
        if not 0 <= index < len(plaintext) // BLOCK:
            raise ValueError(f"block {index} is not a whole block of the plaintext")
        # changing ciphertext block `index` by delta changes the difference by delta x
        # (H1^e xor H2^e), e its power of H in the polynomial
        exponent = len(blocks) - (len(ad_blocks) + index)
        power1 = gf_power(h1, exponent)
        delta = gf_multiply(difference, gf_inverse(power1 ^ gf_power(h2, exponent)))
        span = slice(index * BLOCK, (index + 1) * BLOCK)
        block = (int.from_bytes(plaintext[span], "big") ^ delta).to_bytes(BLOCK, "big")
        if fits(index, block):
            changed = int.from_bytes(ciphertext[span], "big") ^ delta
            ciphertext[span] = changed.to_bytes(BLOCK, "big")
            tag = mask1 ^ ghash1 ^ gf_multiply(delta, power1)
            return bytes(ciphertext) + tag.to_bytes(BLOCK, "big")
    raise ValueError("no block of the plaintext fits")


def sealed_by_hand(
    plaintext_size: int,
    wraps: Sequence[tuple[bytes, bytes]],
    committed_key: bytes,
    associated_data: bytes,
    content: Callable[[bytes, bytes], bytes],
    spoiled: bytes | None = None,
) -> bytes:
    """An envelope in `protocol.envelope`'s format built as a dishonest sender would:
    `wraps` (recipient public key, the key wrapped for it) need not all be the key the
    header commits to (`committed_key`); `content(nonce, its associated data)` makes the
    ciphertext and tag of `plaintext_size` bytes; `spoiled`: a recipient whose wrapped key
    gets one byte flipped. The header, every entry included, is the content's associated
    data, as in any envelope."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    nonce = os.urandom(env.NONCE_SIZE)
    parts = [
        env._PREFIX.pack(env.MAGIC, env.VERSION, len(wraps)), ephemeral_public, nonce,
        env.key_commitment(committed_key),
    ]
    for public, key in wraps:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        wrap = AESGCM(env._wrapping_key(shared, ephemeral_public, public))
        wrapped = bytearray(wrap.encrypt(env._WRAP_NONCE, key, ephemeral_public))
        if public == spoiled:
            wrapped[5] ^= 0x01
        parts += [public, bytes(wrapped)]
    parts.append(env._LENGTH.pack(plaintext_size + env.TAG_SIZE))
    header = b"".join(parts)
    return header + content(nonce, header + associated_data)
