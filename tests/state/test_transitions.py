"""The round's transitions are data: every (phase, event) pair a machine can meet is
handled by a rule or ignored for a stated reason, and docs/round.md is the diagram the
transition table draws."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from protocol.state import events
from protocol.state.diagram import round_document
from protocol.state.persist import MACHINES
from protocol.state.phases import COMMON_RULES, TRANSITIONS, RoundMachine
from protocol.state.records import Phase, Role

REPO = Path(__file__).resolve().parents[2]
EVENTS = [
    cls
    for cls in vars(events).values()
    if inspect.isclass(cls) and issubclass(cls, events.Event) and cls is not events.Event
]


@pytest.mark.parametrize("role", list(Role))
def test_every_phase_and_event_is_handled_or_ignored_for_a_reason(role: Role) -> None:
    machine: type[RoundMachine[object]] = MACHINES[role]
    handled = set(COMMON_RULES) | set(machine.RULES)
    for phase in Phase:
        for event in EVENTS:
            pair = (phase, event)
            why = machine.IGNORED.get(pair)
            assert (pair in handled) != (why is not None), (
                f"{role}: ({phase}, {event.__name__}) is "
                + ("both handled and ignored" if why else "neither handled nor ignored")
            )
            assert why is None or why.strip()


def test_every_transition_starts_from_a_phase_its_event_is_handled_in() -> None:
    for phase, event in TRANSITIONS:
        if event is not events.Tick:  # the clock is the dispatcher's, not a rule's
            assert (phase, event) in COMMON_RULES, (phase, event.__name__)


def test_the_round_diagram_in_the_docs_is_current() -> None:
    assert (REPO / "docs/round.md").read_text(encoding="utf-8") == round_document(), (
        "docs/round.md is stale: run `fl-node round-diagram --write docs/round.md`"
    )


def test_fl_node_round_diagram_writes_that_document(tmp_path: Path) -> None:
    from node import cli

    target = tmp_path / "round.md"
    assert cli.main(["round-diagram", "--write", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == round_document()
