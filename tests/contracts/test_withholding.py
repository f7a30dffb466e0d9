"""Committees whose members judged different sets of updates: a worker that serves its update
to some validators and withholds it from others, and the validators that exploit what an
incomplete view excuses. Each round is settled by the reference and by RewardMath on chain,
which must agree to the wei, and then checked against what the round must decide.

Scores are relative to the set judged (protocol.work: agreement with the median of the other
updates judged), so an honest validator's numbers are a function of its view: VIEWS below.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from protocol.manifest import WorkerVerdict
from protocol.rewards import CommitteeMember, Policy, RewardPolicy, Settlement, settle_round
from tests.contracts.harness import ETHER, World, settle_on_chain

OK, NO, GONE = WorkerVerdict.ACCEPT, WorkerVerdict.REJECT, WorkerVerdict.UNAVAILABLE
TOLERANCE = 500
CLAIMS = [600, 600, 600]  # workers A, B, C
STAKE = 2 * ETHER

# An honest validator's WORK qualities for workers A, B, C given the workers it fetched (None:
# UNAVAILABLE). Missing one update moves the others' qualities by far more than TOLERANCE, as
# measured in bench.attacks (597,500 / 614,600 / 622,500 for one update).
FULL = (600_000, 610_000, 620_000)
VIEWS: dict[str, tuple[int | None, ...]] = {
    "ABC": FULL,
    "AC": (597_500, None, 622_500),
    "BC": (None, 614_600, 619_000),
    "AB": (598_000, 611_000, None),
}


def honest(view: str) -> CommitteeMember:
    scores = VIEWS[view]
    return CommitteeMember(
        True,
        tuple(s or 0 for s in scores),
        tuple(GONE if s is None else OK for s in scores),
        980_000,
        STAKE,
    )


def liar(
    scores: tuple[int, int, int], verdicts: tuple[WorkerVerdict, ...] = (OK, OK, OK)
) -> CommitteeMember:
    return CommitteeMember(True, scores, verdicts, 980_000, STAKE)


def policy(reward_policy: RewardPolicy = RewardPolicy.WORK) -> Policy:
    return Policy(
        worker_reward=ETHER + 7,
        validator_reward=10**17 + 3,
        worker_slash=5 * 10**16,
        slash_fraction_bps=500,
        tolerance=TOLERANCE,
        reward_policy=reward_policy,
        top_k=2,
    )


@dataclass(frozen=True)
class Case:
    name: str
    committee: tuple[CommitteeMember, ...]
    agreed: tuple[bool, ...]  # per member: paid for what it judged
    accepted: tuple[bool, bool, bool]
    consensus: tuple[int, int, int]
    slashed: tuple[bool, ...] | None = None  # None: the members that do not agree


HONEST_ROUND = (honest("ABC"),) * 3
CASES = [
    Case("all fetched everything", HONEST_ROUND, (True,) * 3, (True,) * 3, FULL),
    # (a) B withholds from one honest validator of three: its view is incomplete, so its
    # scores are not compared (they differ by 2,500 from the others'); nobody is slashed.
    Case(
        "B withheld from one of three",
        (honest("ABC"), honest("ABC"), honest("AC")),
        (True,) * 3, (True,) * 3, FULL,
    ),
    # B served to one validator only: B is outside the reference set (judged by 1 of 3), the
    # two without B are the complete ones and B is neither paid nor slashed.
    Case(
        "B served to one of three",
        (honest("ABC"), honest("AC"), honest("AC")),
        (True,) * 3, (True, False, True), (597_500, 610_000, 622_500),
    ),
    # Each validator misses a different update: nobody is complete, no score is checked.
    Case(
        "A, B and C each withheld from a different validator",
        (honest("BC"), honest("AC"), honest("AB")),
        (True,) * 3, (True,) * 3, (597_500, 611_000, 619_000),
    ),
    # (b) a complete liar that raises A and lowers C is outvoted by two equal honest scores.
    Case(
        "complete liar",
        (honest("ABC"), honest("ABC"), liar((900_000, 610_000, 300_000))),
        (True, True, False), (True,) * 3, FULL,
    ),
    # (c) a liar that marks B UNAVAILABLE to dodge the score check: unchecked, but its scores
    # move nothing (the consensus is the honest complete members'), ...
    Case(
        "liar incomplete by choice",
        (honest("ABC"), honest("ABC"), liar((900_000, 0, 300_000), (OK, GONE, OK))),
        (True,) * 3, (True,) * 3, FULL,
    ),
    # ... and a verdict lie costs it its pay, not its stake: an incomplete view is excused,
    # since an honest one's verdicts move with it too (next case).
    Case(
        "incomplete liar rejecting an accepted worker",
        (honest("ABC"), honest("ABC"), liar((900_000, 0, 300_000), (NO, GONE, OK))),
        (True, True, False), (True,) * 3, FULL, slashed=(False,) * 3,
    ),
    # An honest validator that missed B judges A against C alone; A near the WORK bound
    # fails there (bench.attacks' alie_colluding: an honest validator that fetched 8 of 10
    # updates rejected one the others accepted, and was slashed): excused.
    Case(
        "honest validator whose view flips a verdict",
        (honest("ABC"), honest("ABC"), liar((0, 0, 622_500), (NO, GONE, OK))),
        (True, True, False), (True,) * 3, FULL, slashed=(False,) * 3,
    ),
    # The same verdict from a complete view is a lie: slashed.
    Case(
        "complete validator rejecting an accepted worker",
        (honest("ABC"), honest("ABC"), liar((0, 610_000, 620_000), (NO, OK, OK))),
        (True, True, False), (True,) * 3, FULL,
    ),
    # A worker withholds from one honest validator while a second validator lowers A and C:
    # the complete judges are one honest and one liar, no majority of them agrees, so no score
    # is checked: the lower median drops to the liar's, and nobody is slashed.
    Case(
        "withholding worker and a lowering liar",
        (honest("ABC"), honest("AC"), liar((300_000, 610_000, 310_000))),
        (True,) * 3, (True,) * 3, (300_000, 610_000, 310_000),
    ),
]


def _settle(
    world: World, committee: tuple[CommitteeMember, ...], reward_policy: RewardPolicy
) -> Settlement:
    deposits = [ETHER] * 3
    expected = settle_round(policy(reward_policy), deposits, committee, CLAIMS)
    assert settle_on_chain(world, policy(reward_policy), deposits, CLAIMS, committee) == expected
    return expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("reward_policy", list(RewardPolicy), ids=[p.name for p in RewardPolicy])
def test_a_view_decides_only_what_it_can(
    world: World, case: Case, reward_policy: RewardPolicy
) -> None:
    settled = _settle(world, case.committee, reward_policy)
    assert settled.agreed == case.agreed
    slashed = case.slashed if case.slashed is not None else tuple(not a for a in case.agreed)
    assert settled.validator_slashes == tuple(STAKE * 500 // 10_000 if s else 0 for s in slashed)
    assert all(p == 0 for p, a in zip(settled.validator_payouts, case.agreed, strict=True) if not a)
    assert settled.accepted == case.accepted
    assert settled.consensus_scores == case.consensus
    assert not any(settled.worker_slashes)  # nobody rejected any worker


def test_an_incomplete_honest_view_is_outside_the_tolerance() -> None:
    """The scenarios above are the fault, not a tolerance question: the member that missed B
    would be slashed if its scores were held against the others'."""
    full, partial = FULL, VIEWS["AC"]
    assert abs(full[0] - (partial[0] or 0)) > TOLERANCE and abs(full[2] - (partial[2] or 0)) > TOLERANCE


