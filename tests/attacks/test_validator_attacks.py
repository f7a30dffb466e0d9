"""Validator attacks, each against its definition, and what the consensus
(`protocol.rewards.settle_round`, the contract's reference) makes of them."""

from __future__ import annotations

from fractions import Fraction

import pytest

from node.attacks.validator import colluding, copied, favoured_worker, lying, placeholder
from protocol.fixedpoint import SCALE
from protocol.manifest import WorkerVerdict, manifest_commitment, to_verdicts
from protocol.rewards import CommitteeMember, Policy, RewardPolicy, settle_round

WORKERS = tuple(bytes([i]) * 20 for i in (7, 3, 9, 5))
HONEST_SCORES = (912_000, 905_000, 120_000, 897_000)  # worker 2 sent a bad update
HONEST_ACCEPTS = (True, True, False, True)
ETHER = 10**18
POLICY = Policy.for_task(
    worker_reward_per_round=3 * ETHER, validator_reward_per_round=ETHER,
    worker_deposit=ETHER, slash_fraction_bps=1000,
    tolerance=20_000, reward_policy=RewardPolicy.TOPK, top_k=4,
)


def member(scores: tuple[int, ...], accepts: tuple[bool, ...], revealed: bool = True) -> CommitteeMember:
    verdicts = to_verdicts(accepts) if revealed else ()
    return CommitteeMember(revealed, scores if revealed else (), verdicts, 950_000, 2 * ETHER)


def honest(jitter: int) -> CommitteeMember:
    """An honest member: the same evaluation up to a small measurement difference."""
    return member(tuple(s + jitter for s in HONEST_SCORES), HONEST_ACCEPTS)


