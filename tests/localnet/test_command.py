"""`fl-node localnet` refuses bad input before starting anything, with a message that says
what is wrong and how to fix it."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from node.cli import main
from node.datasets import BUILTIN, default_data_root, mnist_available
from node.localnet.command import (
    DATASETS,
    add_arguments,
    options_from_args,
    policy_notice,
    task_overrides,
)
from node.localnet.scenario import parse_scenario


@pytest.fixture
def mnist() -> None:
    if not mnist_available(default_data_root(), "train"):
        pytest.skip(f"MNIST not found under {default_data_root()}; the data check comes first")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["localnet", *argv])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_bad_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("[[worker]]\nindex = 0\nkind = 'sleepy'\n")
    status, text = _run(capsys, "--scenario", str(scenario), "--output", str(tmp_path / "o"))
    assert status == 2
    assert f"{scenario}: [[worker]] #1 kind must be one of" in text
    status, text = _run(capsys, "--scenario", str(tmp_path / "missing.toml"))
    assert status == 2 and "scenario file not found" in text


def test_scenario_index_beyond_the_command_line_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mnist: None
) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text("[[validator]]\nindex = 2\nkind = 'lazy'\n")
    status, text = _run(
        capsys, "--scenario", str(scenario), "--validators", "2", "--output", str(tmp_path / "o")
    )
    assert status == 2
    assert "runs 2 validators (indexes 0..1); raise --validators or lower the index" in text
    assert not (tmp_path / "o").exists()  # nothing was started


def test_missing_mnist_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline: the mirror is a closed local port and the cache is empty (tests never go online).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(BUILTIN, "mnist", replace(BUILTIN["mnist"], mirrors=("http://127.0.0.1:9/",)))
    status, text = _run(capsys, "--data-root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"))
    assert status == 2
    assert "mnist not found" in text and str(tmp_path / "nowhere") in text
    assert "--data-root" in text and "train-images-idx3-ubyte.gz: 440fcabf" in text
    assert not (tmp_path / "o").exists()


def test_unknown_model_is_refused_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mnist: None
) -> None:
    status, text = _run(capsys, "--model", "resnet50", "--output", str(tmp_path / "o"))
    assert status == 2 and "--model: model 'resnet50' is not one this node knows" in text
    assert not (tmp_path / "o").exists()


def test_dataset_choices_are_the_builtin_datasets() -> None:
    assert set(DATASETS) == set(BUILTIN)


def test_output_folder_must_be_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mnist: None
) -> None:
    output = tmp_path / "o"
    output.mkdir()
    (output / "results.json").write_text("{}")
    status, text = _run(capsys, "--output", str(output))
    assert status == 1
    assert "is not empty; pass another --output or delete it" in text


def test_in_process_refuses_crashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mnist: None
) -> None:
    scenario = tmp_path / "crash.toml"
    scenario.write_text("[[crash]]\nrole = 'worker'\nindex = 0\nafter_round = 1\n")
    status, text = _run(
        capsys, "--in-process", "--scenario", str(scenario), "--output", str(tmp_path / "o")
    )
    assert status == 1
    assert "worker-0 would stay down: give its [[crash]] a restart_after" in text


def test_committee_size_and_workers_per_round_become_task_overrides() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    scenario = parse_scenario(
        "[defaults]\ncommittee_size = 2\nworkers_per_round = 5\n[task]\ncommittee_size = 9\n"
        "tolerance = 0.1\n",
        source="s.toml",
    )
    merged = options_from_args(parser.parse_args(["--committee-size", "7"]), scenario)
    # the command line wins over [defaults], which wins over the scenario's [task]
    assert task_overrides(merged, scenario) == {
        "committee_size": 7, "workers_per_round": 5, "tolerance": 0.1,
    }
    merged = options_from_args(parser.parse_args(["--workers-per-round", "0"]), None)
    assert task_overrides(merged, None) == {}  # 0 is the task's default: every worker


def test_a_non_iid_partition_runs_the_localnet_under_topk_unless_a_scenario_says() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    iid = options_from_args(parser.parse_args([]), None)
    assert "reward_policy" not in task_overrides(iid, None)  # the task's default: work
    assert policy_notice(iid, task_overrides(iid, None)) is None
    skewed = options_from_args(parser.parse_args(["--partition", "dirichlet"]), None)
    overrides = task_overrides(skewed, None)
    assert (overrides["reward_policy"], overrides["top_k"]) == ("topk", 5)
    assert "work assumes IID workers" in (policy_notice(skewed, overrides) or "")
    chosen = parse_scenario('[task]\nreward_policy = "work"\n', source="s.toml")
    merged = options_from_args(parser.parse_args(["--partition", "shards"]), chosen)
    assert task_overrides(merged, chosen)["reward_policy"] == "work"  # the operator's choice
    assert policy_notice(merged, task_overrides(merged, chosen)) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "0"], ["--alpha", "-1"], ["--partition", "random"],
        ["--committee-size", "0"], ["--workers-per-round", "-1"],
    ],
)
def test_argument_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["localnet", *argv])
    assert info.value.code == 2
