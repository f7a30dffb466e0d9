"""protocol.work's lean check: "A Little Is Enough" (ALIE) moves every coordinate of the mean
of honest deltas by z x their spread one way, so it lies below the others' median on most
coordinates where they spread, where an honest update lies above as often as below. Leaning
over DOUBTFUL_LEAN either way is UNDECIDED, over MAX_LEAN rejected.

The deltas are synthetic, as in test_work_scoring: a direction every worker shares plus each
one's own noise. The real attack on real MNIST updates is in tests/attacks/test_alie_lean.py
and measured by `python -m bench.lean`."""

from __future__ import annotations

import torch

from protocol.work import (
    DOUBTFUL_LEAN,
    MAX_LEAN,
    MIN_LEAN_PEERS,
    SCALE,
    Judgement,
    _leans_among,
    judge,
    leans,
)

SIZE = 20_000
GAIN = 50_000


def noise(seed: int) -> torch.Tensor:
    return torch.randn(SIZE, generator=torch.Generator().manual_seed(seed))


SHARED = noise(1)


def honest(count: int, seed: int = 10, shared: torch.Tensor = SHARED) -> list[torch.Tensor]:
    return [shared + 2 * noise(seed + i) for i in range(count)]


def alie(estimates: list[torch.Tensor], z: float) -> torch.Tensor:
    stacked = torch.stack(estimates)
    return stacked.mean(dim=0) - z * stacked.std(dim=0, unbiased=False)


def lone_alie(count: int, z: float, seed: int = 500) -> list[torch.Tensor]:
    """`count` attackers, each shifting the mean of 4 deltas of its own by z x their spread."""
    return [alie(honest(4, seed + 10 * a), z) for a in range(count)]


def judged(deltas: list[torch.Tensor]) -> list[Judgement]:
    return judge(list(deltas), [GAIN] * len(deltas), whole_gains=[GAIN] * len(deltas), claims=[500] * len(deltas))


Z_MAX = 0.524  # 3 attackers of 10 (node.attacks.spec.alie_z_max)


def test_alie_leans_below_the_others_and_is_rejected_while_honest_workers_are_paid() -> None:
    judgements = judged(honest(7) + lone_alie(3, Z_MAX))
    for judgement in judgements[7:]:
        assert not judgement.shows_work and not judgement.undecided
        assert "leans -" in (judgement.problem or ""), judgement.problem
    assert all(j.shows_work for j in judgements[:7]), [j.problem for j in judgements[:7]]


def test_a_shift_the_other_way_leans_as_far() -> None:
    judgements = judged(honest(7) + lone_alie(3, -Z_MAX))
    assert all("leans +" in (j.problem or "") for j in judgements[7:]), [j.problem for j in judgements[7:]]
    assert all(j.shows_work for j in judgements[:7])


def test_a_smaller_shift_is_undecided_and_a_small_one_passes() -> None:
    smaller = judged(honest(7) + lone_alie(3, 0.6 * Z_MAX))
    assert all(j.undecided and "leans -" in (j.doubt or "") for j in smaller[7:]), [j.doubt for j in smaller[7:]]
    assert all(j.shows_work for j in smaller[:7])
    # the cheapest way around: half of z_max leans within the bound here (the references
    # keep it, so it moves their median and the honest updates lean the other way, less)
    halved = leans(dict(enumerate(honest(7) + lone_alie(3, 0.5 * Z_MAX))))
    assert all(-DOUBTFUL_LEAN <= halved[i] < -DOUBTFUL_LEAN // 2 for i in range(7, 10)), halved
    assert all(0 < halved[i] < DOUBTFUL_LEAN // 2 for i in range(7)), halved
    assert all(j.shows_work for j in judged(honest(7) + lone_alie(3, 0.5 * Z_MAX)))


def test_updates_shifted_far_one_way_do_not_tilt_the_honest_ones() -> None:
    shifted = [delta - 3.0 for delta in honest(3, seed=300)]  # 0.7 of the coordinates below
    deltas = honest(7) + shifted
    # measured against the median of all the others, the honest updates would lean the
    # other way, over the bound: the shifted three pull that median down
    _, everyone = _leans_among(dict(enumerate(deltas)), list(range(10)))
    assert all(everyone[i] > MAX_LEAN for i in range(7)), everyone
    # the references leave the most leaning update out first, one at a time
    measured = leans(dict(enumerate(deltas)))
    assert all(abs(measured[i]) < DOUBTFUL_LEAN / 2 for i in range(7)), measured
    assert all(measured[i] < -MAX_LEAN for i in range(7, 10)), measured
    judgements = judged(deltas)
    assert [j.shows_work for j in judgements] == [True] * 7 + [False] * 3


def test_a_longer_or_shorter_step_does_not_lean() -> None:
    # every coordinate of the shared direction positive: a longer step is above the others
    # wherever they move, which only the projection along their median takes out
    positive = SHARED.abs() + 1.0
    deltas = honest(6, shared=positive) + [2.5 * (positive + 2 * noise(77)), 0.4 * (positive + 2 * noise(78))]
    measured = leans(dict(enumerate(deltas)))
    assert all(abs(value) < DOUBTFUL_LEAN / 2 for value in measured.values()), measured
    assert all(j.shows_work for j in judged(deltas))


def test_a_skewed_spread_with_an_even_count_of_others_does_not_tilt() -> None:
    # the median of an even count is the mean of its middle pair: for a skewed spread a
    # delta lies above that mean more often than below; the pair counts neither way
    skewed = [SHARED + torch.empty(SIZE).exponential_(generator=torch.Generator().manual_seed(s)) for s in range(5)]
    measured = leans(dict(enumerate(skewed)))
    assert all(abs(value) < 0.05 * SCALE for value in measured.values()), measured


def test_the_lean_needs_enough_others_and_does_not_depend_on_their_order() -> None:
    assert leans(dict(enumerate(honest(MIN_LEAN_PEERS)))) == {}
    deltas = honest(7) + lone_alie(3, Z_MAX)
    forward = leans(dict(enumerate(deltas)))
    backward = leans({i: deltas[i] for i in reversed(range(10))})
    assert forward == backward
    assert all(value % 100 == 0 for value in forward.values())  # quantized
