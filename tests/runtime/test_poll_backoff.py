"""The chain poll's backoff (`driver.poll_backoff`): a waiting node backs off while no
block comes, but not in the phases that end on other nodes' transactions within seconds
(commit, reveal, finalizing), where each poll of delay delays the round."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.runtime.driver import MAX_POLL_BACKOFF_STEPS, PROMPT_PHASES, poll_backoff
from protocol.state.records import Phase

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
