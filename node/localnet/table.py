"""The live progress view: a status line when the current round's state changes, and one
table row per finalized round. Plain lines (no cursor tricks), so it reads the same in a
terminal, a pipe or a CI log."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from node.chain.tracker import RoundRecord
from protocol.fixedpoint import SCALE
from protocol.training import Metrics

__all__ = ["COLUMNS", "header", "round_row", "status_line"]

ETHER = 10**18
COLUMNS = (
    ("round", 5),
    ("accepted", 24),
    ("rejected", 24),
    ("consensus", 9),
    ("test acc", 8),
    ("paid ETH", 8),
    ("slashed", 8),
    ("gas", 9),
    ("secs", 5),
)


def _cells(values: list[str]) -> str:
    return "  ".join(v.ljust(width)[:width] if i else v.rjust(width)
                     for i, (v, (_, width)) in enumerate(zip(values, COLUMNS, strict=True)))


def header() -> str:
    title = _cells([name for name, _ in COLUMNS])
    return f"{title}\n{'-' * len(title)}"


def _short(names: list[str]) -> str:
    """worker-0, worker-3 -> w0 w3 (validators v0...)."""
    return " ".join(n[0] + n.split("-")[-1] for n in names) or "-"


def round_row(
    record: RoundRecord,
    name: Callable[[str], str],
    metrics: Metrics | None,
    gas: int,
) -> str:
    paid = sum(o.payout for o in record.workers.values()) + sum(
        o.payout for o in record.validators.values()
    )
    slashed = sum(o.slash for o in record.workers.values()) + sum(
        o.slash for o in record.validators.values()
    )
    consensus = (
        f"{record.consensus_accuracy / SCALE:.4f}" if record.consensus_accuracy is not None else "-"
    )
    seconds = (record.finalized_at or record.started_at) - record.started_at
    return _cells(
        [
            str(record.round),
            _short([name(a) for a in record.accepted]),
            _short([name(a) for a in record.rejected]),
            consensus,
            f"{metrics.accuracy:.4f}" if metrics else "n/a",
            f"{paid / ETHER:.3f}",
            f"{slashed / ETHER:.3f}",
            str(gas),
            str(seconds),
        ]
    )


def status_line(
    record: RoundRecord | None,
    phase: str,
    expected: Mapping[str, int],
    down: list[str],
) -> str:
    """`round 2 commit: 3/3 updates, 1/2 commits, 0/2 reveals` (+ nodes that are down)."""
    if record is None:
        text = f"waiting for the task to start ({phase})"
    else:
        text = (
            f"round {record.round} {phase}: {len(record.submissions)}/{expected['workers']} updates, "
            f"{len(record.committed)}/{expected['validators']} commits, "
            f"{len(record.reveals)}/{expected['validators']} reveals"
        )
    if down:
        text += f"  [down: {', '.join(down)}]"
    return text
