"""Sybil validators: a stake split over several identities expects no more committee
seats than as one identity while uncapped, and never more than its proportional share;
checked exactly (`expected_seats`) and by running the sortition with real VRF keys."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from node.attacks.sybil import expected_seats, split_stake
from protocol import vrf
from protocol.sortition import committee_proof, is_selected

STAKE = 2 * 10**18


def test_split_stake_sums_to_the_stake() -> None:
    assert split_stake(10, 3) == (4, 3, 3)
    assert sum(split_stake(7 * STAKE + 5, 4)) == 7 * STAKE + 5


@given(
    total=st.integers(10, 10**6),
    share=st.fractions(0, 1),
    identities=st.integers(1, 8),
    tau=st.integers(1, 12),
)
def test_splitting_gains_no_seats_beyond_the_proportional_share(
    total: int, share: Fraction, identities: int, tau: int
) -> None:
    stake = max(identities, int(total * share))
    if stake > total:
        return
    one = expected_seats([stake], tau, total)
    split = expected_seats(split_stake(stake, identities), tau, total)
    proportional = Fraction(tau * stake, total)
    assert split <= proportional
    if proportional <= 1:  # uncapped: the split is worth exactly the one identity
        assert split == one
    else:  # one identity is capped at a seat a round; a split recovers up to the share
        assert one == 1 <= split


@given(
    others=st.lists(st.integers(1, 10**6), min_size=1, max_size=10),
    parts=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
    tau=st.integers(1, 12),
)
def test_an_unequal_split_among_unequal_stakes_gains_nothing_while_uncapped(
    others: list[int], parts: list[int], tau: int
) -> None:
    """Validators stake unequal amounts (any amount from the task's minimum up): the
    attacker's stake, split in unequal parts, expects exactly one identity's seats while
    tau * w <= W, and never more than its proportional share."""
    stake = sum(parts)
    total = sum(others) + stake
    one = expected_seats([stake], tau, total)
    split = expected_seats(parts, tau, total)
    assert split <= Fraction(tau * stake, total)
    if tau * stake <= total:
        assert split == one


def seats(keys: list[vrf.VRFPrivateKey], stakes: list[int], tau: int, total: int, rounds: int) -> int:
    seed = b"\x5e" * 32
    return sum(
        is_selected(committee_proof(key, seed, r).beta, tau, stake, total)
        for r in range(1, rounds + 1)
        for key, stake in zip(keys, stakes, strict=True)
    )


def test_sortition_seats_a_split_stake_as_often_as_one_identity() -> None:
    """Real VRF proofs over 200 rounds: stake 2 of 10 stakes with tau = 3 (0.6 seats a
    round) as one identity and as three, and 5 of 10 (capped at 1 as one identity, 1.5
    when split, its proportional share)."""
    keys = [vrf.generate_private_key(1024) for _ in range(4)]
    rounds, tau, total = 200, 3, 10 * STAKE
    one = seats(keys[:1], [2 * STAKE], tau, total, rounds)
    split = seats(keys[1:], list(split_stake(2 * STAKE, 3)), tau, total, rounds)
    mean = float(expected_seats([2 * STAKE], tau, total)) * rounds  # 120
    # binomial spreads: sqrt(200 * .6 * .4) = 6.9 and sqrt(3 * 200 * .2 * .8) = 9.8
    assert abs(one - mean) < 5 * 6.9 and abs(split - mean) < 5 * 9.8
    capped_one = seats(keys[:1], [5 * STAKE], tau, total, rounds)
    capped_split = seats(keys[1:], list(split_stake(5 * STAKE, 3)), tau, total, rounds)
    assert capped_one == rounds  # min(1, 1.5): seated every round
    assert abs(capped_split - 1.5 * rounds) < 5 * (3 * rounds * 0.5 * 0.5) ** 0.5
