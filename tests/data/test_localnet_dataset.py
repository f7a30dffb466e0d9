"""`fl-node localnet --dataset/--model`: what the launcher writes into every node's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import main
from node.config import load_config
from node.localnet import launcher
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


FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@pytest.mark.skipif(not (FASHION_ROOT / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="apt-get install dataset-fashion-mnist")
def test_localnet_command_takes_a_dataset_and_checks_the_model_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[LocalnetOptions] = []

    def run_localnet(options: LocalnetOptions) -> int:  # stands in for starting the network
        started.append(options)
        return 0

    monkeypatch.setattr(launcher, "run_localnet", run_localnet)
    argv = ["localnet", "--dataset", "fashion-mnist", "--data-root", str(FASHION_ROOT),
            "--output", str(tmp_path / "o")]
    assert main(argv) == 0
    assert started[0].dataset == "fashion-mnist" and started[0].model_reference == "mnist_cnn"
    assert main([*argv, "--model", "cifar_cnn"]) == 2  # 1x28x28 samples, a 3x32x32 model
    assert "--model: fashion-mnist: samples of shape (1, 28, 28) do not fit model 'cifar_cnn'" in (
        capsys.readouterr().err
    )
    assert len(started) == 1


def test_an_imported_model_named_by_the_operator_is_trusted_by_every_node(tmp_path: Path) -> None:
    task = TaskDefaults(rounds=1, workers=1, validators=1, model="lab.nets:make(width=4)")
    plan = NodePlan("worker-0", "worker", tmp_path / "w", KEY, "honest", 0)
    document = node_document(
        plan, rpc_url="http://127.0.0.1:8545", registry=REGISTRY, bootstrap=[],
        data_root=tmp_path, partition="iid", alpha=0.5, num_parts=1, seed=1,
        max_samples=None, task=task,
    )
    write_node_config(plan, document)
    assert load_config(plan.config_path).trusted_models == ("lab.nets:make(width=4)",)
