"""Committee sortition: who validates round r, decided by each validator's VRF.

Seeds (byte layouts are Solidity's ``abi.encodePacked``, so ``VRF.sol`` computes the same):

    seed_0 = keccak256(SEED_DOMAIN || uint256 chainId || address task || bytes32 paramsHash)
    seed_r = keccak256(bytes32 seed_{r-1} || uint256 r || uint256 prevrandao_r)    (r >= 1)

``paramsHash`` is the task's commitment to its initial parameters (whatever the Task
contract hashes at creation); ``prevrandao_r`` is ``block.prevrandao`` of the block that
starts round r, unknown when round r - 1 begins, so nobody can steer the seed far ahead.

Validator i evaluates its VRF on ``alpha = seed_r || uint256 r`` (64 bytes) and sits on
the committee iff ``beta / 2^256 < min(1, tau * w_i / W)``, evaluated exactly as
``int(beta) * W < tau * w_i * 2^256`` (the cap at 1 is implied: beta < 2^256).  Its
expected number of seats is ``min(1, tau * w_i / W)``, so the committee has ``tau``
members on average when no validator holds more than W / tau of the stake.

Splitting a stake w over identities w_1 + ... + w_j = w yields sum(min(1, tau * w_l / W))
expected seats.  While ``tau * w <= W`` that equals one identity's ``tau * w / W``:
splitting gains nothing.  Above that, one identity is capped at one seat per round and
splitting recovers seats up to, never beyond, the proportional share ``tau * w / W``.

Partial participation: worker w trains in round r iff ``workers_per_round == 0`` (everyone)
or ``uint256(keccak256(seed_r || address w)) % n_workers < workers_per_round``, the same
expression ``Task.sol`` checks, so anyone recomputes the round's workers from the seed.  Each
worker is drawn independently with probability ``workers_per_round / n_workers``: the round
has ``workers_per_round`` workers on average, not exactly (possibly none in a small task).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_hash.auto import keccak

from protocol import vrf
from protocol.errors import VRFError
from protocol.keycert import ADDRESS_BYTES, CertifiedKey

SEED_DOMAIN = b"fl-node/sortition/seed/v1"
SEED_BYTES = 32
UINT256_LIMIT = 1 << 256


def _uint256(value: int, name: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value < UINT256_LIMIT:
        raise VRFError(f"{name} must be an integer in [0, 2^256); got {value!r}")
    return value.to_bytes(32, "big")


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise VRFError(f"sortition seed must be {SEED_BYTES} bytes; got {seed!r:.80}")


def initial_seed(chain_id: int, task_address: bytes, params_hash: bytes) -> bytes:
    """seed_0 of a task: binds the chain, the task contract and its initial parameters."""
    if len(task_address) != ADDRESS_BYTES:
        raise VRFError(f"task address must be {ADDRESS_BYTES} bytes; got {len(task_address)}")
    if len(params_hash) != 32:
        raise VRFError(f"task parameter hash must be 32 bytes; got {len(params_hash)}")
    return keccak(SEED_DOMAIN + _uint256(chain_id, "chain id") + bytes(task_address) + bytes(params_hash))


def next_seed(previous_seed: bytes, round_number: int, prevrandao: int) -> bytes:
    """seed_r from seed_{r-1}, the round number r and prevrandao at the start of round r."""
    _check_seed(previous_seed)
    return keccak(previous_seed + _uint256(round_number, "round") + _uint256(prevrandao, "prevrandao"))


def round_alpha(seed: bytes, round_number: int) -> bytes:
    """The VRF input of a round: seed_r || uint256(r)."""
    _check_seed(seed)
    return seed + _uint256(round_number, "round")


def is_selected(beta: bytes, tau: int, stake: int, total_stake: int) -> bool:
    """beta / 2^256 < min(1, tau * stake / total_stake), in exact integer arithmetic."""
    if len(beta) != vrf.HASH_LENGTH:
        raise VRFError(f"VRF output must be {vrf.HASH_LENGTH} bytes; got {len(beta)}")
    _uint256(tau, "committee size tau")
    _uint256(stake, "stake")
    _uint256(total_stake, "total stake")
    if tau == 0:
        raise VRFError("committee size tau must be at least 1")
    if total_stake == 0:
        raise VRFError("total stake is 0: nobody can be selected until validators stake")
    if stake > total_stake:
        raise VRFError(f"stake {stake} exceeds the total stake {total_stake}; use the round's snapshot")
    return int.from_bytes(beta, "big") * total_stake < tau * stake * UINT256_LIMIT


def worker_selected(seed: bytes, worker: bytes, workers_per_round: int, n_workers: int) -> bool:
    """Whether ``worker`` (a 20-byte address) trains in the round whose seed is ``seed``."""
    _check_seed(seed)
    if not isinstance(worker, bytes) or len(worker) != ADDRESS_BYTES:
        raise VRFError(f"worker address must be {ADDRESS_BYTES} bytes; got {worker!r:.80}")
    _uint256(workers_per_round, "workers per round")
    _uint256(n_workers, "number of workers")
    if workers_per_round == 0:
        return True
    if n_workers == 0:
        raise VRFError("workers_per_round is set but the task has no workers to draw from")
    return int.from_bytes(keccak(seed + worker), "big") % n_workers < workers_per_round


@dataclass(frozen=True)
class CommitteeTicket:
    """A validator's VRF evaluation for one round: the proof it publishes and its beta."""

    proof: bytes
    beta: bytes


