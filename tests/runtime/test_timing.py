"""The timing events a node logs (`node.runtime.timing`) read back from its log lines, as
bench.round_profile reads them."""

from __future__ import annotations

import logging

import pytest

from node.runtime import timing


def test_timing_events_read_back_from_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.LoggerAdapter(logging.getLogger("tests.timing"), {})
    with caplog.at_level(logging.INFO, logger="tests.timing"):
        with timing.span(log, "train", 3, samples=10) as record:
            record["extra"] = "learnt on the way"
        timing.point(log, "announced", 3, cid="bafy")
        with pytest.raises(RuntimeError), timing.span(log, "fetch", 0):
            raise RuntimeError("the fetch failed")
    found = [timing.parse("2026-11-29 16:00:00,000 INFO x: [w] " + r.getMessage()) for r in caplog.records]
    train, announced, fetch = found
    assert train is not None and announced is not None and fetch is not None
    assert (train["what"], train["round"], train["samples"], train["extra"]) == ("train", 3, 10, "learnt on the way")
    assert train["start"] <= train["end"]
    assert announced["what"] == "announced" and announced["cid"] == "bafy" and "at" in announced
    assert fetch["failed"] == "RuntimeError"
    assert timing.parse("round 3: training on 100 samples") is None
    assert timing.parse("timing {not json") is None
