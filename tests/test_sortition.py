"""Sortition: seed chain, exact selection rule, committee statistics, refused claims."""

import math
import random
from fractions import Fraction

import pytest
from eth_abi.packed import encode_packed
from eth_utils import keccak

from protocol import keycert, sortition, vrf
from protocol.errors import VRFError
from protocol.limits import MAX_STAKE
from tests.vrf_test_keys import honest_keys

ROUNDS = 1000
CHAIN_ID = 31337
TASK = bytes.fromhex("d9145cce52d386f254917e481eb44e9943f39138")
PARAMS_HASH = keccak(b"task parameters")
OWNER = bytes.fromhex("5b38da6a701c568545dcfcb03fcb875f56beddc4")
SIMULATED_IDENTITIES = 11


def _seed_chain(rounds: int) -> list[bytes]:
    """seed_0 .. seed_rounds with prevrandao drawn from a fixed RNG."""
    randao = random.Random(20240605)
    seeds = [sortition.initial_seed(CHAIN_ID, TASK, PARAMS_HASH)]
    for round_number in range(1, rounds + 1):
        seeds.append(sortition.next_seed(seeds[-1], round_number, randao.getrandbits(256)))
    return seeds


@pytest.fixture(scope="module")
def betas() -> list[list[bytes]]:
    """betas[r - 1][i]: identity i's verified VRF output in round r, for 1000 rounds."""
    keys = honest_keys()[:SIMULATED_IDENTITIES]
    seeds = _seed_chain(ROUNDS)
    table = []
    for round_number in range(1, ROUNDS + 1):
        row = []
        for key in keys:
            ticket = sortition.committee_proof(key, seeds[round_number], round_number)
            alpha = sortition.round_alpha(seeds[round_number], round_number)
            assert vrf.verify(key.public_key, alpha, ticket.proof) == ticket.beta
            row.append(ticket.beta)
        table.append(row)
    return table


def _seats(betas: list[list[bytes]], identities: range, stake: int, total: int, tau: int) -> int:
    return sum(
        sortition.is_selected(row[i], tau, stake, total) for row in betas for i in identities
    )


def test_seed_layouts_match_abi_encode_packed() -> None:
    seed0 = sortition.initial_seed(CHAIN_ID, TASK, PARAMS_HASH)
    assert seed0 == keccak(
        encode_packed(
            ["bytes", "uint256", "address", "bytes32"],
            [sortition.SEED_DOMAIN, CHAIN_ID, "0x" + TASK.hex(), PARAMS_HASH],
        )
    )
    seed1 = sortition.next_seed(seed0, 1, 2**255 + 7)
    assert seed1 == keccak(encode_packed(["bytes32", "uint256", "uint256"], [seed0, 1, 2**255 + 7]))
    assert sortition.round_alpha(seed1, 1) == encode_packed(["bytes32", "uint256"], [seed1, 1])
    assert sortition.next_seed(seed0, 1, 8) != sortition.next_seed(seed0, 1, 9)
    assert sortition.next_seed(seed0, 2, 8) != sortition.next_seed(seed0, 1, 8)


def test_seed_inputs_are_validated() -> None:
    with pytest.raises(VRFError, match="32 bytes"):
        sortition.next_seed(b"short", 1, 0)
    with pytest.raises(VRFError, match="round"):
        sortition.next_seed(bytes(32), -1, 0)
    with pytest.raises(VRFError, match="prevrandao"):
        sortition.next_seed(bytes(32), 1, 2**256)
    with pytest.raises(VRFError, match="task address"):
        sortition.initial_seed(CHAIN_ID, TASK[:19], PARAMS_HASH)


