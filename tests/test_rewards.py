"""protocol/rewards.py and protocol/manifest.py: hand-computed cases and pure properties.
(Equality with the Solidity code is tested on chain in tests/contracts/test_properties.py.)"""

from __future__ import annotations

import dataclasses

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol.manifest import (
    MAX_ABS_SCORE,
    ManifestError,
    WorkerVerdict,
    check_manifest,
    manifest_commitment,
    update_commitment,
)
from protocol.rewards import (
    CommitteeMember,
    Policy,
    RewardError,
    RewardPolicy,
    complete_members,
    lower_median,
    settle_round,
    terminates,
)

A, B, C = b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20


def policy(**overrides: object) -> Policy:
    base = {
        "worker_reward": 1_000,
        "validator_reward": 100,
        "worker_slash": 50,
        "slash_fraction_bps": 400,  # 40 of a member's 1_000
        "tolerance": 0,
        "reward_policy": RewardPolicy.CONTRIBUTION,
        "top_k": 0,
    }
    base.update(overrides)
    return Policy(**base)  # type: ignore[arg-type]


def member(
    scores: tuple[int, ...],
    verdicts: tuple[WorkerVerdict | bool, ...],
    accuracy: int = 0,
    stake: int = 1_000,
) -> CommitteeMember:
    return CommitteeMember(True, scores, verdicts, accuracy, stake)  # type: ignore[arg-type]


OK, NO, GONE = WorkerVerdict.ACCEPT, WorkerVerdict.REJECT, WorkerVerdict.UNAVAILABLE


SILENT = CommitteeMember(False, (), (), 0, 1_000)


def test_lower_median() -> None:
    assert lower_median([3, 1, 2]) == 2
    assert lower_median([4, 1, 3, 2]) == 2  # even count: the lower of the two middles
    assert lower_median([-5]) == -5
    with pytest.raises(RewardError):
        lower_median([])


def test_contribution_split_with_remainder() -> None:
    committee = [member((3, 6, 0), (True, True, True)), member((3, 6, 0), (True, True, True))]
    out = settle_round(policy(), [500, 500, 500], committee)
    # Positive medians 3 and 6 share 1000: 1000*3//9 = 333, 1000*6//9 = 666; score 0 earns 0.
    assert out.worker_payouts == (333, 666, 0)
    assert out.validator_payouts == (50, 50)
    assert out.returned_to_escrow == 1000 - 999
    assert out.agreed == (True, True)


def test_all_nonpositive_contributions_split_equally() -> None:
    committee = [member((-1, 0, -7), (True, True, True))]
    out = settle_round(policy(), [0, 0, 0], committee)
    assert out.worker_payouts == (333, 333, 333)
    assert out.returned_to_escrow == 1000 - 999  # V = 100 goes whole to the single member


def test_topk_half_to_best_rest_shared_ties_by_submission_order() -> None:
    scores = (5, 9, 9, 1)
    committee = [member(scores, (True,) * 4)]
    out = settle_round(
        policy(reward_policy=RewardPolicy.TOPK, top_k=3, worker_reward=1001), [0] * 4, committee
    )
    # Ranking: index 1 (9, earlier), index 2 (9), index 0 (5); index 3 out of the top 3.
    assert out.worker_payouts == (250, 500, 250, 0)
    assert out.returned_to_escrow == 1001 - 1000
    only_one = settle_round(policy(reward_policy=RewardPolicy.TOPK, top_k=1), [0] * 4, committee)
    assert only_one.worker_payouts == (0, 1000, 0, 0)  # k == 1: the best takes the whole pool


def test_rejected_workers_are_slashed_to_the_accepted() -> None:
    committee = [member((10, 10, 10), (True, False, False))] * 3
    out = settle_round(policy(worker_slash=50), [500, 30, 500], committee)
    assert out.accepted == (True, False, False)
    assert out.worker_slashes == (0, 30, 50)  # capped by what is left of the deposit
    assert out.worker_payouts == (1000 + 80, 0, 0)  # the whole pool plus both slashes
    assert out.returned_to_escrow == 100 - 3 * 33  # only the validator pool's remainder
    nobody = settle_round(policy(), [500, 500], [member((1, 1), (False, False))])
    assert nobody.worker_payouts == (0, 0) and nobody.worker_slashes == (50, 50)
    # The V pool goes to the one (agreeing) member; W and both slashes return to escrow.
    assert nobody.validator_payouts == (100,)
    assert nobody.returned_to_escrow == 1000 + 2 * 50