def test_lying_turns_scores_upside_down_and_flips_every_verdict() -> None:
    scores, accepts = lying(HONEST_SCORES, HONEST_ACCEPTS)
    assert scores == tuple(SCALE // 10 - s for s in HONEST_SCORES)
    assert accepts == (False, False, True, False)


def test_colluders_favour_the_lowest_address_and_zero_the_rest() -> None:
    favoured = favoured_worker(WORKERS)
    assert favoured == bytes([3]) * 20
    scores, accepts = colluding(WORKERS, favoured)
    assert scores == (0, SCALE, 0, 0)
    assert accepts == (False, True, False, False)
    # every colluder computes the same columns from the on-chain order alone
    assert colluding(WORKERS, favoured_worker(tuple(reversed(WORKERS)))) == (scores, accepts)
    with pytest.raises(ValueError, match="did not submit"):
        colluding(WORKERS, bytes(20))


def test_copycat_commits_to_a_placeholder_and_copies_columns_verbatim() -> None:
    assert placeholder(WORKERS) == ((0, 0, 0, 0), (True, True, True, True))
    verdicts = tuple(int(WorkerVerdict.ACCEPT if a else WorkerVerdict.REJECT) for a in HONEST_ACCEPTS)
    assert copied(WORKERS, WORKERS, HONEST_SCORES, verdicts, 950_000) == (HONEST_SCORES, verdicts, 950_000)
    with pytest.raises(ValueError, match="other workers"):
        copied(WORKERS, WORKERS[:3], HONEST_SCORES[:3], verdicts[:3], 950_000)


def test_a_copied_reveal_cannot_open_the_copiers_commitment() -> None:
    """The commitment binds the committer: the copy of a revealed manifest opens the
    original's commitment only, never one the copier could have made before the reveal."""
    task, salt = b"\x11" * 20, b"\x22" * 32
    original, copier = b"\xaa" * 20, b"\xbb" * 20
    revealed = (WORKERS, HONEST_SCORES, HONEST_ACCEPTS, 950_000, salt)
    committed_by_original = manifest_commitment(task, 1, original, *revealed)
    copied_opening = manifest_commitment(task, 1, copier, *revealed)
    placeholder_commitment = manifest_commitment(task, 1, copier, WORKERS, *placeholder(WORKERS), 0, salt)
    assert copied_opening != committed_by_original
    assert copied_opening != placeholder_commitment


def test_one_liar_of_four_is_outvoted_unpaid_and_slashed() -> None:
    liar = member(*lying(HONEST_SCORES, HONEST_ACCEPTS))
    settled = settle_round(POLICY, [ETHER] * 4, [honest(0), honest(1_000), honest(-500), liar])
    assert settled.accepted == HONEST_ACCEPTS and settled.rejected == (False, False, True, False)
    assert settled.agreed == (True, True, True, False)
    assert settled.validator_payouts[3] == 0 and settled.validator_slashes[3] == POLICY.validator_slash(2 * ETHER)


@pytest.mark.parametrize("kind", ["lazy", "copycat"])
def test_a_member_that_commits_and_never_opens_is_unpaid_and_slashed(kind: str) -> None:
    """The lazy member drops its reveal; the copycat's copied reveal is refused
    (RevealMismatch), so on chain both committed and never revealed."""
    silent = member(HONEST_SCORES, HONEST_ACCEPTS, revealed=False)
    settled = settle_round(POLICY, [ETHER] * 4, [honest(0), honest(1_000), honest(-500), silent])
    assert settled.reveals == 3 and settled.accepted == HONEST_ACCEPTS
    assert settled.validator_payouts[3] == 0 and settled.validator_slashes[3] == POLICY.validator_slash(2 * ETHER)


def test_two_colluders_of_seven_do_not_move_the_consensus_and_are_slashed() -> None:
    columns = colluding(WORKERS, favoured_worker(WORKERS))
    committee = [honest(j) for j in (0, 700, -300, 1_200, -900)] + [member(*columns)] * 2
    settled = settle_round(POLICY, [ETHER] * 4, committee)
    alone = settle_round(POLICY, [ETHER] * 4, committee[:5])
    assert settled.accepted == alone.accepted == HONEST_ACCEPTS
    # the lower median of 7 scores with 2 outliers stays among the honest ones
    for j, score in enumerate(settled.consensus_scores):
        assert -900 <= score - HONEST_SCORES[j] <= 1_200
    assert settled.agreed == (True,) * 5 + (False, False)
    assert settled.validator_slashes[5:] == (POLICY.validator_slash(2 * ETHER),) * 2
    assert settled.validator_payouts[5:] == (0, 0)
    # the favoured worker gains nothing over the honest settlement
    favoured = WORKERS.index(favoured_worker(WORKERS))
    assert settled.worker_payouts[favoured] == alone.worker_payouts[favoured]


def test_a_placeholder_revealed_as_a_guess_is_judged_like_a_lie() -> None:
    """The copycat's fallback: revealing the all-accept, all-zero placeholder it committed.
    Under scores that are accuracies (topk) it is far outside the tolerance."""
    guess = member(*placeholder(WORKERS))
    settled = settle_round(POLICY, [ETHER] * 4, [honest(0), honest(1_000), honest(-500), guess])
    assert not settled.agreed[3] and settled.validator_slashes[3] == POLICY.validator_slash(2 * ETHER)


def test_the_placeholder_agrees_when_honest_scores_sit_near_zero() -> None:
    """Where the consensus scores are all within the tolerance of 0 and every worker is
    accepted (leave-one-out contributions of IID workers), the zero placeholder agrees and
    is paid without evaluating anything: the tolerance, not commit-reveal, is what a
    guesser must beat."""
    loo = (4_000, -6_000, 11_000, 2_000)
    accepts = (True,) * 4
    contribution = Policy(**{**POLICY.__dict__, "reward_policy": RewardPolicy.CONTRIBUTION})
    committee = [member(tuple(s + j for s in loo), accepts) for j in (0, 500, -500)]
    settled = settle_round(contribution, [ETHER] * 4, [*committee, member(*placeholder(WORKERS))])
    assert settled.agreed[3] and settled.validator_payouts[3] > 0
    assert Fraction(max(abs(s) for s in settled.consensus_scores), SCALE) < Fraction(POLICY.tolerance, SCALE)
