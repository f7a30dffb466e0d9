"""Launcher parts without a chain: node configs (checked by node.config), TOML writing,
process groups (real child processes), and option merging."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
import tomllib
from pathlib import Path

import pytest

from node.config import ConfigError, load_config
from node.localnet.command import add_arguments, options_from_args
from node.localnet.configs import NodePlan, TaskDefaults, node_document, to_toml, write_node_config
from node.localnet.processes import ManagedProcess, ProcessGroup, log_tail
from node.localnet.scenario import parse_scenario

REGISTRY = "0x" + "ab" * 20
KEY = "0x" + "11" * 32


def _document(plan: NodePlan, task: TaskDefaults, max_samples: int | None = 3000) -> dict:
    return node_document(
        plan,
        rpc_url="http://127.0.0.1:8545",
        registry=REGISTRY,
        bootstrap=["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc"],
        data_root=Path("/data/mnist"),
        partition="dirichlet",
        alpha=0.3,
        num_parts=3,
        seed=7,
        max_samples=max_samples,
        task=task,
    )


@pytest.mark.parametrize(
    ("role", "behaviour", "part"),
    [("requester", "honest", 0), ("worker", "noise", 2), ("validator", "lying", 0)],
)
def test_node_configs_load_with_node_config(tmp_path: Path, role: str, behaviour: str, part: int) -> None:
    plan = NodePlan(f"{role}-x", role, tmp_path / role, KEY, behaviour, part)
    task = TaskDefaults(rounds=4, workers=3, validators=2, overrides={"qualification_threshold": 0.45})
    write_node_config(plan, _document(plan, task))
    config = load_config(plan.config_path)  # what `fl-node run` will read
    assert config.node.role == role
    assert config.node.data_dir == plan.data_dir.resolve() and plan.data_dir.is_dir()
    assert config.chain.registry == REGISTRY and config.chain.task == "auto"
    assert config.network.bootstrap == ("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc",)
    assert (config.data.partition, config.data.alpha, config.data.part_index) == ("dirichlet", 0.3, part)
    assert config.data.max_samples == 3000 and config.data.num_parts == 3
    assert stat.S_IMODE(os.stat(plan.key_path).st_mode) == 0o600
    assert plan.key_path.read_text().strip() == KEY
    if role == "requester":
        assert config.task.rounds == 4
        assert (config.task.min_workers, config.task.max_workers) == (3, 3)
        assert config.task.committee_size == 2
        assert config.task.qualification_threshold == 0.45  # the scenario's override
        assert config.task.output == (plan.folder / "final-model.bin").resolve()
    elif role == "worker":
        assert config.behaviour.worker == "noise"
    else:
        assert config.behaviour.validator == "lying"


def test_bad_task_override_is_refused_before_writing(tmp_path: Path) -> None:
    plan = NodePlan("requester", "requester", tmp_path / "r", KEY)
    task = TaskDefaults(rounds=1, workers=1, validators=1, overrides={"roundz": 3})
    with pytest.raises(ConfigError, match=r"\[task\] has unknown key\(s\) \['roundz'\]"):
        write_node_config(plan, _document(plan, task))
    assert not plan.config_path.exists()


def test_to_toml_roundtrips() -> None:
    document = {
        "a": {"s": 'quote " and \\ backslash', "i": 10**21, "f": 0.1, "b": True, "l": ["x", "y"]},
        "b": {"p": Path("/tmp/x")},
    }
    parsed = tomllib.loads(to_toml(document))
    assert parsed == {
        "a": {"s": 'quote " and \\ backslash', "i": 10**21, "f": 0.1, "b": True, "l": ["x", "y"]},
        "b": {"p": "/tmp/x"},
    }
    with pytest.raises(ValueError, match="control character"):
        to_toml({"a": {"s": "line\nbreak"}})
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"a": {"d": {"nested": 1}}})


def _python(tmp_path: Path, name: str, code: str) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")


def test_process_group_detects_a_dead_node_and_stops_the_rest(tmp_path: Path) -> None:
    group = ProcessGroup()
    sleeper = group.add(_python(tmp_path, "sleeper", "import time; print('up', flush=True); time.sleep(600)"))
    # The child spawns a grandchild: stopping by process group must reach both.
    parent = group.add(
        _python(
            tmp_path,
            "parent",
            "import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            "print(p.pid, flush=True); time.sleep(600)",
        )
    )
    crasher = group.add(_python(tmp_path, "crasher", "import sys; print('boom'); sys.exit(3)"))
    for process in (sleeper, parent, crasher):
        process.start()
    while crasher.running:
        time.sleep(0.05)
    failed = group.failed()
    assert failed is crasher and failed.returncode == 3
    assert "boom" in failed.tail()
    while not parent.log_path.read_text().strip():
        time.sleep(0.05)
    grandchild = int(parent.log_path.read_text().split()[0])
    group.stop_all(timeout=5)
    assert not sleeper.running and not parent.running
    for _ in range(100):  # the grandchild got SIGTERM with its group; reaped by init
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {grandchild} survived stop_all")


def test_crash_and_restart_of_one_process(tmp_path: Path) -> None:
    group = ProcessGroup()
    node = group.add(_python(tmp_path, "node", "import time; print('run', flush=True); time.sleep(600)"))
    node.start()
    node.expected_down = True
    node.kill()
    assert not node.running and group.failed() is None  # an expected crash is no failure
    node.start()
    assert node.running and node.starts == 2 and not node.expected_down
    node.stop(timeout=5)
    assert "===== restart #1 =====" in node.log_path.read_text()
    assert group.failed() is node  # stopped without expected_down: reported...
    assert group.failed(clean_exit_ok=True) is node  # ...SIGTERM is not a clean exit


def test_clean_exit_after_the_task_is_no_failure(tmp_path: Path) -> None:
    group = ProcessGroup()
    done = group.add(_python(tmp_path, "done", "pass"))
    done.start()
    while done.running:
        time.sleep(0.05)
    assert group.failed() is done
    assert group.failed(clean_exit_ok=True) is None


def test_log_tail_reads_the_end(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert log_tail(path, lines=2) == "line 99998\nline 99999"
    assert "no log" in log_tail(tmp_path / "missing.log")


def test_command_line_beats_scenario_defaults_beat_builtins() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    scenario = parse_scenario("[defaults]\nworkers = 4\nrounds = 2\npartition = 'shards'\n")
    merged = options_from_args(parser.parse_args(["--workers", "3"]), scenario)
    assert merged == {
        "workers": 3, "validators": 3, "rounds": 2, "partition": "shards",
        "alpha": 0.5, "seed": 0, "max_samples": None, "dataset": "mnist", "model": None,
        "committee_size": None, "workers_per_round": None, "validator_stakes": None,
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "0"])