def test_is_selected_is_exact_at_the_threshold() -> None:
    # Threshold 1/2: beta < 2^255.
    assert sortition.is_selected((2**255 - 1).to_bytes(32, "big"), 1, 1, 2)
    assert not sortition.is_selected((2**255).to_bytes(32, "big"), 1, 1, 2)
    # Threshold 1/3 is not a binary fraction: floor(2^256 / 3) is in, one more is out.
    third = 2**256 // 3
    assert sortition.is_selected(third.to_bytes(32, "big"), 1, 1, 3)
    assert not sortition.is_selected((third + 1).to_bytes(32, "big"), 1, 1, 3)
    # Huge stakes: tau * w overflows 256 bits yet the comparison stays exact.
    total = 2**256 - 1
    assert sortition.is_selected(b"\xff" * 32, 2**255, total, total)
    assert not sortition.is_selected(b"\x00" * 32, 5, 0, total)
    # min(1, .) : tau * w >= W selects every beta.
    assert sortition.is_selected(b"\xff" * 32, 3, 40, 100)
    assert not sortition.is_selected(b"\xff" * 32, 2, 40, 100)


@pytest.mark.parametrize(
    ("beta", "tau", "stake", "total", "message"),
    [
        (b"\x00" * 31, 1, 1, 1, "32 bytes"),
        (b"\x00" * 32, 0, 1, 1, "at least 1"),
        (b"\x00" * 32, 1, 1, 0, "total stake is 0"),
        (b"\x00" * 32, 1, 2, 1, "exceeds the total"),
        (b"\x00" * 32, 1, -1, 1, "stake must be"),
        (b"\x00" * 32, 2**256, 1, 1, "tau must be"),
    ],
)
def test_is_selected_refuses_bad_parameters(
    beta: bytes, tau: int, stake: int, total: int, message: str
) -> None:
    with pytest.raises(VRFError, match=message):
        sortition.is_selected(beta, tau, stake, total)


def test_committee_size_averages_tau_over_1000_rounds(betas: list[list[bytes]]) -> None:
    stakes = list(range(1, SIMULATED_IDENTITIES + 1))  # unequal stakes 1..11, W = 66
    total, tau = sum(stakes), 4
    probabilities = [min(Fraction(1), Fraction(tau * w, total)) for w in stakes]
    assert sum(probabilities) == tau  # nobody is capped, so E[size] is exactly tau
    sizes = [
        sum(sortition.is_selected(row[i], tau, w, total) for i, w in enumerate(stakes))
        for row in betas
    ]
    mean = sum(sizes) / ROUNDS
    assert abs(mean - tau) <= 0.05 * tau, f"mean committee size {mean}"
    # The per-identity frequencies follow the stakes (5 standard deviations each).
    for i, p in enumerate(probabilities):
        hits = sum(sortition.is_selected(row[i], tau, stakes[i], total) for row in betas)
        assert abs(hits - ROUNDS * p) <= 5 * math.sqrt(ROUNDS * p * (1 - p)), (i, hits)


def test_a_capped_whale_sits_every_round_and_the_committee_shrinks(betas: list[list[bytes]]) -> None:
    """Unequal stakes with one above W / tau: its threshold is 1 (it sits every round), so the
    committee averages sum(min(1, tau * w / W)) < tau, not tau."""
    stakes = [1, 1, 1, 2, 2, 3, 3, 5, 8, 13, 30]  # W = 69; tau * 30 / 69 > 1
    total, tau = sum(stakes), 4
    probabilities = [min(Fraction(1), Fraction(tau * w, total)) for w in stakes]
    expected = sum(probabilities)
    assert probabilities[-1] == 1 and expected < tau
    sizes = [
        sum(sortition.is_selected(row[i], tau, w, total) for i, w in enumerate(stakes))
        for row in betas
    ]
    variance = sum(p * (1 - p) for p in probabilities)
    assert abs(sum(sizes) - ROUNDS * expected) <= 5 * math.sqrt(ROUNDS * variance)
    assert _seats(betas, range(10, 11), 30, total, tau) == ROUNDS


def test_is_selected_is_exact_at_the_chains_largest_stakes() -> None:
    """256 validators of MAX_STAKE (the most Task accepts): W = 2^120, and the threshold
    floor(tau * w * 2^256 / W) is still decided to the unit."""
    total, stake, tau = 256 * MAX_STAKE, MAX_STAKE, 7
    threshold = tau * stake * 2**256 // total  # 7/256 of 2^256, exactly
    assert sortition.is_selected((threshold - 1).to_bytes(32, "big"), tau, stake, total)
    assert not sortition.is_selected(threshold.to_bytes(32, "big"), tau, stake, total)
    odd = total - 1  # not a power of two: the floor matters
    edge = tau * stake * 2**256 // odd
    assert sortition.is_selected(edge.to_bytes(32, "big"), tau, stake, odd)
    assert not sortition.is_selected((edge + 1).to_bytes(32, "big"), tau, stake, odd)