def test_an_incomplete_liar_moves_no_pay_and_earns_only_for_what_it_judged(world: World) -> None:
    """(c), (d): marking one update UNAVAILABLE escapes the score check, but the workers are
    paid exactly as in the honest round, and the liar is paid for two workers of three."""
    dodger = liar((900_000, 0, 300_000), (OK, GONE, OK))
    dodged = _settle(world, (honest("ABC"), honest("ABC"), dodger), RewardPolicy.WORK)
    truthful = _settle(world, HONEST_ROUND, RewardPolicy.WORK)
    assert dodged.worker_payouts == truthful.worker_payouts
    assert dodged.judged == (3, 3, 2)
    v = policy().validator_reward
    assert dodged.validator_payouts == (v * 3 // 8, v * 3 // 8, v * 2 // 8)
    assert truthful.validator_payouts == (v // 3,) * 3


def test_a_lazy_guesser_behind_one_unavailable_update_risks_its_pay_not_its_stake(
    world: World,
) -> None:
    """The cheapest way around the excuse: measure nothing, mark one update UNAVAILABLE and
    ACCEPT the rest. When a majority rejects a worker it guessed wrong on, it earns nothing
    and keeps its stake; the round is decided exactly as without it; when everyone is
    accepted, it is paid for one worker less than an honest member."""
    guesser = liar((0, 0, 0), (OK, GONE, OK))
    rejecting_a = CommitteeMember(True, (0, 610_000, 620_000), (NO, OK, OK), 980_000, STAKE)
    wrong = _settle(world, (rejecting_a, rejecting_a, guesser), RewardPolicy.WORK)
    assert wrong.rejected == (True, False, False) and wrong.agreed == (True, True, False)
    assert wrong.validator_payouts[2] == 0 and wrong.validator_slashes == (0, 0, 0)
    alone = _settle(world, (rejecting_a, rejecting_a), RewardPolicy.WORK)
    assert wrong.worker_payouts == alone.worker_payouts
    assert wrong.worker_slashes == alone.worker_slashes
    right = _settle(world, (honest("ABC"), honest("ABC"), guesser), RewardPolicy.WORK)
    assert right.judged == (3, 3, 2) and right.validator_payouts[2] > 0
    assert right.worker_payouts == _settle(world, HONEST_ROUND, RewardPolicy.WORK).worker_payouts


def test_a_lowering_liar_behind_a_withholding_worker_shifts_pay_but_slashes_no_one(
    world: World,
) -> None:
    """The cheapest attack left: with an honest validator made incomplete, a liar and one
    honest member are the complete judges; the lower median takes the liar's lower scores,
    so B (the colluding worker) takes a larger share of the pool; nobody is slashed, and a
    raised score would not move the lower median at all."""
    lowering = liar((300_000, 610_000, 310_000))
    attacked = _settle(world, (honest("ABC"), honest("AC"), lowering), RewardPolicy.WORK)
    truthful = _settle(world, HONEST_ROUND, RewardPolicy.WORK)
    assert attacked.worker_payouts[1] > truthful.worker_payouts[1]
    assert not any(attacked.validator_slashes)
    raising = liar((900_000, 610_000, 900_000))
    raised = _settle(world, (honest("ABC"), honest("AC"), raising), RewardPolicy.WORK)
    assert raised.consensus_scores == FULL and raised.worker_payouts == truthful.worker_payouts