def test_strict_majority_and_even_committees() -> None:
    yes, no = member((1,), (True,)), member((1,), (False,))
    tie = settle_round(policy(), [500], [yes, yes, no, no])
    assert tie.accepted == (False,) and tie.rejected == (False,)  # 2 of 4: neither majority
    assert tie.worker_slashes == (0,) and tie.agreed == (True,) * 4
    assert settle_round(policy(), [0], [yes, yes, yes, no]).accepted == (True,)
    # Silent members count for nothing in the majority (only reveals do).
    assert settle_round(policy(), [0], [yes, SILENT, SILENT]).accepted == (True,)


def test_agreement_tolerance_edges() -> None:
    committee = [member((100,), (True,)), member((103,), (True,)), member((97,), (True,))]
    at_edge = settle_round(policy(tolerance=3), [0], committee)
    assert at_edge.consensus_scores == (100,) and at_edge.agreed == (True, True, True)
    # Three different measures and no majority within tolerance of the median: nobody can
    # tell which is right, so no score slashes anyone.
    unbacked = settle_round(policy(tolerance=2), [0], committee)
    assert unbacked.consensus_scores == (100,) and unbacked.agreed == (True, True, True)
    # A majority at 100 outvotes both outliers.
    majority = [member((100,), (True,)), member((100,), (True,)), *committee]
    strict = settle_round(policy(tolerance=2), [0], majority)
    assert strict.agreed == (True, True, True, False, False)
    # The three agreeing members share V and both slashes: 100 // 3 + 80 // 3 each.
    assert strict.validator_payouts == (59,) * 3 + (0, 0)
    assert strict.validator_slashes == (0, 0, 0, 40, 40)
    # Two at 100 of four are no strict majority either.
    assert all(settle_round(policy(tolerance=2), [0], majority[1:]).agreed)
    wrong_bit = settle_round(policy(tolerance=10), [0], [*committee[:2], member((100,), (False,))])
    assert wrong_bit.agreed == (True, True, False)


def test_silent_committers_are_slashed_capped_by_stake() -> None:
    committee = [member((1,), (True,)), CommitteeMember(False, (), (), 0, 25, 1_000), SILENT]
    out = settle_round(policy(), [0], committee)
    assert out.validator_slashes == (0, 25, 40)
    assert out.validator_payouts == (100 + 25 + 40, 0, 0)


def test_no_reveals_decides_nothing_and_returns_everything() -> None:
    out = settle_round(policy(), [500, 500], [SILENT, SILENT])
    assert out.reveals == 0 and out.accepted == (False, False)
    assert out.worker_slashes == (0, 0)  # nobody judged the workers
    assert out.validator_slashes == (40, 40)
    assert out.returned_to_escrow == 1000 + 100 + 80
    assert settle_round(policy(), [], []).returned_to_escrow == 1100


def test_consensus_accuracy_and_termination() -> None:
    committee = [member((), (), acc) for acc in (900, 700, 800, 950)]
    out = settle_round(policy(), [], committee)
    assert out.consensus_accuracy == 800
    assert terminates(round=1, rounds=5, target_accuracy=800, reveals=4, consensus_accuracy=800)
    assert not terminates(round=1, rounds=5, target_accuracy=0, reveals=4, consensus_accuracy=800)
    assert not terminates(round=1, rounds=5, target_accuracy=1, reveals=0, consensus_accuracy=0)
    assert terminates(round=5, rounds=5, target_accuracy=0, reveals=0, consensus_accuracy=0)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(RewardError, match=r"committee\[0\] revealed 1 scores"):
        settle_round(policy(), [0, 0], [member((1,), (True,))])
    with pytest.raises(RewardError, match="slash_fraction_bps"):
        Policy.for_task(
            worker_reward_per_round=1,
            validator_reward_per_round=1,
            worker_deposit=1,
            slash_fraction_bps=10_001,
            tolerance=0,
            reward_policy=RewardPolicy.CONTRIBUTION,
            top_k=0,
        )


def test_policy_for_task_floors_the_slash() -> None:
    derived = Policy.for_task(
        worker_reward_per_round=10,
        validator_reward_per_round=3,
        worker_deposit=999,
        slash_fraction_bps=3_333,
        tolerance=5,
        reward_policy=RewardPolicy.TOPK,
        top_k=2,
    )
    assert (derived.worker_slash, derived.validator_slash(1_001)) == (
        999 * 3_333 // 10_000,
        1_001 * 3_333 // 10_000,
    )


