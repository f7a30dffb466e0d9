"""Sybil validators: one owner's stake spread over several identities, to win more
committee seats (and so more pay and more votes) than the stake would as one identity.

With VRF sortition (`protocol.sortition`) identity i sits on round r's committee iff
beta_i / 2^256 < min(1, tau * w_i / W), so its expected seats per round are
min(1, tau * w_i / W), and stake w split as w_1 + ... + w_k = w expects
sum_l min(1, tau * w_l / W) seats (`expected_seats`). While tau * w <= W each term is
uncapped and the sum is tau * w / W, exactly one identity's: splitting gains nothing. A
stake above W / tau is capped at one seat per round as one identity; split, it recovers
up to, never beyond, its proportional share tau * w / W. So identities buy seats only in
proportion to stake, as honest validators' do.

On chain no identity stakes less than the task's minimum: `Task.joinAsValidator` takes
`validatorStake` to `MAX_STAKE` per identity (StakeOutOfRange otherwise), so k identities
cost at least k minimum stakes, each slashed a fraction of its own stake. What several identities of one owner can still do is
vote together: that is the `colluding` validator attack, bounded by the honest majority
of the stake that the consensus assumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

__all__ = ["expected_seats", "split_stake"]


def split_stake(stake: int, identities: int) -> tuple[int, ...]:
    """`stake` over `identities` equal parts (the remainder, at most identities - 1 wei,
    on the first ones)."""
    if identities < 1 or stake < identities:
        raise ValueError(f"cannot split a stake of {stake} over {identities} identities")
    share, rest = divmod(stake, identities)
    return tuple(share + (1 if i < rest else 0) for i in range(identities))


def expected_seats(stakes: Sequence[int], tau: int, total_stake: int) -> Fraction:
    """Expected committee seats per round of identities with these stakes, exactly:
    sum of min(1, tau * w / W), the probability `protocol.sortition.is_selected` gives."""
    if tau < 1 or total_stake < 1 or any(w < 0 for w in stakes) or sum(stakes) > total_stake:
        raise ValueError(
            f"need tau >= 1, W >= 1 and stakes >= 0 summing to at most W; got tau={tau}, "
            f"W={total_stake}, stakes summing to {sum(stakes)}"
        )
    return sum((min(Fraction(1), Fraction(tau * w, total_stake)) for w in stakes), Fraction(0))
