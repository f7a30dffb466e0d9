"""Settlement without per-member storage: finalizeRound credits each member's one-slot
account and records the outcome only in its events; ChainClient.round_result reads a round's
outcome back from those events, and it agrees with the balances and the Python reference."""

from __future__ import annotations

from typing import Any

from node.chain import RoundResult
from protocol.manifest import to_verdicts
from protocol.rewards import CommitteeMember, settle_round
from tests.contracts.harness import SAMPLES_CLAIMED, Vote, World, play_round, policy_of

# finalizeRound's cost per extra worker at a committee of 4 (measured 30.8k: account
# read and write, the submitter and score reads, the event, the settlement's arithmetic).
# A per-worker storage record (two fresh slots, 44k) would break it; 15M / 256 = 58k is the
# most a worker may add for a 256-worker round to fit half a mainnet block.
MAX_FINALIZE_GAS_PER_WORKER = 45_000


def test_round_result_reads_each_round_from_its_own_events(world: World) -> None:
    params = world.params(rounds=2, slash_fraction_bps=5_000)
    task, _ = world.requester.create_task(params)
    other, _ = world.requester.create_task(params)  # settles the same round numbers alongside
    for t in (task, other):
        for worker in world.workers[:3]:
            worker.join_as_worker(t)
        for validator in world.validators[:3]:
            validator.join_as_validator(t)
        world.requester.start(t, "bafkreivalidationset")
    before = world.requester.round_result(task, 1)
    assert not before.finalized and before.workers == () and before.worker_payouts == ()

    committee = world.validators[:3]
    honest = Vote((30, 10, 5), (True, True, False), 900_000)
    first = play_round(world, task, 1, world.workers[:3], [(v, honest) for v in committee])
    elsewhere = Vote((1, 1), (True, True), 5)
    play_round(world, other, 1, world.workers[:2], [(v, elsewhere) for v in committee])
    second_vote = Vote((0, 40), (True, True), 910_000)
    second = play_round(world, task, 2, world.workers[1:3], [(v, second_vote) for v in committee])

    for round, play, vote, submitters in (
        (1, first, honest, world.workers[:3]),
        (2, second, second_vote, world.workers[1:3]),
    ):
        result: RoundResult = world.requester.round_result(task, round)
        assert result == play.result
        assert result.finalized and result.workers == tuple(w.address for w in submitters)
        assert result.validators == tuple(v.address for v in committee)
        deposits = [params.worker_deposit] * len(submitters)
        if round == 2:  # worker 2 was slashed in round 1
            deposits[1] -= first.result.worker_slashes[2]
        expected = settle_round(
            policy_of(params),
            deposits,
            [
                CommitteeMember(
                    True, vote.scores, to_verdicts(vote.verdicts), vote.accuracy, params.validator_stake
                )
                for _ in committee
            ],
            [SAMPLES_CLAIMED + i for i in range(len(submitters))],
        )
        assert result.worker_payouts == expected.worker_payouts
        assert result.worker_slashes == expected.worker_slashes
        assert result.consensus_scores == expected.consensus_scores
        assert result.accepted == expected.accepted
        assert result.validator_payouts == expected.validator_payouts
        assert result.agreed == expected.agreed
        assert result.reveals == 3 and result.returned_to_escrow == expected.returned_to_escrow
        assert result.consensus_accuracy == expected.consensus_accuracy

    # The one-slot accounts: credited and locked amounts add up round by round.
    for index, worker in enumerate(world.workers[:3]):
        paid = first.result.worker_payouts[index] + (
            second.result.worker_payouts[index - 1] if index else 0
        )
        assert world.requester.credited_balance(task, worker.address) == paid
        slashed = first.result.worker_slashes[index] + (
            second.result.worker_slashes[index - 1] if index else 0
        )
        locked = world.requester.locked_deposit(task, worker.address)
        assert locked == params.worker_deposit - slashed
    assert world.accounted(task) == world.w3.eth.get_balance(task)  # type: ignore[arg-type]


def test_finalize_gas_per_worker_stays_small(world: World) -> None:
    committee = world.validators[:4]
    finalize = {}
    for n_workers in (1, 4):
        task = world.started_task(n_workers=n_workers, n_validators=4)
        submitters = world.workers[:n_workers]
        vote = Vote(tuple(10 * (i + 1) for i in range(n_workers)), (True,) * n_workers, 900_000)
        play = play_round(world, task, 1, submitters, [(v, vote) for v in committee])
        finalize[n_workers] = play.finalize.gas_used
    per_worker = (finalize[4] - finalize[1]) // 3
    assert per_worker <= MAX_FINALIZE_GAS_PER_WORKER, finalize


def test_round_result_reads_logs_from_the_round_opening_block(world: World) -> None:
    """Without a from_block the query starts at the block that opened the round (found from
    the round's training start by bisecting headers), not at block 0."""
    task = world.started_task(n_validators=1, rounds=3)
    vote = Vote((10,), (True,), 900_000)
    play_round(world, task, 1, world.workers[:1], [(world.validators[0], vote)])
    second = play_round(world, task, 2, world.workers[:1], [(world.validators[0], vote)])
    eth = world.requester.w3.eth
    real_get_logs = eth.get_logs
    spans: list[int] = []

    def recording_get_logs(query: Any) -> Any:
        spans.append(int(query["fromBlock"]))
        return real_get_logs(query)

    eth.get_logs = recording_get_logs  # type: ignore[method-assign]
    try:
        result = world.requester.round_result(task, 2)
    finally:
        eth.get_logs = real_get_logs  # type: ignore[method-assign]
    assert result == second.result and result.finalized
    opened = world.requester.round_info(task, 2).training_start
    (start,) = spans
    assert 0 < start <= second.finalize.block_number
    assert eth.get_block(start)["timestamp"] >= opened > eth.get_block(start - 1)["timestamp"]