def test_a_member_loses_a_fraction_of_its_own_stake() -> None:
    """Unequal stakes: each slashed member loses bps of the stake it joined with, capped by
    what is left of it; the agreeing member's pay does not depend on its stake."""
    whale = CommitteeMember(True, (100,), (NO,), 0, 4_000, 4_000)
    slashed_before = CommitteeMember(True, (100,), (NO,), 0, 30, 1_000)
    small = CommitteeMember(True, (100,), (OK,), 0, 1_000)
    big = CommitteeMember(True, (100,), (OK,), 0, 8_000)
    out = settle_round(policy(), [0], [whale, slashed_before, small, big, member((100,), (OK,))])
    assert out.agreed == (False, False, True, True, True)
    assert out.validator_slashes == (160, 30, 0, 0, 0)
    # V = 100 and the 190 slashed split equally over three members that judged one worker each.
    assert out.validator_payouts == (0, 0, 33 + 63, 33 + 63, 33 + 63)


@settings(max_examples=300, deadline=None)
@given(
    n_workers=st.integers(0, 5),
    data=st.data(),
)
def test_money_is_conserved(n_workers: int, data: st.DataObject) -> None:
    chosen = policy(
        worker_reward=data.draw(st.integers(0, 10**20)),
        validator_reward=data.draw(st.integers(0, 10**20)),
        worker_slash=data.draw(st.integers(0, 10**19)),
        slash_fraction_bps=data.draw(st.integers(0, 10_000)),
        tolerance=data.draw(st.integers(0, 3)),
        reward_policy=data.draw(st.sampled_from(RewardPolicy)),
        top_k=data.draw(st.integers(0, 6)),
    )
    deposits = data.draw(st.lists(st.integers(0, 10**19), min_size=n_workers, max_size=n_workers))
    committee = data.draw(
        st.lists(
            st.builds(
                CommitteeMember,
                revealed=st.booleans(),
                scores=st.tuples(*[st.integers(-3, 3)] * n_workers),
                verdicts=st.tuples(*[st.sampled_from(WorkerVerdict)] * n_workers),
                global_accuracy=st.integers(0, 10**6),
                stake_left=st.integers(0, 10**19),
                stake=st.integers(0, 2**112),
            ),
            max_size=5,
        )
    )
    claims = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=n_workers, max_size=n_workers))
    out = settle_round(chosen, deposits, committee, claims)
    paid = sum(out.worker_payouts) + sum(out.validator_payouts)
    slashed = sum(out.worker_slashes) + sum(out.validator_slashes)
    assert paid + out.returned_to_escrow == chosen.worker_reward + chosen.validator_reward + slashed
    assert all(s <= d for s, d in zip(out.worker_slashes, deposits, strict=True))
    assert all(p == 0 for p, a in zip(out.worker_payouts, out.accepted, strict=True) if not a)
    assert all(p == 0 for p, g in zip(out.validator_payouts, out.agreed, strict=True) if not g)
    # Paid for work: a member that judged nothing (every round without submissions) gets 0.
    assert all(p == 0 for p, j in zip(out.validator_payouts, out.judged, strict=True) if j == 0)


# ---------------------------------------------------------------------- manifest


def test_update_commitment_is_keccak_of_packed_cid_and_address() -> None:
    assert update_commitment("bafkreiabc", A) == keccak(b"bafkreiabc" + A)
    assert update_commitment("bafkreiabc", A) != update_commitment("bafkreiabc", B)


