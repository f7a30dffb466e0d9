"""`fl-node localnet --dataset/--model`: what the launcher writes into every node's config."""

from __future__ import annotations

from pathlib import Path

from node.config import load_config
from node.localnet.configs import NodePlan, TaskDefaults, node_document, write_node_config
from node.localnet.launcher import LocalnetOptions

KEY = "0x" + "11" * 32
REGISTRY = "0x00000000000000000000000000000000000000aa"


def test_dataset_model_and_held_out_validation_reach_every_node(tmp_path: Path) -> None:
    options = LocalnetOptions(output=tmp_path / "o", data_root=tmp_path, dataset="cifar10")
    assert options.model_reference == "cifar_cnn"  # the dataset's built-in model
    assert LocalnetOptions(tmp_path, tmp_path, model="mnist_2nn").model_reference == "mnist_2nn"
    task = TaskDefaults(rounds=2, workers=3, validators=1, model=options.model_reference,
                        validation="holdout")
    configs = {}
    for role, part in (("requester", 0), ("worker", 2)):
        plan = NodePlan(f"{role}-x", role, tmp_path / role, KEY, "honest", part)
        document = node_document(
            plan, rpc_url="http://127.0.0.1:8545", registry=REGISTRY, bootstrap=[],
            data_root=tmp_path, partition="iid", alpha=0.5, num_parts=3, seed=1,
            max_samples=None, task=task, dataset=options.dataset, holdout_samples=1000,
        )
        write_node_config(plan, document)
        configs[role] = load_config(plan.config_path)
    for config in configs.values():
        assert config.data.source == "cifar10" and config.data.holdout_samples == 1000
    requester = configs["requester"].task
    assert requester.model == "cifar_cnn" and requester.validation == "holdout"
    assert requester.validation_samples == 1000
