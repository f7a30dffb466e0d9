"""node.config: the example node.toml loads; every kind of mistake names its key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
[node]
role = "worker"
data_dir = "data"

[chain]
rpc_url = "embedded"
private_key_file = "chain.key"
registry = "0x00000000000000000000000000000000000000aa"

[data]
root = "mnist"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_example_node_toml_loads() -> None:
    config = load_config(REPO / "node.toml")
    assert config.role == "worker"
    assert config.node.data_dir == (REPO / "data/worker0").resolve()
    assert config.network.key_file == config.node.data_dir / "identity.key"
    assert config.task.fixed("qualification_threshold") == 500_000
    assert config.chain.task == "auto" and not config.chain.embedded


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.node.data_dir == tmp_path / "data"
    assert config.chain.private_key_file == tmp_path / "chain.key"
    assert config.data.root == tmp_path / "mnist"
    assert config.network.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert config.training.epochs == 1 and config.behaviour.worker == "honest"
    assert config.chain.embedded


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "\n[training]\nepochs = 2\nepoch = 3\n", "[training] has unknown key(s) ['epoch']"),
        (lambda t: t + "\n[training]\nepochs = \"two\"\n", "[training] epochs must be an integer"),
        (lambda t: t + "\n[training]\nlr = true\n", "[training] lr must be a finite number"),
        (lambda t: t + "\n[training]\naverage_tail = 1.5\n", "[training] average_tail must be a fraction in [0, 1]"),
        (lambda t: t.replace('role = "worker"', 'role = "miner"'), "[node] role must be one of"),
        (lambda t: t.replace('data_dir = "data"', ""), "[node] data_dir is required"),
        (lambda t: t + "\n[extra]\nx = 1\n", "unknown section(s) ['extra']"),
        (lambda t: "stray = 1\n" + t, "outside any section"),
        (lambda t: t.replace("0x00000000000000000000000000000000000000aa", "0x12"), "[chain] registry"),
        (lambda t: t + "\n[behaviour]\nvalidator = \"sleepy\"\n", "[behaviour] validator must be one of"),
        (lambda t: t + "\n[data]\n", "not valid TOML"),  # a section twice
        (lambda t: t.replace('root = "mnist"', 'root = "mnist"\npart_index = 3'), "part_index 3"),
        (lambda t: t + "\n[task]\nqualification_threshold = 1.5\n", "[task] qualification_threshold must be a fraction"),
        (lambda t: t + "\n[task]\nworkers_per_round = -1\n", "[task] workers_per_round must be"),
        (lambda t: t + "\n[task]\naggregator = \"mean\"\n", "[task] aggregator must be an aggregation rule spec (unknown aggregation rule 'mean'"),
        (lambda t: t + "\n[task]\naggregator = \"fedavg:1\"\n", "fedavg tolerates no Byzantine updates"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, edit, expected: str) -> None:
    path = write(tmp_path, edit(MINIMAL))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert expected in message


def test_workers_per_round_reaches_the_task_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).task.workers_per_round == 0
    config = load_config(write(tmp_path, MINIMAL + "\n[task]\nworkers_per_round = 4\n"))
    assert config.task.workers_per_round == 4


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="nowhere.toml: config file not found"):
        load_config(missing)
