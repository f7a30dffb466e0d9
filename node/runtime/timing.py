"""Timing events in a node's log: one line each, `timing {json}`, read by bench.round_profile.

A span has `start` and `end`, a point only `at` (wall-clock seconds, `time.time()`, so the
processes of one machine compare); `what` names the work (a job, a transaction, a fetch, a
gossip message, a chain read) and `round` the round it belongs to. They go through the
node's own logger at INFO, so they cost one formatted line and need no set-up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PREFIX = "timing "


def point(log: logging.LoggerAdapter[logging.Logger], what: str, round: int, **fields: Any) -> None:
    """Something happened now (a message received, chain events seen)."""
    log.info("%s%s", PREFIX, json.dumps({"what": what, "round": round, "at": time.time(), **fields}))


@contextmanager
def span(
    log: logging.LoggerAdapter[logging.Logger], what: str, round: int, **fields: Any
) -> Iterator[dict[str, Any]]:
    """The work inside the block; the yielded dict takes fields learnt on the way. Logged
    also when the block raises (with `failed`), so a failed job still shows its time."""
    record: dict[str, Any] = {"what": what, "round": round, **fields}
    start = time.time()
    try:
        yield record
    except BaseException as problem:
        record["failed"] = type(problem).__name__
        raise
    finally:
        record["start"], record["end"] = start, time.time()
        log.info("%s%s", PREFIX, json.dumps(record))


def parse(line: str) -> dict[str, Any] | None:
    """The event of one log line, or None when the line holds none."""
    at = line.find(PREFIX + "{")
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "what" in event else None
