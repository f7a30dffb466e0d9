"""The Flower baseline does fl-node's work: a Flower client's training step is an fl-node
worker's, bit for bit, on the worker's own node.toml; the server starts from the model
fl-node's requester publishes; round walls are read as bench.round_profile measures them;
and (where scripts/flower-setup.sh has made .venv-flower) a real Flower deployment's
global model is fl-node's FedAvg of those same updates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.flower_baseline import (
    DEFAULT_VENV,
    FINAL_MODEL,
    read_journal,
    run_flower,
    tree_cpu_seconds,
    write_localnet_configs,
)
from bench.flower_task import Requester, client_round, round_seed
from node.blocks import BlockStore
from node.config import load_config
from node.datasets import load_worker_shard
from node.models import build_model
from node.runtime import learning
from protocol.aggregation.fedavg import fedavg
from protocol.codec import ModelSpec, decode_state_dict
from protocol.envelope import generate_keypair
from tests.conftest import MNIST_ROOT, needs_mnist

# 1,300 training samples less the localnet's 1,000 held out: 60 per worker, seconds to train
SAMPLES = 1300


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Training is bit-for-bit reproducible at a fixed thread count: the workers' one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fl_node_update(worker_toml: Path, base: dict[str, torch.Tensor], seed: int, folder: Path) -> dict[str, torch.Tensor]:
    """What the fl-node worker with this node.toml trains from `base` (the runtime's job)."""
    config = load_config(worker_toml)
    private, _ = generate_keypair()
    with BlockStore(folder / "blocks") as store:
        book = learning.ModelBook("mnist_cnn", store, learning.TaskCrypto(private, b"\x01" * 20))
        shard = learning.load_worker_shard(config.data)
        return learning.train_update(book, base, shard, config.training, config.behaviour, seed)


@needs_mnist()
def test_a_flower_client_trains_what_the_fl_node_worker_trains(tmp_path: Path, one_thread: None) -> None:
    nodes = write_localnet_configs(tmp_path / "net", workers=5, rounds=2, data_root=MNIST_ROOT, max_samples=SAMPLES)
    worker = nodes / "worker-2" / "node.toml"
    base = build_model("mnist_cnn", seed=7).state_dict()

    flower = client_round(worker, "mnist_cnn", base, round=2)
    fl_node = fl_node_update(worker, base, round_seed(2, 2), tmp_path)

    assert flower.samples == len(load_worker_shard(load_config(worker).data)) == (SAMPLES - 1000) // 5
    assert flower.state.keys() == fl_node.keys()
    for name, tensor in fl_node.items():
        assert torch.equal(flower.state[name], tensor), name
    assert not torch.equal(flower.state["conv1.weight"], base["conv1.weight"])  # it trained


@needs_mnist()
def test_flower_starts_from_the_model_and_validation_set_of_fl_nodes_requester(tmp_path: Path) -> None:
    nodes = write_localnet_configs(tmp_path / "net", workers=5, rounds=3, data_root=MNIST_ROOT, max_samples=SAMPLES)
    requester = Requester.load(nodes / "requester" / "node.toml")
    config = load_config(nodes / "requester" / "node.toml")
    published = decode_state_dict(
        learning.initial_model_blob(config.task.model, config.task.model_seed),
        ModelSpec.of(build_model(config.task.model)),
    )
    initial = requester.initial_state()
    assert all(torch.equal(initial[name], tensor) for name, tensor in published.items())
    validation = learning.load_validation_set(config.data, config.task.validation_samples, config.task.validation)
    images, labels = requester.validation
    assert len(labels) == len(validation) == 1000
    assert torch.equal(labels, torch.from_numpy(validation.labels).long())
    assert requester.rounds == 3 and requester.model == "mnist_cnn"


def test_round_walls_run_from_one_round_start_to_the_next(tmp_path: Path) -> None:
    journal = tmp_path / "rounds.jsonl"
    client = {"load-seconds": 1.0, "train-seconds": 20.0, "process-seconds": 30.0}
    events = [
        {"event": "evaluated", "at": 104.0, "round": 0, "accuracy": 0.1},
        {"event": "round", "at": 105.0, "round": 1},
        {"event": "trained", "at": 130.0, "round": 1, "clients": [client], "errors": []},
        {"event": "evaluated", "at": 131.0, "round": 1, "accuracy": 0.9},
        {"event": "round", "at": 132.0, "round": 2},
        {"event": "trained", "at": 150.0, "round": 2, "clients": [client], "errors": ["boom"]},
        {"event": "evaluated", "at": 152.5, "round": 2, "accuracy": 0.95},
        {"event": "round", "at": 153.0, "round": 3},  # never finished: not a round
        {"event": "done", "at": 160.0},
    ]
    journal.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")

    run = read_journal(journal, launched=100.0)

    assert [r.round for r in run.rounds] == [1, 2]
    assert [r.wall for r in run.rounds] == [27.0, 21.0]  # round 2: to the next start, not its evaluation
    assert [r.training for r in run.rounds] == [25.0, 18.0]
    assert [r.accuracy for r in run.rounds] == [0.9, 0.95]
    assert run.startup == 5.0 and run.mean_wall == 24.0 and run.errors == ["boom"]


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEFAULT_VENV / "bin" / "flower-superlink").exists(),
    reason=f"Flower is not installed in {DEFAULT_VENV}: bash scripts/flower-setup.sh makes it",
)
@needs_mnist()
def test_a_flower_deployment_averages_fl_nodes_updates(tmp_path: Path, one_thread: None) -> None:
    """A SuperLink and two SuperNodes, one round: Flower's global model is fl-node's FedAvg
    of the two workers' fl-node updates from the requester's initial model."""
    nodes = write_localnet_configs(tmp_path / "net", workers=2, rounds=1, data_root=MNIST_ROOT, max_samples=SAMPLES)

    run = run_flower(nodes, tmp_path / "flower", timeout=600)

    assert [r.round for r in run.rounds] == [1] and run.errors == []
    assert len(run.rounds[0].clients) == 2 and run.rounds[0].wall > 0
    initial = Requester.load(nodes / "requester" / "node.toml").initial_state()
    workers = [nodes / f"worker-{i}" / "node.toml" for i in range(2)]
    updates = [fl_node_update(w, initial, round_seed(i, 1), tmp_path / f"w{i}") for i, w in enumerate(workers)]
    sizes = [len(load_worker_shard(load_config(w).data)) for w in workers]
    expected = fedavg(updates, sizes)
    with np.load(tmp_path / "flower" / FINAL_MODEL, allow_pickle=False) as final:
        assert sorted(final.files) == sorted(expected)
        for name, tensor in expected.items():
            np.testing.assert_allclose(final[name], tensor.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        trained = final["conv1.weight"]
    assert not np.array_equal(trained, initial["conv1.weight"].numpy())


def test_the_deployments_cpu_counts_processes_it_started_after_they_exit() -> None:
    """Flower starts a ClientApp process per message: its CPU time must still count once it
    has exited (reaped, it moves into its parent's)."""
    before = tree_cpu_seconds([os.getpid()])
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint(time.process_time())"
    child = subprocess.run([sys.executable, "-c", burn], capture_output=True, text=True, check=True)
    after = tree_cpu_seconds([os.getpid()])
    assert after - before >= float(child.stdout) - 2 / os.sysconf("SC_CLK_TCK")
    assert tree_cpu_seconds([]) == 0.0
