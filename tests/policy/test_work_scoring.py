"""protocol.work: the WORK policy's verdict. An update is scored by the sign agreement of its
delta with the coordinate-wise median of the other agreeing updates' deltas; free riders (no
delta, or noise), reversed, boosted and replayed updates and those that make the validation
loss clearly worse are rejected, so the contract slashes them. Without two updates that
agree, an update is measured by how much it lowers the base's validation loss.

The deltas here are synthetic: a direction every honest worker shares plus each worker's
own noise twice as long, so an honest delta's sign agreement with the others' median is
near 0.2; near convergence real MNIST workers show 0.03..0.14 (`python -m bench.work_quality`),
whose noise is heavy-tailed (`test_heavy_tailed_noise_hides_agreement_from_a_cosine_not_from_signs`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE
from protocol.manifest import MAX_ABS_SCORE, check_manifest
from protocol.verdict import cosine
from protocol.work import (
    CLEAR_AGREEMENT,
    CLEAR_GAIN,
    DOUBTFUL_LAG,
    MAX_LOSS_INCREASE,
    MAX_LOSS_LAG,
    MAX_NORM_RATIO,
    MIN_IMPROVEMENT,
    MIN_NORM_RATIO,
    QUANTUM,
    STEP,
    UNDECIDED,
    UNUSABLE,
    Judgement,
    _qualities,
    agreement_bound,
    coordinate_median,
    improvement,
    judge,
    sign_agreement,
    stepped,
    work_verdict,
)

SIZE = 20_000
WORKERS = tuple(bytes([0x10 + i]) * 20 for i in range(6))
THRESHOLD = 500_000  # 0.5 in fixed point
GOOD_GAIN = 50_000  # a round that still descends measurably (CLEAR_GAIN)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SHARED = torch.randn(SIZE, generator=generator(1))
PREVIOUS_STEP = torch.randn(SIZE, generator=generator(2))


def honest(count: int = 5, seed: int = 10) -> list[torch.Tensor]:
    return [SHARED + 2 * torch.randn(SIZE, generator=generator(seed + i)) for i in range(count)]


def judged_with(
    attacker: torch.Tensor | None, gain: int = GOOD_GAIN, whole: int = GOOD_GAIN
) -> list[Judgement]:
    deltas: list[torch.Tensor | None] = [*honest(), attacker]
    gains = [GOOD_GAIN] * 5
    return judge(deltas, [*gains, gain], PREVIOUS_STEP, whole_gains=[*gains, whole])


def assert_honest_paid(judgements: list[Judgement]) -> None:
    for judgement in judgements[:5]:
        assert judgement.shows_work, judgement.problem
        assert judgement.quality >= agreement_bound(SIZE)


def test_honest_updates_agree_and_are_scored_by_their_agreement() -> None:
    judgements = judge(honest(), [GOOD_GAIN] * 5, PREVIOUS_STEP)
    assert_honest_paid(judgements)
    qualities = [j.quality for j in judgements]
    assert all(q % QUANTUM == 0 for q in qualities)
    # a coordinate's sign follows the shared direction 3 times in 5 against the noise
    assert all(150_000 < q < 300_000 for q in qualities), qualities
    # a worker that trained longer (its shared part larger against its noise) agrees more
    better = [*honest(4), 3 * SHARED + 2 * torch.randn(SIZE, generator=generator(99))]
    scored = judge(better, [GOOD_GAIN] * 5)
    assert scored[4].quality > max(j.quality for j in scored[:4])


@pytest.mark.parametrize(
    ("what", "attacker", "problem"),
    [
        ("free rider: the base resubmitted", torch.zeros(SIZE), "below"),
        ("free rider with noise", 0.3 * torch.randn(SIZE, generator=generator(5)), "agreement"),
        ("large gaussian noise", 100 * torch.randn(SIZE, generator=generator(6)), "above"),
        ("sign flip", -(SHARED + 2 * torch.randn(SIZE, generator=generator(7))), "agreement"),
        ("inner product manipulation", -0.5 * SHARED, "agreement"),
        ("boosted (model replacement)", 6 * (SHARED + 2 * torch.randn(SIZE, generator=generator(8))), "above"),
        ("a short copy of the shared direction", 0.01 * SHARED, "below"),
        ("replayed global step", PREVIOUS_STEP.clone(), "replays"),
        ("replayed, scaled and lightly noised", 0.5 * PREVIOUS_STEP + 0.2 * torch.randn(SIZE, generator=generator(9)), "replays"),
    ],
)
def test_updates_that_show_no_work_are_rejected_and_honest_ones_still_paid(
    what: str, attacker: torch.Tensor, problem: str
) -> None:
    judgements = judged_with(attacker)
    assert not judgements[5].shows_work, what
    assert judgements[5].quality == 0
    assert problem in (judgements[5].problem or ""), judgements[5].problem
    assert_honest_paid(judgements)


def test_the_cheapest_way_around_the_replay_bound_still_shows_no_agreement() -> None:
    # noise as long as the replayed step brings its cosine with that step to ~0.7, under
    # the replay bound; it then agrees with this round's updates only as much as the old
    # step does (nothing, here; late in a real task, little: see bench.work_quality)
    disguised = PREVIOUS_STEP + torch.randn(SIZE, generator=generator(111)) * PREVIOUS_STEP.norm() / SIZE**0.5
    judgements = judged_with(disguised)
    assert "agreement" in (judgements[5].problem or "")
    assert_honest_paid(judgements)


def test_an_agreeing_update_that_makes_the_validation_loss_clearly_worse_is_rejected() -> None:
    poisoned = SHARED + 2 * torch.randn(SIZE, generator=generator(112))
    # the whole update is what harms: a short step of it may still descend
    assert judged_with(poisoned, whole=-MAX_LOSS_INCREASE)[5].shows_work  # within the spread
    judgements = judged_with(poisoned, gain=GOOD_GAIN, whole=-MAX_LOSS_INCREASE - 1)
    assert "validation loss" in (judgements[5].problem or "")
    assert_honest_paid(judgements)
    # a short step's loss alone does not reject what agrees
    assert judged_with(poisoned, gain=-10 * MAX_LOSS_INCREASE)[5].shows_work
    with pytest.raises(ProtocolError, match="6 deltas but 5 whole-update gains"):
        judge([*honest(), poisoned], [GOOD_GAIN] * 6, whole_gains=[GOOD_GAIN] * 5)


def lagged(whole: int, claims: list[int]) -> list[Judgement]:
    deltas: list[torch.Tensor | None] = [*honest(), SHARED + 2 * torch.randn(SIZE, generator=generator(113))]
    wholes = [GOOD_GAIN + 1_000 * i for i in range(5)]
    return judge(deltas, [GOOD_GAIN] * 6, PREVIOUS_STEP, whole_gains=[*wholes, whole], claims=claims)


def test_an_agreeing_update_whose_loss_lags_the_rounds_is_undecided_then_rejected() -> None:
    typical = GOOD_GAIN + 1_500  # the median of the six, its own gain (the lowest) included
    # it agrees and lowers the loss, but 0.4 nats less than the round's median update
    behind = lagged(typical - MAX_LOSS_LAG - QUANTUM, [500] * 6)
    assert not behind[5].shows_work and behind[5].quality == 0 and not behind[5].undecided
    assert "above the median" in (behind[5].problem or "") and "500 samples" in (behind[5].problem or "")
    assert_honest_paid(behind)
    # between the two bounds: neither averaged, paid nor slashed (the honest tail reaches there)
    doubtful = lagged(typical - DOUBTFUL_LAG - QUANTUM, [500] * 6)[5]
    assert doubtful.undecided and doubtful.problem is None and not doubtful.shows_work
    assert "above the median" in (doubtful.doubt or "")
    assert lagged(typical - MAX_LOSS_LAG, [500] * 6)[5].undecided  # at the bound
    assert lagged(typical - DOUBTFUL_LAG, [500] * 6)[5].shows_work


def test_the_lag_is_measured_against_updates_claiming_no_more_samples() -> None:
    far_behind = GOOD_GAIN - MAX_LOSS_LAG - 50_000  # worse than the base, within MAX_LOSS_INCREASE
    # a worker with a quarter of the data, claiming it, is held to its own claim: nobody
    # claims as little, so nothing is ahead of it
    assert lagged(far_behind, [500] * 5 + [125])[5].shows_work
    # claiming as much as the others, it is held to what they did
    assert "above the median" in (lagged(far_behind, [500] * 6)[5].problem or "")
    assert "above the median" in (lagged(far_behind, [500] * 5 + [5_000])[5].problem or "")
    # the others are not judged against the smaller claim: their pool includes it, and
    # the median of six moves by half a step
    assert_honest_paid(lagged(far_behind, [500] * 5 + [125]))
    # no claims, no lag check (a caller that does not know them)
    assert judge(
        [*honest(), SHARED + 2 * torch.randn(SIZE, generator=generator(113))], [GOOD_GAIN] * 6,
        whole_gains=[GOOD_GAIN] * 5 + [far_behind],
    )[5].shows_work
    with pytest.raises(ProtocolError, match="6 deltas but 5 sample claims"):
        lagged(far_behind, [500] * 5)


def test_a_minority_of_outliers_cannot_drag_the_reference() -> None:
    # two huge noise vectors and one sign flip among six: the honest four stay paid
    deltas: list[torch.Tensor | None] = [
        *honest(4),
        50 * torch.randn(SIZE, generator=generator(20)),
        -2 * SHARED,
        2.5 * torch.randn(SIZE, generator=generator(21)),
    ]
    judgements = judge(deltas, [GOOD_GAIN] * 7)
    assert [j.shows_work for j in judgements] == [True] * 4 + [False] * 3


@pytest.mark.parametrize(
    "attacker",
    [
        -(SHARED + 2 * torch.randn(SIZE, generator=generator(22))),  # sign flip
        2.2 * torch.randn(SIZE, generator=generator(23)),  # noise as long as an update
        torch.zeros(SIZE),  # the base
    ],
)
def test_two_honest_updates_outweigh_a_third_that_shows_no_work(attacker: torch.Tensor) -> None:
    # the median of two is their mean, which the attacker drags: the reference set drops
    # the least agreeing update first
    judgements = judge([*honest(2), attacker], [GOOD_GAIN] * 3)
    assert [j.shows_work for j in judgements] == [True, True, False]


def test_scores_do_not_depend_on_the_order_of_the_updates() -> None:
    deltas: list[torch.Tensor | None] = [*honest(), torch.zeros(SIZE), None]
    gains: list[int | None] = [GOOD_GAIN] * 6 + [None]
    forward = judge(deltas, gains, PREVIOUS_STEP)
    order = [6, 3, 0, 5, 1, 4, 2]
    backward = judge([deltas[i] for i in order], [gains[i] for i in order], PREVIOUS_STEP)
    assert [backward[order.index(i)] for i in range(7)] == forward
    assert forward[6] == UNUSABLE


def test_coordinate_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() -> None:
    values = [torch.tensor([1.0, 5.0]), torch.tensor([3.0, -1.0]), torch.tensor([2.0, 0.0])]
    assert torch.equal(coordinate_median(values), torch.tensor([2.0, 0.0]))
    assert torch.equal(coordinate_median(values[:2]), torch.tensor([2.0, 2.0]))
    with pytest.raises(ProtocolError):
        coordinate_median([])


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    count=st.integers(1, 9),
    size=st.integers(1, 40),
    ties=st.booleans(),
)
def test_leave_one_out_agreement_is_that_of_each_median_taken_alone(
    data: st.DataObject, count: int, size: int, ties: bool
) -> None:
    """Every validator must reveal the same numbers: the qualities, taken from one sort of
    all the deltas, equal the sign agreement with each leave-one-out median computed on its
    own, ties and signed zeros included."""
    value = st.sampled_from([-1.0, -0.5, -0.0, 0.0, 0.5, 1.0]) if ties else st.floats(-4, 4, width=32)
    deltas = {i: torch.tensor(data.draw(st.lists(value, min_size=size, max_size=size))) for i in range(count)}
    references = sorted(data.draw(st.sets(st.integers(0, count - 1))))
    whole = coordinate_median([deltas[j] for j in references]) if references else None
    for i, quality in _qualities(deltas, references, list(deltas)).items():
        others = [deltas[j] for j in references if j != i]
        if i not in references:
            assert quality == (0 if whole is None else sign_agreement(deltas[i], whole))
        else:
            assert quality == (sign_agreement(deltas[i], coordinate_median(others)) if others else 0)


def test_the_agreement_bound_sits_above_noise_for_any_model_size() -> None:
    for size in (1_000, SIZE, 200_000):
        bound = agreement_bound(size)
        noise = [torch.randn(size, generator=generator(30 + i)) for i in range(20)]
        direction = torch.randn(size, generator=generator(29))
        cosines = [float(torch.nn.functional.cosine_similarity(n, direction, dim=0)) for n in noise]
        assert max(cosines) * SCALE < bound
    assert agreement_bound(10**9) == 10_000  # a floor for huge models
    assert MIN_NORM_RATIO < 1 < MAX_NORM_RATIO


def test_without_two_agreeing_updates_the_validation_gain_decides() -> None:
    # one worker and a free rider: nothing to agree with
    judgements = judge(
        [SHARED, torch.zeros(SIZE), None], [MIN_IMPROVEMENT, MIN_IMPROVEMENT - 1, None]
    )
    assert judgements[0] == Judgement(MIN_IMPROVEMENT)
    assert not judgements[1].shows_work and judgements[1].quality == 0
    assert judgements[2] == UNUSABLE
    # updates that disagree are each judged by their gain; while the round's lower median
    # gain shows what work does, one that gains nothing is rejected
    apart = [2.2 * torch.randn(SIZE, generator=generator(40 + i)) for i in range(3)]
    judgements = judge(apart, [CLEAR_GAIN, CLEAR_GAIN, -50])
    assert judgements[:2] == [Judgement(CLEAR_GAIN)] * 2 and not judgements[2].shows_work
    assert judgements[2].problem is not None and "median gain" in judgements[2].problem
    # one update gaining much (a step on data like the validation set's) does not make
    # the others' low gains look like no work
    assert judge(apart, [10 * CLEAR_GAIN, 500, 3_000])[1] == UNDECIDED
    # a worker and a free rider alone: their lower median is the free rider's gain
    assert judge(apart[:2], [CLEAR_GAIN, -50]) == [Judgement(CLEAR_GAIN), UNDECIDED]


def test_where_no_update_shows_work_measurably_a_low_gain_is_undecided() -> None:
    """Two honest workers whose data is fitted (a converged round) disagree, and one may
    gain under MIN_IMPROVEMENT: with no gain of CLEAR_GAIN in the round, nothing tells it
    from a free rider, so it is UNDECIDED (marked unavailable: neither averaged, paid nor
    slashed); one that makes the model worse still is rejected."""
    noise = 2.2 * torch.randn(SIZE, generator=generator(40))
    updates = [honest(1)[0], noise]
    judgements = judge(updates, [CLEAR_GAIN - 1, MIN_IMPROVEMENT - 1])
    assert judgements == [Judgement(CLEAR_GAIN - 1), UNDECIDED]
    assert not UNDECIDED.shows_work and UNDECIDED.problem is None
    harmful = judge(updates, [GOOD_GAIN, -50], whole_gains=[GOOD_GAIN, -MAX_LOSS_INCREASE - 1])
    assert harmful[0] == Judgement(GOOD_GAIN) and harmful[1].problem is not None
    assert judge(updates, [5_000, -CLEAR_GAIN])[1].problem is not None  # a step that loses
    unmeasured = judge(updates, [5_000, None])
    assert unmeasured[1] == Judgement(0, "validation gain not measured")


def test_a_weakly_agreeing_round_leaves_a_disagreeing_update_undecided_unless_it_descends() -> None:
    """Near a fixed point of FedAvg three updates agree weakly and a fourth, its worker
    pulled towards its own data's optimum, points against them (as honest mnist_2nn workers
    did in `bench.work_rounds --workers 3 --rounds 14`): with the references' lower median
    gain under CLEAR_GAIN it is UNDECIDED; where it is not, the round still descends and
    agreement rejects it, as it rejects a sign flip."""
    deltas = [0.5 * SHARED + 2 * torch.randn(SIZE, generator=generator(80 + i)) for i in range(3)]
    deltas.append(-0.2 * SHARED + 2 * torch.randn(SIZE, generator=generator(90)))
    judged = judge(deltas, [3_000] * 4)
    assert all(j.shows_work and j.quality < CLEAR_AGREEMENT for j in judged[:3])
    assert judged[3] == UNDECIDED
    descending = judge(deltas, [CLEAR_GAIN, CLEAR_GAIN, 3_000, 3_000])
    assert descending[:3] == judged[:3]
    assert descending[3].problem is not None and "agreement" in descending[3].problem
    # one reference gaining much (a step on data like the validation set's) does not
    assert judge(deltas, [3_000, 10 * CLEAR_GAIN, 3_000, 3_000])[3] == UNDECIDED
    # one that makes the model worse is rejected in a weak round too
    worse = judge(deltas, [3_000, 3_000, 3_000, -CLEAR_GAIN])[3]
    assert worse.problem is not None and "worse" in worse.problem


def test_a_step_is_measured_only_when_nothing_agrees() -> None:
    """`gains` as a function: a validator measures a step's gain (a forward pass per update)
    only in a round without agreeing updates, and then the same gains decide."""
    asked: list[int] = []

    def gain(gains: list[int]) -> Callable[[int], int]:
        def measured(index: int) -> int:
            asked.append(index)
            return gains[index]

        return measured

    assert judge(honest(), gain([GOOD_GAIN] * 5), PREVIOUS_STEP) == judge(
        honest(), [GOOD_GAIN] * 5, PREVIOUS_STEP
    )
    assert asked == []
    noise = 2.2 * torch.randn(SIZE, generator=generator(40))
    lazily = judge([honest(1)[0], noise], gain([CLEAR_GAIN, -CLEAR_GAIN]))
    assert lazily == judge([honest(1)[0], noise], [CLEAR_GAIN, -CLEAR_GAIN]) and asked == [0, 1]
    assert lazily[0] == Judgement(CLEAR_GAIN) and not lazily[1].shows_work


def test_stepped_moves_float_tensors_a_step_towards_the_update() -> None:
    base = {"w": torch.zeros(3), "n": torch.tensor(5)}
    update = {"w": torch.tensor([8.0, -8.0, 0.0]), "n": torch.tensor(7)}
    moved = stepped(update, base, 0.25)
    assert torch.equal(moved["w"], torch.tensor([2.0, -2.0, 0.0]))
    assert int(moved["n"]) == 7  # a counter is the update's, not interpolated
    assert torch.equal(stepped(base, base)["w"], base["w"])  # a free rider moves nothing
    assert 0 < STEP < 1
    with pytest.raises(ProtocolError, match="different tensor names"):
        stepped({"v": torch.zeros(3)}, base)
    assert improvement(0.04, 0.015) == 25_000
    assert improvement(0.04, None) is None


def test_the_verdict_accepts_updates_that_show_work_and_qualify() -> None:
    judgements = [
        Judgement(400_000),
        Judgement(0, "agreement 0.0001 below 0.01"),
        UNUSABLE,
        Judgement(300_000),  # fails the accuracy threshold below
        Judgement(10 * MAX_ABS_SCORE),
    ]
    result = work_verdict(WORKERS[:5], [0.99, 0.99, None, 0.2, 0.99], judgements, THRESHOLD, 0.991)
    assert result.accepts == (True, False, False, False, True)
    assert result.scores == (400_000, 0, 0, 0, MAX_ABS_SCORE)
    assert result.global_accuracy == 991_000
    check_manifest(list(WORKERS[:5]), list(result.scores), list(result.accepts), result.global_accuracy)
    with pytest.raises(ProtocolError, match="2 accuracies but 1 judgements"):
        work_verdict(WORKERS[:2], [0.9, 0.9], judgements[:1], THRESHOLD, 0.9)
    with pytest.raises(ProtocolError, match="1 workers but 2 accuracies"):
        work_verdict(WORKERS[:1], [0.9, 0.9], judgements[:2], THRESHOLD, 0.9)


def test_sign_agreement_counts_coordinates_exactly() -> None:
    delta = torch.tensor([1.0, -2.0, 0.0, 3.0])
    reference = torch.tensor([2.0, 2.0, 5.0, -1.0])
    # one coordinate with the reference's sign, two against, a zero counts neither
    assert sign_agreement(delta, reference) == -250_000
    assert sign_agreement(reference, reference) == SCALE
    assert sign_agreement(-reference, reference) == -SCALE
    noisy = SHARED + 2 * torch.randn(SIZE, generator=generator(50))
    # magnitudes do not count, only signs: no float sum for validators to disagree on
    assert sign_agreement(3.7 * noisy, SHARED) == sign_agreement(noisy, SHARED)
    assert sign_agreement(noisy, SHARED) % QUANTUM == 0
    with pytest.raises(ProtocolError, match="different or empty shapes"):
        sign_agreement(torch.ones(3), torch.ones(4))
    with pytest.raises(ProtocolError, match="different or empty shapes"):
        sign_agreement(torch.ones(0), torch.ones(0))


def spiky(seed: int, shared: torch.Tensor = SHARED) -> torch.Tensor:
    """An honest delta near convergence: the shared direction, each worker's own noise, and
    on 1% of the coordinates its own noise 300 times as large (heavy-tailed SGD noise)."""
    noise = 2 * torch.randn(SIZE, generator=generator(seed))
    spikes = torch.randperm(SIZE, generator=generator(seed + 1000))[: SIZE // 100]
    noise[spikes] = 300 * torch.randn(len(spikes), generator=generator(seed + 2000))
    return shared + noise


def test_heavy_tailed_noise_hides_agreement_from_a_cosine_not_from_signs() -> None:
    deltas = [spiky(60 + i) for i in range(5)]
    bound = agreement_bound(SIZE)
    for i, delta in enumerate(deltas):
        median = coordinate_median([d for j, d in enumerate(deltas) if j != i])
        # the few large noisy coordinates carry the norm: the cosine sits under the bound
        assert cosine(delta, median) * SCALE < bound
    judgements = judge(list(deltas), [GOOD_GAIN] * 5, PREVIOUS_STEP)
    assert all(j.shows_work and j.quality > 4 * bound for j in judgements), judgements
    # the rational free rider: noise as long as an honest delta, heavy tails and all
    noise = spiky(70, shared=torch.zeros(SIZE))
    noise *= float(deltas[0].norm() / noise.norm())
    judged = judge([*deltas, noise], [GOOD_GAIN] * 6, PREVIOUS_STEP)
    assert "agreement" in (judged[5].problem or "") and judged[5].quality == 0
    assert all(j.shows_work for j in judged[:5])


def test_the_cheapest_attack_that_passes_a_noisy_replay_of_a_step_the_round_still_follows() -> None:
    # Near convergence the previous global step leans the way this round's steps lean. A
    # replayer that adds noise as long as that step gets under the replay bound (cosine
    # ~0.7) and agrees with the round through the old step's share: it is paid. Projecting
    # the previous step out before counting signs would stop it but was measured to reject
    # honest workers (bench.work_quality), so this is the measure's known gap.
    leaning = SHARED + 2 * torch.randn(SIZE, generator=generator(80))
    replay = leaning + torch.randn(SIZE, generator=generator(81)) * leaning.norm() / SIZE**0.5
    assert cosine(replay, leaning) < 0.9
    judgements = judge([*honest(), replay], [GOOD_GAIN] * 6, leaning)
    assert judgements[5].shows_work
    assert_honest_paid(judgements)
