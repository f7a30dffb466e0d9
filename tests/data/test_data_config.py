"""The [data] and [task] keys for data sources and model references."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig, load_config

BASE = """
[node]
role = "worker"
data_dir = "data"

[chain]
rpc_url = "embedded"
private_key_file = "chain.key"
registry = "0x00000000000000000000000000000000000000aa"
"""


def load(tmp_path: Path, extra: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(BASE + extra)
    return load_config(path)


def test_sources_names_references_and_paths(tmp_path: Path) -> None:
    config = load(tmp_path, "")  # no [data]: MNIST from $FL_NODE_DATA_ROOT
    assert config.data.source == "mnist" and config.data.root is None
    config = load(tmp_path, '[data]\nsource = "fashion-mnist"\n[task]\nvalidation = "held/out.npz"\n')
    assert config.data.source == "fashion-mnist"
    assert config.task.validation == str(tmp_path / "held" / "out.npz")
    config = load(tmp_path, '[data]\nsource = "lab.data:load"\nmean = [0.5, 0.4, 1]\nstd = [2]\n')
    assert config.data.source == "lab.data:load"
    assert config.data.mean == (0.5, 0.4, 1.0) and config.data.std == (2.0,)
    config = load(tmp_path, '[task]\nmodel = "tabular_mlp(features=30, classes=2)"\n')
    assert config.task.model == "tabular_mlp(features=30, classes=2)"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('[data]\nstd = [0.5, 0]\n', "[data] std must be a list of numbers > 0"),
        ('[data]\nmean = ["a"]\n', "[data] mean must be a list of finite numbers"),
        ('[data]\nnum_classes = 1\n', "[data] num_classes must be a number >= 2"),
        ('[task]\nmodel = "tabular_mlp(features=3.5)"\n', "[task] model must be a model reference"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, extra: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, extra)


def test_holdout_validation_needs_enough_held_out_samples(tmp_path: Path) -> None:
    config = load(tmp_path, '[data]\nholdout_samples = 1000\n[task]\nvalidation = "holdout"\n')
    assert config.task.validation == "holdout" and config.data.holdout_samples == 1000
    with pytest.raises(ConfigError, match="needs \\[data\\] holdout_samples >= \\[task\\] "
                       "validation_samples \\(1000\\)"):
        load(tmp_path, '[data]\nholdout_samples = 10\n[task]\nvalidation = "holdout"\n')
