"""A task whose model and data come from outside fl-node: a factory and a data loader in
a module the operators installed (a test fixture), the factory registered as an entry
point in the group fl_node.models as a plugin package would register it, run as a 2-round
task in one process (embedded chain, real libp2p hosts, gossip and block exchange)."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

import node.models
from node.chain import TaskStatus, Termination
from node.datasets import SourceOptions, load_source
from node.localnet.inprocess import run_inprocess
from node.models import architecture_of, build_model
from protocol.codec import decode_state_dict
from protocol.data import to_tensors
from protocol.models import ENTRY_POINT_GROUP
from protocol.training import evaluate

MODEL = "tiny_blobs_net(features=6, classes=4)"
LOADER = "fl_test_plugins:load_blobs"


async def test_two_rounds_with_a_plugin_model_and_loader(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point = EntryPoint("tiny_blobs_net", "fl_test_plugins:make_tiny", ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        node.models, "entry_points", lambda group: [point] if group == ENTRY_POINT_GROUP else []
    )
    result = await run_inprocess(
        tmp_path,
        tmp_path / "no-builtin-data",  # nothing built in is read
        workers=2,
        validators=1,
        rounds=2,
        model=MODEL,
        max_samples=None,
        # The validators judge on 100 training samples no worker trains on.
        validation_samples=100,
        data={"source": LOADER, "holdout_samples": 100},
        training={"epochs": 3, "lr": 0.1},
        # topk: this test is about the plugin model and loader; under "work", once this easy
        # task has converged (round 2) nothing shows work measurably, so the two workers'
        # updates are undecided and unpaid (protocol/work.py)
        task={"qualification_threshold": 0.3, "validation": "holdout", "reward_policy": "topk", "top_k": 2},
        timeout_s=300,
    )
    reader, task = result.reader, result.task
    params = reader.task_params(task)
    # The requester pinned the architecture; every node that joined reproduced it.
    assert params.model_arch == MODEL
    assert params.model_spec_hash == architecture_of(MODEL).hash() != bytes(32)
    assert reader.status(task) == TaskStatus.TERMINATED
    assert reader.termination(task) == Termination.ROUND_LIMIT
    assert all(node.done for node in result.nodes)
    assert [node.failed_txs for node in result.nodes] == [[]] * len(result.nodes)
    for r in result.rounds:
        assert r.finalized and all(r.agreed) and sum(r.worker_payouts) > 0
    # The workers shared the 300 training samples left after the held-out 100.
    claimed = [reader.update_commitment_of(task, 1, w)[1] for w in reader.submitted_workers(task, 1)]
    assert sorted(claimed) == [150, 150]
    # The committee's consensus accuracy and the final model, decoded against the plugin's
    # architecture spec, on the loader's test split (four blobs: chance is 0.25).
    assert result.rounds[-1].consensus_accuracy > 0.8 * 1e6
    final = result.requester.final_model
    assert final is not None
    state = decode_state_dict(final.read_bytes(), architecture_of(MODEL).codec_spec())
    model = build_model(MODEL)
    model.load_state_dict(state)
    test = load_source(LOADER, "test", SourceOptions(progress=None))
    images, labels = to_tensors(test)
    assert images.dtype == torch.float32 and np.array_equal(labels.numpy(), test.labels)
    assert evaluate(model, images, labels).accuracy > 0.8