def test_manifest_commitment_binds_every_field() -> None:
    args = (C, 1, A, [A, B], [5, -5], [True, False], 900_000, b"\x01" * 32)
    expected = keccak(
        abi_encode(
            [
                "address",
                "uint256",
                "address",
                "address[]",
                "int256[]",
                "uint8[]",
                "uint256",
                "bytes32",
            ],
            [C, 1, A, [A, B], [5, -5], [1, 0], 900_000, b"\x01" * 32],
        )
    )
    assert manifest_commitment(*args) == expected
    # A bool verdict is ACCEPT / REJECT, byte for byte: accept/reject manifests keep their hash.
    as_enum = (*args[:5], [WorkerVerdict.ACCEPT, WorkerVerdict.REJECT], *args[6:])
    assert manifest_commitment(*as_enum) == expected
    unavailable = (*args[:5], [WorkerVerdict.ACCEPT, WorkerVerdict.UNAVAILABLE], *args[6:])
    assert manifest_commitment(*unavailable) != expected
    variants = [
        (B, *args[1:]),
        (C, 2, *args[2:]),
        (C, 1, B, *args[3:]),
        (C, 1, A, [B, A], *args[4:]),
        (C, 1, A, [A, B], [5, -4], *args[5:]),
        (C, 1, A, [A, B], [5, -5], [True, True], *args[6:]),
        (*args[:6], 900_001, args[7]),
        (*args[:7], b"\x02" * 32),
    ]
    assert len({manifest_commitment(*v) for v in variants} | {expected}) == len(variants) + 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: update_commitment("", A), "non-empty"),
        (lambda: update_commitment("bafy", b"\x01" * 19), "20-byte address"),
        (lambda: manifest_commitment(C, 0, A, [], [], [], 0, b"\x00" * 32), "round"),
        (lambda: manifest_commitment(C, 1, A, [], [], [], 0, b"\x00" * 31), "32 bytes"),
        (lambda: check_manifest([A], [1, 2], [True], 0), "equal lengths"),
        (lambda: check_manifest([A], [MAX_ABS_SCORE + 1], [True], 0), "outside"),
        (lambda: check_manifest([A], [1.5], [True], 0), "fixed-point int"),  # type: ignore[list-item]
        (lambda: check_manifest([A], [1], [3], 0), "not a verdict"),
        (lambda: check_manifest([A], [1], ["yes"], 0), "WorkerVerdict"),  # type: ignore[list-item]
        (lambda: check_manifest([A], [1], [True], -1), "global_accuracy"),
        (lambda: check_manifest(["0x" + "aa" * 20], [1], [True], 0), "bytes.fromhex"),  # type: ignore[list-item]
    ],
)
def test_manifest_input_errors_name_the_problem(call: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        call()  # type: ignore[operator]


# ---------------------------------------------------------------------- availability


def test_a_worker_most_could_not_fetch_is_unpaid_and_not_slashed() -> None:
    committee = [member((5, 7), (OK, GONE)), member((5, 0), (OK, GONE)), member((5, 7), (OK, OK))]
    out = settle_round(policy(worker_slash=50), [500, 500], committee)
    assert out.accepted == (True, False) and out.rejected == (False, False)
    assert out.worker_payouts == (1000, 0)
    assert out.worker_slashes == (0, 0)  # unavailable is not dishonest: no slash
    # Nobody disagrees: the two who could not fetch worker 1 said so, the one who could
    # judged it alone (its score is the consensus of its only judge).
    assert out.agreed == (True, True, True) and out.validator_slashes == (0, 0, 0)
    assert out.consensus_scores == (5, 7)
    assert out.judged == (1, 1, 2)
    # Paid per worker judged: 100 * 1 // 4, 100 * 1 // 4, 100 * 2 // 4.
    assert out.validator_payouts == (25, 25, 50)


def test_a_worker_that_served_one_validator_makes_nobody_disagree() -> None:
    only_one = [member((9,), (OK,)), member((0,), (GONE,)), member((0,), (GONE,))]
    out = settle_round(policy(), [500], only_one)
    assert out.accepted == (False,) and out.worker_slashes == (0,)
    assert out.agreed == (True, True, True) and out.validator_slashes == (0, 0, 0)
    # The one validator that did the work takes the whole pool; the others judged nobody.
    assert out.validator_payouts == (100, 0, 0)


def test_majority_reject_is_still_slashed_and_unavailable_is_no_excuse_to_accept() -> None:
    committee = [member((1,), (NO,)), member((1,), (NO,)), member((1,), (GONE,))]
    out = settle_round(policy(worker_slash=50), [500], committee)
    assert out.rejected == (True,) and out.worker_slashes == (50,)
    liar = settle_round(policy(), [500], [*committee[:2], member((1,), (OK,))])
    assert liar.agreed == (True, True, False)  # ACCEPT on a rejected worker disagrees


def test_a_lazy_validator_that_marks_everyone_unavailable_earns_nothing() -> None:
    """The cheapest dodge of the rule: skip the evaluation, claim nothing could be fetched,
    never disagree. It is not slashed (a flood could do the same to an honest one) but is paid
    per worker judged, so it earns nothing while the honest ones share the whole pool; and
    marking just some workers unavailable earns proportionally less."""
    honest = member((4, 6, 8), (OK, OK, OK))
    lazy = member((0, 0, 0), (GONE, GONE, GONE))
    half_lazy = member((4, 0, 0), (OK, GONE, GONE))
    out = settle_round(policy(validator_reward=900), [500] * 3, [honest, honest, lazy])
    assert out.agreed == (True, True, True) and out.validator_slashes == (0, 0, 0)
    assert out.validator_payouts == (450, 450, 0)
    mixed = settle_round(policy(validator_reward=700), [500] * 3, [honest, honest, half_lazy])
    assert mixed.validator_payouts == (300, 300, 100)
    # Everyone lazy: nobody judged anything, nobody is paid, nobody accepted.
    everyone = settle_round(policy(), [500] * 3, [lazy, lazy, lazy])
    assert everyone.validator_payouts == (0, 0, 0) and not any(everyone.accepted)
    assert everyone.returned_to_escrow == 1000 + 100


def test_a_round_without_submissions_pays_no_member() -> None:
    """Nothing was judged and the global model did not change: the V pool returns to escrow
    to the wei, and so does the stake of a member that committed and did not reveal."""
    out = settle_round(policy(), [], [member((), (), 5), member((), (), 5), member((), (), 7)])
    assert out.agreed == (True, True, True) and out.judged == (0, 0, 0)
    assert out.validator_payouts == (0, 0, 0) and out.returned_to_escrow == 1000 + 100
    silent = settle_round(policy(), [], [member((), (), 5), SILENT])
    assert silent.validator_payouts == (0, 0) and silent.validator_slashes == (0, 40)
    assert silent.returned_to_escrow == 1000 + 100 + 40


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_no_reject_majority_no_slash(data: st.DataObject) -> None:
    """A worker is slashed only when a strict majority of the reveals REJECT it: whatever
    mix of ACCEPT and UNAVAILABLE a flood causes, an honest worker keeps its deposit, and a
    member is never slashed for a worker it marked UNAVAILABLE."""
    n_workers = data.draw(st.integers(1, 4))
    never_rejected = st.sampled_from([OK, GONE])
    committee = data.draw(
        st.lists(
            st.builds(
                member,
                scores=st.tuples(*[st.just(3)] * n_workers),
                verdicts=st.tuples(*[never_rejected] * n_workers),
            ),
            min_size=1,
            max_size=5,
        )
    )
    out = settle_round(policy(worker_slash=50), [500] * n_workers, committee)
    assert out.worker_slashes == (0,) * n_workers
    assert out.agreed == (True,) * len(committee)
    assert out.validator_slashes == (0,) * len(committee)


# ---------------------------------------------------------------------- the WORK policy

WORK = RewardPolicy.WORK


def test_work_pays_equal_honest_workers_equally_and_slashes_the_free_rider() -> None:
    # Three honest workers with the same data and the same measured improvement, and a free
    # rider (no improvement: every validator REJECTs it with score 0).
    scores = (30_000, 30_000, 30_000, 0)
    committee = [member(scores, (OK, OK, OK, NO))] * 3
    out = settle_round(policy(reward_policy=WORK, worker_reward=999), [500] * 4, committee, [600] * 4)
    assert out.accepted == (True, True, True, False) and out.rejected[3]
    assert out.worker_slashes == (0, 0, 0, 50)
    # 999 // 3 each, plus an equal share of the free rider's slashed 50 (50 // 3)
    assert out.worker_payouts == (333 + 16, 333 + 16, 333 + 16, 0)
    assert out.returned_to_escrow == 2 + 1  # the slash's floor remainder, the validator pool's


def test_work_pays_in_proportion_to_data_times_improvement() -> None:
    committee = [member((10, 30, 20), (OK, OK, OK))]
    out = settle_round(policy(reward_policy=WORK, worker_reward=1_000), [0] * 3, committee, [300, 100, 300])
    # cap = lower median of (300, 100, 300) = 300; weights 3000, 3000, 6000
    assert out.worker_payouts == (250, 250, 500)


def test_an_inflated_claim_earns_what_the_median_claim_earns() -> None:
    honest = settle_round(
        policy(reward_policy=WORK, worker_reward=1_000), [0] * 3,
        [member((20, 20, 20), (OK, OK, OK))], [100, 100, 100],
    )  # fmt: skip
    for factor in (10, 2**40):
        inflated = settle_round(
            policy(reward_policy=WORK, worker_reward=1_000), [0] * 3,
            [member((20, 20, 20), (OK, OK, OK))], [100, 100 * factor, 100],
        )  # fmt: skip
        assert inflated.worker_payouts == honest.worker_payouts == (333, 333, 333)


def test_work_pays_nobody_without_measured_work_and_needs_claims() -> None:
    # Accepted with no positive improvement (or no data claimed): nothing was shown to be
    # work, so the pool returns to escrow instead of being shared out.
    for scores, claims in (((0, -5), [10, 10]), ((7, 7), [0, 0])):
        out = settle_round(policy(reward_policy=WORK), [0, 0], [member(scores, (OK, OK))], claims)
        assert out.worker_payouts == (0, 0) and out.returned_to_escrow == 1_000
    with pytest.raises(RewardError, match="pass claims"):
        settle_round(policy(reward_policy=WORK), [0], [member((1,), (OK,))])
    with pytest.raises(RewardError, match="2 sample claims for 1 workers"):
        settle_round(policy(reward_policy=WORK), [0], [member((1,), (OK,))], [1, 1])


def test_work_clips_a_huge_score_to_max_quality() -> None:
    committee = [member((MAX_ABS_SCORE, 2**64 - 1), (OK, OK))]
    out = settle_round(policy(reward_policy=WORK, worker_reward=10), [0, 0], committee, [5, 5])
    assert out.worker_payouts == (5, 5)


# ---------------------------------------------------------------------- members' views

@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_an_incomplete_members_scores_move_nothing_a_complete_member_judged(
    data: st.DataObject,
) -> None:
    """A member that judged another set than the round's reference set (it missed an update,
    or marked one UNAVAILABLE to dodge the score check) can put any numbers in its scores:
    the settlement is the same to the wei, but for the consensus score of a worker no
    complete member judged (one a minority fetched, never accepted)."""
    n_workers = data.draw(st.integers(1, 4))
    verdict = st.sampled_from([OK, NO, GONE])
    score = st.integers(-10, 10)
    committee = data.draw(
        st.lists(
            st.builds(
                member,
                scores=st.tuples(*[score] * n_workers),
                verdicts=st.tuples(*[verdict] * n_workers),
            ),
            min_size=1,
            max_size=5,
        )
    )
    complete = complete_members(committee)
    incomplete = [c for c, whole in enumerate(complete) if not whole]
    assume(any(complete) and incomplete)
    c = data.draw(st.sampled_from(incomplete))
    lied = list(committee)
    lied[c] = member(data.draw(st.tuples(*[score] * n_workers)), committee[c].verdicts)
    rules = policy(
        reward_policy=data.draw(st.sampled_from(RewardPolicy)), tolerance=data.draw(st.integers(0, 3))
    )
    claims = [data.draw(st.integers(0, 9)) for _ in range(n_workers)]
    truthful, lying = (settle_round(rules, [500] * n_workers, m, claims) for m in (committee, lied))
    judged_by_complete = [
        any(whole and m.verdicts[j] != GONE for whole, m in zip(complete, committee, strict=True))
        for j in range(n_workers)
    ]
    for j in range(n_workers):
        if judged_by_complete[j]:
            assert lying.consensus_scores[j] == truthful.consensus_scores[j]
    unscored = dataclasses.replace(lying, consensus_scores=())
    assert unscored == dataclasses.replace(truthful, consensus_scores=())


def test_honest_members_that_fetched_different_sets_are_not_slashed() -> None:
    """Three honest members; the third could not fetch worker 1, so its scores of workers 0
    and 2 are measured against fewer updates and differ beyond the tolerance: it is held to
    its verdicts only. Its honest partners agree exactly and set the consensus."""
    full, partial = member((600, 610, 620), (OK, OK, OK)), member((597, 0, 623), (OK, GONE, OK))
    committee = [full, full, partial]
    out = settle_round(policy(reward_policy=WORK, tolerance=1), [500] * 3, committee, [5] * 3)
    assert complete_members(committee) == [True, True, False]
    assert out.consensus_scores == (600, 610, 620) and out.agreed == (True, True, True)
    assert out.judged == (3, 3, 2) and not any(out.validator_slashes)
    # a verdict that contradicts the majority costs the incomplete member its pay, not its
    # stake (its verdicts, too, were reached on another set); from a complete view it slashes
    wrong = member((597, 0, 623), (NO, GONE, OK))
    out = settle_round(policy(tolerance=1), [500] * 3, [full, full, wrong])
    assert out.agreed == (True, True, False)
    assert out.validator_payouts[2] == 0 and not any(out.validator_slashes)
    lying = member((597, 610, 623), (NO, OK, OK))
    out = settle_round(policy(tolerance=1), [500] * 3, [full, full, lying])
    assert out.agreed == (True, True, False) and out.validator_slashes[2] > 0
