"""Sampling in a whole in-process task (embedded chain, real libp2p hosts, real MNIST): with
`workers_per_round` below the workers, a worker builds a round's global model only when a
later round draws it, and the model it then trains from is, bit for bit, the one the
requester and the committee built from the same round (every build's SHA-256 is logged by
node.runtime.learning at debug level). Workers left out of the next round build nothing.

A 3-round run of eight nodes takes minutes on a loaded 2-core machine: FL_HEAVY_INPROCESS=1."""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import needs_mnist, run_mnist_task

pytestmark = [
    needs_mnist(),
    pytest.mark.skipif(not os.environ.get("FL_HEAVY_INPROCESS"), reason="set FL_HEAVY_INPROCESS=1"),
]

BUILT = re.compile(r"global model after round (\d+) \(\d+ updates\) built in (\S+): sha256 (\w+)")


async def test_a_worker_drawn_later_trains_from_the_requesters_global_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="node.runtime.learning")
    rounds, workers = 3, 5
    result = await run_mnist_task(
        tmp_path, workers=workers, validators=2, rounds=rounds, model="mnist_2nn",
        max_samples=workers * 200 + 300, validation_samples=300, timeout_s=1500,
        task={"workers_per_round": 2, "qualification_threshold": 0.3, "reward_policy": "topk",
              "top_k": workers},
    )  # fmt: skip
    assert [r.finalized for r in result.rounds] == [True] * rounds
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    name_of = {node.address.lower(): node.name for node in result.nodes}
    # round -> node -> digest of the global model it built after that round
    built: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for record in caplog.records:
        if match := BUILT.search(record.getMessage()):
            built[int(match.group(1))][Path(match.group(2)).parent.name].add(match.group(3))
    for round in range(1, rounds):
        if not any(result.rounds[round - 1].accepted):
            continue  # the model carried over: nobody built one after this round
        by_node = built[round]
        assert "requester" in by_node, sorted(by_node)
        assert len({d for ds in by_node.values() for d in ds}) == 1, by_node  # the same bytes
        # every worker that trained in the next round built it; a worker built it only to
        # train in a later round (the next, or one after rounds that accepted nothing)
        trained_next = {name_of[w.lower()] for w in result.rounds[round].workers}
        trained_later = {name_of[w.lower()] for r in result.rounds[round:] for w in r.workers}
        builders = {name for name in by_node if name.startswith("worker")}
        assert trained_next <= builders <= trained_later, (round, builders, trained_next)
