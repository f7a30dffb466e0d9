"""The chain poll's pace (`driver.poll_backoff`, `driver.FastPolls`): a waiting node backs
off while no block comes, but not in the phases that end on other nodes' transactions within
seconds (commit, reveal, finalizing), where each poll of delay delays the round; while the
machine awaits only others' transactions it polls faster, for a bounded number of polls."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.runtime.driver import (
    FAST_POLLS,
    MAX_POLL_BACKOFF_STEPS,
    PROMPT_PHASES,
    FastPolls,
    poll_backoff,
)
from protocol.state.phases import tx_key
from protocol.state.records import Phase, TxKind, TxStatus
from protocol.state.validator import ValidatorMachine
from protocol.state.worker import WorkerMachine

WAITING_PHASES = tuple(p for p in Phase if p not in PROMPT_PHASES)


def test_the_prompt_phases_are_those_that_end_on_others_transactions() -> None:
    assert set(PROMPT_PHASES) == {Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING}


def test_a_quiet_chain_backs_off_while_training_but_not_while_the_round_settles() -> None:
    steps = 0
    for _ in range(10):
        steps = poll_backoff(steps, False, Phase.TRAINING)
    assert steps == MAX_POLL_BACKOFF_STEPS  # an idle node sleeps
    for phase in PROMPT_PHASES:
        assert poll_backoff(MAX_POLL_BACKOFF_STEPS, False, phase) == 0


@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(tuple(Phase))), max_size=40),
)
def test_any_sequence_of_polls(polls: list[tuple[bool, Phase]]) -> None:
    steps = 0
    for found, phase in polls:
        before, steps = steps, poll_backoff(steps, found, phase)
        assert 0 <= steps <= MAX_POLL_BACKOFF_STEPS
        if found or phase in PROMPT_PHASES:
            assert steps == 0
        else:
            assert steps == min(before + 1, MAX_POLL_BACKOFF_STEPS)


def test_a_wait_on_others_gets_a_bounded_run_of_fast_polls() -> None:
    fast = FastPolls()
    assert not fast.take(None)
    assert [fast.take((3, Phase.REVEAL)) for _ in range(FAST_POLLS + 5)] == (
        [True] * FAST_POLLS + [False] * 5
    )  # a reveal that never comes costs FAST_POLLS polls, not a poll every quarter interval
    assert all(fast.take((3, Phase.FINALIZING)) for _ in range(FAST_POLLS))  # a new wait
    assert not fast.take(None)
    assert fast.take((3, Phase.FINALIZING))  # waiting again after a pause: a new run
    assert fast.take((4, Phase.REVEAL))


def test_the_machine_awaits_others_in_reveal_and_finalizing_and_a_committed_validator() -> None:
    validator = ValidatorMachine(b"\x01" * 20)
    worker = WorkerMachine(b"\x02" * 20)
    for phase in Phase:
        validator.view.phase = worker.view.phase = phase
        expected = phase in (Phase.REVEAL, Phase.FINALIZING)
        assert validator.awaits_others() is expected
        assert worker.awaits_others() is expected
    validator.view.phase = Phase.COMMIT
    validator.view.txs[tx_key(TxKind.COMMIT_MANIFEST, validator.view.round)] = TxStatus.PENDING
    assert not validator.awaits_others()  # still ours to land
    validator.view.txs[tx_key(TxKind.COMMIT_MANIFEST, validator.view.round)] = TxStatus.CONFIRMED
    assert validator.awaits_others()