def test_splitting_stake_over_ten_identities_gains_no_seats(betas: list[list[bytes]]) -> None:
    total, tau, whale = 100, 4, 20
    single = min(Fraction(1), Fraction(tau * whale, total))
    split = sum(min(Fraction(1), Fraction(tau * (whale // 10), total)) for _ in range(10))
    assert single == split == Fraction(4, 5)  # exactly equal expectations
    single_seats = _seats(betas, range(0, 1), whale, total, tau)
    split_seats = _seats(betas, range(1, 11), whale // 10, total, tau)
    p_part = Fraction(tau * (whale // 10), total)
    assert abs(single_seats - ROUNDS * single) <= 4 * math.sqrt(ROUNDS * single * (1 - single))
    assert abs(split_seats - ROUNDS * split) <= 4 * math.sqrt(10 * ROUNDS * p_part * (1 - p_part))


def test_splitting_a_capped_stake_never_exceeds_the_proportional_share(
    betas: list[list[bytes]],
) -> None:
    # tau * w > W: one identity is capped at one seat a round; ten identities get 1.6 on
    # average, which is exactly the proportional share tau * w / W, never more.
    total, tau, whale = 100, 8, 20
    share = Fraction(tau * whale, total)
    split = sum(min(Fraction(1), Fraction(tau * (whale // 10), total)) for _ in range(10))
    assert split == share == Fraction(8, 5)
    assert _seats(betas, range(0, 1), whale, total, tau) == ROUNDS  # always selected
    p_part = Fraction(tau * (whale // 10), total)
    split_seats = _seats(betas, range(1, 11), whale // 10, total, tau)
    assert abs(split_seats - ROUNDS * share) <= 4 * math.sqrt(10 * ROUNDS * p_part * (1 - p_part))


@pytest.fixture(scope="module")
def member() -> tuple[vrf.VRFPrivateKey, keycert.CertifiedKey]:
    key = honest_keys()[0]
    return key, keycert.CertifiedKey(key.modulus, OWNER, keycert.certify(key, OWNER))


def test_selected_member_verifies(member: tuple[vrf.VRFPrivateKey, keycert.CertifiedKey]) -> None:
    key, certified = member
    seed = _seed_chain(3)[3]
    ticket = sortition.committee_proof(key, seed, 3)
    # Holding all the stake with tau = 1 selects every beta.
    assert sortition.verify_committee_member(certified, seed, 3, ticket.proof, 10, 10, 1) == ticket.beta


def test_forged_or_misdirected_proofs_are_refused(
    member: tuple[vrf.VRFPrivateKey, keycert.CertifiedKey],
) -> None:
    key, certified = member
    seeds = _seed_chain(4)
    ticket = sortition.committee_proof(key, seeds[3], 3)
    forged = bytearray(ticket.proof)
    forged[17] ^= 0x80
    with pytest.raises(VRFError, match="does not match"):
        sortition.verify_committee_member(certified, seeds[3], 3, bytes(forged), 10, 10, 1)
    with pytest.raises(VRFError, match="does not match"):  # proof for another seed
        sortition.verify_committee_member(certified, seeds[4], 3, ticket.proof, 10, 10, 1)
    with pytest.raises(VRFError, match="does not match"):  # proof for another round
        sortition.verify_committee_member(certified, seeds[3], 4, ticket.proof, 10, 10, 1)
    other = honest_keys()[1]
    with pytest.raises(VRFError, match="does not match"):  # someone else's proof
        sortition.verify_committee_member(
            certified, seeds[3], 3, sortition.committee_proof(other, seeds[3], 3).proof, 10, 10, 1
        )


def test_non_selected_validator_is_refused(
    member: tuple[vrf.VRFPrivateKey, keycert.CertifiedKey],
) -> None:
    key, certified = member
    seed = _seed_chain(1)[1]
    ticket = sortition.committee_proof(key, seed, 1)
    stake, total = 1, 2**200  # selected with probability 2^-200
    assert not sortition.is_selected(ticket.beta, 1, stake, total)
    with pytest.raises(VRFError, match="not on the committee of round 1"):
        sortition.verify_committee_member(certified, seed, 1, ticket.proof, stake, total, 1)


def test_uncertified_key_is_refused(member: tuple[vrf.VRFPrivateKey, keycert.CertifiedKey]) -> None:
    key, certified = member
    seed = _seed_chain(1)[1]
    proof = sortition.committee_proof(key, seed, 1).proof
    for uncertified in (key.modulus, key.public_key):
        with pytest.raises(VRFError, match="not certified"):
            sortition.verify_committee_member(uncertified, seed, 1, proof, 10, 10, 1)  # type: ignore[arg-type]
    with pytest.raises(VRFError, match="root 0 is wrong"):  # a certificate made for someone else
        keycert.CertifiedKey(key.modulus, bytes(20), certified.certificate)


WORKER = bytes.fromhex("ab8483f64d9c6d1ecf9b849ae677dd3315835cb2")


def test_worker_selection_is_soliditys_expression() -> None:
    # uint256(keccak256(abi.encodePacked(bytes32 seed, address w))) % nWorkers < workersPerRound
    seeds = _seed_chain(40)
    checked = 0
    for seed in seeds:
        digest = int.from_bytes(
            keccak(encode_packed(["bytes32", "address"], [seed, "0x" + WORKER.hex()])), "big"
        )
        for n_workers in (1, 7, 100):
            for per_round in (1, 3, 20, 99, 100, 150):
                expected = digest % n_workers < per_round
                assert sortition.worker_selected(seed, WORKER, per_round, n_workers) is expected
                checked += 1
    assert checked == len(seeds) * 18


def test_worker_selection_zero_means_everyone_and_cap_means_everyone() -> None:
    for seed in _seed_chain(20):
        assert sortition.worker_selected(seed, WORKER, 0, 100)
        assert sortition.worker_selected(seed, WORKER, 0, 0)
        assert sortition.worker_selected(seed, WORKER, 100, 100)
        assert sortition.worker_selected(seed, WORKER, 101, 100)


def test_workers_per_round_averages_the_parameter() -> None:
    # 100 workers, 20 per round, 200 rounds: the mean is 20 and every worker takes a share.
    seeds = _seed_chain(200)[1:]
    workers = [keccak(b"worker %d" % i)[:20] for i in range(100)]
    per_round = [
        sum(sortition.worker_selected(seed, w, 20, len(workers)) for w in workers) for seed in seeds
    ]
    mean = sum(per_round) / len(per_round)
    # Binomial(100, 0.2) per round: sd 4, the mean over 200 rounds has sd 0.28.
    assert abs(mean - 20) < 1.5
    assert min(per_round) < 20 < max(per_round)
    rounds_of = [sum(sortition.worker_selected(s, w, 20, 100) for s in seeds) for w in workers]
    # Each worker: Binomial(200, 0.2), mean 40, sd 5.7.
    assert all(10 < rounds for rounds in rounds_of)
    # Different rounds pick different sets.
    first = {w for w in workers if sortition.worker_selected(seeds[0], w, 20, 100)}
    second = {w for w in workers if sortition.worker_selected(seeds[1], w, 20, 100)}
    assert first != second


@pytest.mark.parametrize(
    ("seed", "worker", "per_round", "n_workers", "message"),
    [
        (b"\x00" * 31, WORKER, 1, 1, "32 bytes"),
        (b"\x00" * 32, WORKER[:19], 1, 1, "worker address must be 20 bytes"),
        (b"\x00" * 32, WORKER, -1, 1, "workers per round must be"),
        (b"\x00" * 32, WORKER, 1, -1, "number of workers must be"),
        (b"\x00" * 32, WORKER, 1, 0, "no workers to draw from"),
    ],
)
def test_worker_selection_refuses_bad_parameters(
    seed: bytes, worker: bytes, per_round: int, n_workers: int, message: str
) -> None:
    with pytest.raises(VRFError, match=message):
        sortition.worker_selected(seed, worker, per_round, n_workers)
