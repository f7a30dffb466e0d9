"""The round as a Mermaid state diagram, generated from `phases.TRANSITIONS` (pure: the
caller writes it; `fl-node round-diagram --write docs/round.md` keeps the docs current)."""

from __future__ import annotations

from collections import defaultdict

from protocol.state.phases import TRANSITIONS, UPDATE_READERS
from protocol.state.records import PHASE_ORDER, Phase

HEADER = """# The round, as every node's state machine sees it

Generated from `protocol/state/phases.py:TRANSITIONS` by
`fl-node round-diagram --write docs/round.md`; a test fails when this file is stale.
An edge is labelled with the events that take it. `Tick` stands for the clock, checked
after every event: a phase ends at its deadline (a reveal phase also once nobody is left
to reveal). `PhaseChanged` is the chain ending a phase early, one step per phase up to
the one it names. A note says who can read the round's updates from that phase on
(`phases.UPDATE_READERS`).
"""


def mermaid() -> str:
    """The stateDiagram-v2 source of the round's transitions."""
    edges: dict[tuple[Phase, Phase], list[str]] = defaultdict(list)
    for (source, event), target in TRANSITIONS.items():
        edges[(source, target)].append(event.__name__)
    lines = ["stateDiagram-v2", f"    [*] --> {Phase.IDLE.value}"]
    for source, target in sorted(edges, key=lambda e: (PHASE_ORDER[e[0]], PHASE_ORDER[e[1]])):
        label = ", ".join(sorted(edges[(source, target)]))
        lines.append(f"    {source.value} --> {target.value} : {label}")
    for phase, readers in UPDATE_READERS.items():
        lines.append(f"    note right of {phase.value} : {readers}")
    lines.append(f"    {Phase.TERMINATED.value} --> [*]")
    return "\n".join(lines) + "\n"


def round_document() -> str:
    """docs/round.md: the header and the diagram."""
    return f"{HEADER}\n```mermaid\n{mermaid()}```\n"