def committee_proof(key: vrf.VRFPrivateKey, seed: bytes, round_number: int) -> CommitteeTicket:
    """Evaluate our VRF for round ``round_number``; whether we sit follows from is_selected."""
    proof = vrf.prove(key, round_alpha(seed, round_number))
    return CommitteeTicket(proof=proof, beta=vrf.proof_to_hash(proof))


@dataclass(frozen=True)
class RegisteredKey:
    """A VRF modulus as the registry holds it for ``owner``: the registry verified its
    certificate when it was registered, so it stands for a CertifiedKey of that owner."""

    modulus: int
    owner: bytes

    @property
    def public_key(self) -> vrf.VRFPublicKey:
        return vrf.VRFPublicKey(self.modulus, vrf.PUBLIC_EXPONENT)


def verify_committee_member(
    key: CertifiedKey | RegisteredKey,
    seed: bytes,
    round_number: int,
    proof: bytes,
    stake: int,
    total_stake: int,
    tau: int,
) -> bytes:
    """Check a claimed committee seat; return the member's beta or raise VRFError.

    ``key`` must be a :class:`CertifiedKey` (its certificate checked when it was built) or
    a :class:`RegisteredKey` read from the registry: a bare modulus could be one with
    several valid proofs per round.
    """
    beta = _verified_beta(key, seed, round_number, proof)
    if not is_selected(beta, tau, stake, total_stake):
        raise VRFError(
            f"validator {key.owner.hex()} is not on the committee of round {round_number}"
            f" (stake {stake} of {total_stake}, tau {tau})"
        )
    return beta


def verify_unseated(
    key: CertifiedKey | RegisteredKey,
    seed: bytes,
    round_number: int,
    proof: bytes,
    stake: int,
    total_stake: int,
    tau: int,
) -> bytes:
    """Check a claim that a validator is NOT on round ``round_number``'s committee (what
    ``VRF.verifySeat(..., seated=false)`` checks in ``Task.endCommitPhase``): its proof is
    valid under its key and its beta is at or above its threshold. The proof is unique, so
    a seated validator has none that passes. Returns the beta or raises VRFError."""
    beta = _verified_beta(key, seed, round_number, proof)
    if is_selected(beta, tau, stake, total_stake):
        raise VRFError(
            f"validator {key.owner.hex()} is on the committee of round {round_number}"
            f" (stake {stake} of {total_stake}, tau {tau}): its proof shows it seated"
        )
    return beta


def _verified_beta(
    key: CertifiedKey | RegisteredKey, seed: bytes, round_number: int, proof: bytes
) -> bytes:
    if not isinstance(key, CertifiedKey | RegisteredKey):
        raise VRFError(
            "VRF key is not certified; build a protocol.keycert.CertifiedKey from the registry's"
            f" modulus, owner and certificate first (got {type(key).__name__})"
        )
    return vrf.verify(key.public_key, round_alpha(seed, round_number), proof)
