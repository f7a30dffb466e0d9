"""Property tests: the Solidity arithmetic equals protocol/rewards.py, and random task
histories on the embedded chain keep the books balanced and never cost an honest party.

Cost control: one registered world per session, rewound to a snapshot for every example;
parties of at most three workers and three validators; one or two rounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from node.chain import TaskStatus
from protocol.manifest import MAX_ABS_SCORE, MAX_ACCURACY, WorkerVerdict
from protocol.rewards import (
    CommitteeMember,
    Policy,
    RewardPolicy,
    complete_members,
    settle_round,
    terminates,
)
from protocol.sortition import is_selected
from tests.contracts.harness import (
    ETHER,
    EVERYONE,
    SAMPLES_CLAIMED,
    Vote,
    World,
    play_round,
    policy_of,
)

SETTLE_EXAMPLES = int(os.environ.get("FL_NODE_SETTLE_EXAMPLES", "200"))
HISTORY_EXAMPLES = int(os.environ.get("FL_NODE_HISTORY_EXAMPLES", "200"))

amounts = st.one_of(st.integers(0, 12), st.integers(0, 10**18), st.integers(0, 2**112))
stakes = st.one_of(st.integers(0, 12), st.integers(0, 10**18), st.integers(0, 2**112))  # <= MAX_STAKE
# Small score ranges make ties, equal medians and exact-tolerance edges common.
scores = st.one_of(
    st.integers(-3, 3),
    st.integers(-(10**6), 10**6),
    st.sampled_from([MAX_ABS_SCORE, -MAX_ABS_SCORE]),
)
verdicts = st.sampled_from(WorkerVerdict)
# Sample claims: small ones tie and clip often; submitUpdate stores them as uint64.
claims = st.one_of(st.integers(0, 4), st.integers(1, 2**64 - 1))


@st.composite
def settlement_inputs(
    draw: st.DrawFn,
) -> tuple[Policy, list[int], list[int], list[CommitteeMember]]:
    n_workers = draw(st.integers(0, 6))
    policy = Policy(
        worker_reward=draw(amounts),
        validator_reward=draw(amounts),
        worker_slash=draw(amounts),
        slash_fraction_bps=draw(st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 9_999, 10_000]))),
        tolerance=draw(st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))),
        reward_policy=draw(st.sampled_from(RewardPolicy)),
        top_k=draw(st.integers(0, 8)),
    )
    deposits = [draw(amounts) for _ in range(n_workers)]
    worker_claims = [draw(claims) for _ in range(n_workers)]
    committee = []
    for _ in range(draw(st.integers(0, 5))):
        revealed = draw(st.booleans())
        committee.append(
            CommitteeMember(
                revealed=revealed,
                scores=tuple(draw(scores) for _ in range(n_workers)) if revealed else (),
                verdicts=tuple(draw(verdicts) for _ in range(n_workers)) if revealed else (),
                global_accuracy=draw(st.integers(0, MAX_ACCURACY)) if revealed else 0,
                stake_left=draw(amounts),
                stake=draw(stakes),
            )
        )
    return policy, deposits, worker_claims, committee


@st.composite
def availability_inputs(
    draw: st.DrawFn,
) -> tuple[Policy, list[int], list[int], list[CommitteeMember]]:
    """Rounds as a committee sees them when fetches fail: every honest member scores each
    update it judged as a function of the set it judged (as WORK's agreement with the others
    and leave-one-out do), so honest members with the same set reveal the same scores; a liar
    reveals anything, UNAVAILABLE included."""
    policy, deposits, worker_claims, random_committee = draw(settlement_inputs())
    n_workers = len(deposits)
    truth = [draw(scores) for _ in range(n_workers)]
    truth_verdicts = [draw(st.sampled_from([WorkerVerdict.ACCEPT, WorkerVerdict.REJECT])) for _ in truth]
    missing_often = st.sampled_from([False, False, False, True])
    view_shift = draw(st.sampled_from([1, 7, 10**5]))
    committee = []
    for random_member in random_committee:
        if not random_member.revealed or draw(st.integers(0, 3)) == 0:
            committee.append(random_member)  # silent, or a liar
            continue
        missed = [draw(missing_often) for _ in range(n_workers)]
        # A view-dependent shift: the same set judged gives the same scores.
        shift = sum(j + 1 for j, m in enumerate(missed) if m) * view_shift
        committee.append(
            CommitteeMember(
                revealed=True,
                scores=tuple(t + shift for t in truth),
                verdicts=tuple(
                    WorkerVerdict.UNAVAILABLE if m else v for m, v in zip(missed, truth_verdicts, strict=True)
                ),
                global_accuracy=random_member.global_accuracy,
                stake_left=random_member.stake_left,
                stake=random_member.stake,
            )
        )
    return policy, deposits, worker_claims, committee


@settings(
    max_examples=SETTLE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(inputs=st.one_of(settlement_inputs(), availability_inputs()))
def test_solidity_settlement_equals_python(
    world: World, inputs: tuple[Policy, list[int], list[int], list[CommitteeMember]]
) -> None:
    policy, deposits, worker_claims, committee = inputs
    expected = settle_round(policy, deposits, committee, worker_claims)
    on_chain = world.requester.call(
        "RewardMathHarness",
        world.settlement_harness,
        "settle",
        (
            policy.worker_reward,
            policy.validator_reward,
            policy.worker_slash,
            policy.slash_fraction_bps,
            policy.tolerance,
            int(policy.reward_policy),
            policy.top_k,
        ),
        deposits,
        worker_claims,
        [
            (m.revealed, list(m.scores), list(m.verdicts), m.global_accuracy, m.stake_left, m.own_stake)
            for m in committee
        ],
    )
    assert tuple(tuple(v) if isinstance(v, list | tuple) else v for v in on_chain) == (
        expected.reveals,
        expected.consensus_scores,
        expected.accepted,
        expected.rejected,
        expected.worker_payouts,
        expected.worker_slashes,
        expected.agreed,
        expected.judged,
        expected.validator_payouts,
        expected.validator_slashes,
        expected.consensus_accuracy,
        expected.returned_to_escrow,
    )
    # A member is paid only for workers it judged, so nobody in a round without submissions.
    assert all(p == 0 for p, j in zip(expected.validator_payouts, expected.judged, strict=True) if j == 0)
    # Conservation within a round: what is paid out plus what returns to escrow is exactly
    # both pools plus everything slashed.
    paid = sum(expected.worker_payouts) + sum(expected.validator_payouts)
    slashed = sum(expected.worker_slashes) + sum(expected.validator_slashes)
    assert (
        paid + expected.returned_to_escrow
        == policy.worker_reward + policy.validator_reward + slashed
    )


# ---------------------------------------------------------------------- random task histories

# silent: commits, never reveals; flooded: honest, but could not fetch some updates (marks
# them UNAVAILABLE); lazy: marks every update UNAVAILABLE without evaluating anything.
HONEST_BEHAVIOURS = ("honest", "flooded")
BEHAVIOURS = ("honest", "liar", "silent", "absent", "flooded", "lazy")


@dataclass(frozen=True)
class History:
    n_workers: int
    n_validators: int
    rounds: int
    committee_size: int  # tau of the sortition
    reward_policy: RewardPolicy
    top_k: int
    slash_fraction_bps: int
    tolerance: int
    target_accuracy: int
    worker_reward: int
    validator_reward: int
    worker_deposit: int
    validator_stake: int  # the task's minimum stake
    validator_stakes: tuple[int, ...]  # what each validator stakes: unequal, at least the minimum
    honest_workers: tuple[bool, ...]
    honest_validators: tuple[bool, ...]
    truth_scores: tuple[tuple[int, ...], ...]  # [round][worker]
    submits: tuple[tuple[bool, ...], ...]  # [round][worker], honest workers always submit
    behaviours: tuple[tuple[str, ...], ...]  # [round][validator]
    lies: tuple[tuple[tuple[tuple[int, WorkerVerdict], ...], ...], ...]  # [round][validator][worker]
    unfetched: tuple[tuple[tuple[bool, ...], ...], ...]  # [round][validator][worker], if flooded
    accuracies: tuple[int, ...]  # [round] the honest global accuracy
    stop_before_round: int  # 0 = never stop
    leaver_joins: bool  # an extra worker joins and leaves before the start


@st.composite
def histories(draw: st.DrawFn) -> History:
    n_workers = draw(st.integers(1, 3))
    n_validators = draw(st.integers(1, 3))
    rounds = draw(st.integers(1, 2))
    honest_workers = tuple(draw(st.booleans()) for _ in range(n_workers))
    honest_validators = tuple(draw(st.booleans()) for _ in range(n_validators))
    small_score = st.integers(-3, 5)
    lie = st.tuples(small_score, verdicts)
    validator_stake = draw(st.sampled_from([7, 2 * 10**17]))
    return History(
        n_workers=n_workers,
        n_validators=n_validators,
        rounds=rounds,
        committee_size=draw(st.sampled_from([1, 2, EVERYONE])),
        reward_policy=draw(st.sampled_from(RewardPolicy)),
        top_k=draw(st.integers(1, 3)),
        slash_fraction_bps=draw(st.sampled_from([0, 1, 3_333, 5_000, 10_000])),
        tolerance=draw(st.sampled_from([0, 1, 3])),
        target_accuracy=draw(st.sampled_from([0, 0, 800_000])),
        worker_reward=draw(st.sampled_from([0, 1, 7, 10**17, 3 * ETHER + 1])),
        validator_reward=draw(st.sampled_from([0, 1, 5, 10**17 + 3])),
        worker_deposit=draw(st.sampled_from([0, 3, 10**17])),
        validator_stake=validator_stake,
        validator_stakes=tuple(
            validator_stake * draw(st.sampled_from([1, 1, 2, 5])) + draw(st.sampled_from([0, 0, 3]))
            for _ in range(n_validators)
        ),
        honest_workers=honest_workers,
        honest_validators=honest_validators,
        truth_scores=tuple(
            tuple(draw(small_score) for _ in range(n_workers)) for _ in range(rounds)
        ),
        submits=tuple(
            tuple(h or draw(st.booleans()) for h in honest_workers) for _ in range(rounds)
        ),
        behaviours=tuple(
            tuple(
                draw(st.sampled_from(HONEST_BEHAVIOURS if h else BEHAVIOURS))
                for h in honest_validators
            )
            for _ in range(rounds)
        ),
        unfetched=tuple(
            tuple(tuple(draw(st.booleans()) for _ in range(n_workers)) for _ in range(n_validators))
            for _ in range(rounds)
        ),
        lies=tuple(
            tuple(tuple(draw(lie) for _ in range(n_workers)) for _ in range(n_validators))
            for _ in range(rounds)
        ),
        accuracies=tuple(draw(st.sampled_from([700_000, 900_000])) for _ in range(rounds)),
        stop_before_round=draw(st.integers(0, rounds)),
        leaver_joins=draw(st.booleans()),
    )


def _check_history(world: World, h: History) -> None:
    requester = world.requester
    workers = world.workers[: h.n_workers]
    validators = world.validators[: h.n_validators]
    task, _ = requester.create_task(
        world.params(
            rounds=h.rounds,
            committee_size=h.committee_size,
            reward_policy=h.reward_policy,
            top_k=h.top_k,
            slash_fraction_bps=h.slash_fraction_bps,
            tolerance=h.tolerance,
            target_accuracy=h.target_accuracy,
            worker_reward_per_round=h.worker_reward,
            validator_reward_per_round=h.validator_reward,
            worker_deposit=h.worker_deposit,
            validator_stake=h.validator_stake,
        )
    )
    params = requester.task_params(task)
    policy = policy_of(params)
    escrow = params.escrow
    locked: dict[str, int] = {}
    credited: dict[str, int] = {}
    put_in: dict[str, int] = {}
    for worker in workers:
        worker.join_as_worker(task, h.worker_deposit)
        locked[worker.address] = put_in[worker.address] = h.worker_deposit
    for validator, stake in zip(validators, h.validator_stakes, strict=True):
        validator.join_as_validator(task, stake)
        locked[validator.address] = put_in[validator.address] = stake
    if h.leaver_joins:
        leaver = world.workers[3]
        leaver.join_as_worker(task, h.worker_deposit)
        leaver.leave_task(task)
        credited[leaver.address] = h.worker_deposit
        put_in[leaver.address] = h.worker_deposit
    requester.start(task, "bafkreivalidation")

    honest_majority_always = True
    for index in range(h.rounds):
        round = index + 1
        if h.stop_before_round == round:
            requester.stop_training(task)
            break
        submitters = [w for w, s in zip(workers, h.submits[index], strict=True) if s]
        submitted_index = [i for i, s in enumerate(h.submits[index]) if s]
        # Sortition: the chain's stake snapshot is the model's, and the chain seats exactly
        # those protocol.sortition seats (checked below by an unseated member's commit).
        info = requester.round_info(task, round)
        assert info.total_stake == sum(locked[v.address] for v in validators)
        votes = []
        unseated = []
        for v, (validator, behaviour) in enumerate(
            zip(validators, h.behaviours[index], strict=True)
        ):
            if behaviour == "absent":
                continue
            stake = locked[validator.address]
            beta = world.ticket(validator, task, round).beta
            if not (stake and is_selected(beta, h.committee_size, stake, info.total_stake)):
                unseated.append(validator)
                continue
            if behaviour == "liar":
                lies = [h.lies[index][v][i] for i in submitted_index]
                vote = Vote(tuple(s for s, _ in lies), tuple(a for _, a in lies), 10**6 - 1)
            elif behaviour in ("flooded", "lazy"):
                missed = [behaviour == "lazy" or h.unfetched[index][v][i] for i in submitted_index]
                # Scores are relative to the set judged: a member that missed some updates
                # measures the others against fewer, and reveals other numbers.
                shift = 7 * sum(k + 1 for k, m in enumerate(missed) if m)
                vote = Vote(
                    tuple(h.truth_scores[index][i] + shift for i in submitted_index),
                    tuple(
                        WorkerVerdict.UNAVAILABLE if m else WorkerVerdict(h.honest_workers[i])
                        for i, m in zip(submitted_index, missed, strict=True)
                    ),
                    h.accuracies[index],
                )
            else:
                vote = Vote(
                    tuple(h.truth_scores[index][i] for i in submitted_index),
                    tuple(h.honest_workers[i] for i in submitted_index),
                    h.accuracies[index],
                    reveal=behaviour == "honest",
                )
            votes.append((validator, vote))
        event(f"a willing validator unseated: {bool(unseated)}")
        played = play_round(world, task, round, submitters, votes, unseated=unseated[:1])
        revealers = [(validator, vote) for validator, vote in votes if vote.reveal]
        honest_revealers = sum(1 for v, _ in revealers if h.honest_validators[validators.index(v)])
        honest_majority_always &= 2 * honest_revealers > len(revealers)
        # Only complete members' scores are checked, against the median of the complete
        # judges, and only when a strict majority of those agree: an honest validator is safe
        # when the honest ones are at least half of every worker's complete judges.
        complete = complete_members(
            [
                CommitteeMember(True, vote.scores, tuple(map(WorkerVerdict, vote.verdicts)), 0, 0)
                for _, vote in revealers
            ]
        )
        for j in range(len(submitters)):
            judges = [
                v for (v, vote), whole in zip(revealers, complete, strict=True)
                if whole and vote.verdicts[j] != WorkerVerdict.UNAVAILABLE
            ]
            honest_judges = sum(1 for v in judges if h.honest_validators[validators.index(v)])
            honest_majority_always &= 2 * honest_judges >= len(judges)

        # The chain's settlement is exactly the Python reference run on the model's books.
        committee = [
            CommitteeMember(
                revealed=vote.reveal,
                scores=vote.scores if vote.reveal else (),
                verdicts=vote.verdicts if vote.reveal else (),
                global_accuracy=vote.accuracy,
                stake_left=locked[validator.address],
                stake=put_in[validator.address],
            )
            for validator, vote in votes
        ]
        expected = settle_round(
            policy,
            [locked[w.address] for w in submitters],
            committee,
            [SAMPLES_CLAIMED + i for i in range(len(submitters))],
        )
        result = played.result
        assert (
            result.consensus_scores,
            result.accepted,
            result.worker_payouts,
            result.worker_slashes,
            result.agreed,
            result.validator_payouts,
            result.validator_slashes,
            result.reveals,
            result.consensus_accuracy,
            result.returned_to_escrow,
        ) == (
            expected.consensus_scores,
            expected.accepted,
            expected.worker_payouts,
            expected.worker_slashes,
            expected.agreed,
            expected.validator_payouts,
            expected.validator_slashes,
            expected.reveals,
            expected.consensus_accuracy,
            expected.returned_to_escrow,
        )
        # Skipping the work never pays more than doing it: a lazy member (every worker
        # UNAVAILABLE) earns at most what any honest member that agreed earns, and is not
        # slashed for its laziness alone.
        behaviour_of = dict(zip(validators, h.behaviours[index], strict=True))
        lazy_pay = [p for (v, _), p in zip(votes, expected.validator_payouts, strict=True)
                    if behaviour_of[v] == "lazy"]
        honest_pay = [p for (v, _), p, a in zip(votes, expected.validator_payouts, expected.agreed, strict=True)
                      if behaviour_of[v] == "honest" and a]
        if submitters and honest_pay:
            assert max(lazy_pay, default=0) <= min(honest_pay)
        assert not any(
            slash for (v, vote), slash in zip(votes, expected.validator_slashes, strict=True)
            if behaviour_of[v] == "lazy"
        )
        for client, payout, slash in zip(
            submitters, expected.worker_payouts, expected.worker_slashes, strict=True
        ):
            credited[client.address] = credited.get(client.address, 0) + payout
            locked[client.address] -= slash
        for (client, _), payout, slash in zip(
            votes, expected.validator_payouts, expected.validator_slashes, strict=True
        ):
            credited[client.address] = credited.get(client.address, 0) + payout
            locked[client.address] -= slash
        escrow += expected.returned_to_escrow - h.worker_reward - h.validator_reward
        books = (escrow, sum(locked.values()), sum(credited.values()))
        assert requester.books(task) == books
        assert world.w3.eth.get_balance(task) == sum(books)
        done = terminates(
            round=round,
            rounds=h.rounds,
            target_accuracy=h.target_accuracy,
            reveals=expected.reveals,
            consensus_accuracy=expected.consensus_accuracy,
        )
        assert (requester.status(task) == TaskStatus.TERMINATED) == done
        if done:
            break
    else:
        raise AssertionError("the last round must terminate the task")

    assert requester.status(task) == TaskStatus.TERMINATED
    event(f"honest majority in every round: {honest_majority_always}")
    # Everyone withdraws what the model says it is owed; the books then hold only escrow, so
    # nobody the model owes nothing was owed anything on chain either.
    for client in [*workers, *validators, world.workers[3]]:
        owed = credited.get(client.address, 0) + locked.get(client.address, 0)
        honest = (client in workers and h.honest_workers[workers.index(client)]) or (
            client in validators and h.honest_validators[validators.index(client)]
        )
        if honest and honest_majority_always:
            assert owed >= put_in[client.address], f"honest {client.address} lost money"
        if owed:
            assert client.withdraw(task).event("Withdrawn").args["amount"] == owed
    assert requester.books(task) == (escrow, 0, 0)
    assert world.w3.eth.get_balance(task) == escrow
    if escrow:
        requester.reclaim_escrow(task, escrow)
    assert world.w3.eth.get_balance(task) == 0


@settings(
    max_examples=HISTORY_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_random_task_histories(world: World, history: History) -> None:
    world.reset()  # the fixture resets once per test; hypothesis runs many examples in it
    _check_history(world, history)
