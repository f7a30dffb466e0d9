"""Unequal validator stakes in the localnet: --validator-stakes and [defaults] validator_stakes
in ETH, checked before anything starts, and written into each validator's [node] stake_wei."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from node.cli import main
from node.config import ConfigError, parse_config
from node.localnet.command import add_arguments, options_from_args, stakes_problem, task_overrides
from node.localnet.configs import ETHER, NodePlan, TaskDefaults, funding_wei, node_document
from node.localnet.scenario import ScenarioError, parse_scenario, stakes_in_wei
from protocol.limits import MAX_STAKE


def _merged(argv: list[str], scenario_text: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    scenario = parse_scenario(scenario_text, source="s.toml") if scenario_text else None
    merged = options_from_args(parser.parse_args(argv), scenario)
    return merged, task_overrides(merged, scenario)


def test_stakes_are_ether_amounts_turned_into_wei() -> None:
    assert stakes_in_wei("1,1,2,4") == (ETHER, ETHER, 2 * ETHER, 4 * ETHER)
    assert stakes_in_wei([0.5, "2.25", 3]) == (ETHER // 2, 9 * ETHER // 4, 3 * ETHER)
    assert stakes_in_wei("0.000000000000000001") == (1,)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("1,0", "stake #2 must be a positive whole number of wei"),
        ("1,,2", "stake #2 must be a number of ETH"),
        ("two", "stake #1 must be a number of ETH"),
        ("0.0000000000000000001", "stake #1 must be a positive whole number of wei"),
        ("1e40", "stake #1 is above MAX_STAKE"),
        ([True], "stake #1 must be a number of ETH, got bool True"),
    ],
)
def test_bad_stakes_are_named(given: str | list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stakes_in_wei(given)


def test_the_smallest_stake_becomes_the_tasks_minimum_unless_task_sets_it() -> None:
    merged, overrides = _merged(["--validators", "4", "--validator-stakes", "1,1,2,4"])
    assert merged["validator_stakes"] == (ETHER, ETHER, 2 * ETHER, 4 * ETHER)
    assert overrides["validator_stake_wei"] == ETHER and stakes_problem(merged, overrides) is None
    # A scenario's [defaults] gives them too; the command line wins.
    text = "[defaults]\nvalidators = 2\nvalidator_stakes = [3, 5]\n"
    merged, overrides = _merged([], text)
    assert merged["validator_stakes"] == (3 * ETHER, 5 * ETHER)
    assert overrides["validator_stake_wei"] == 3 * ETHER
    merged, _ = _merged(["--validator-stakes", "7,8"], text)
    assert merged["validator_stakes"] == (7 * ETHER, 8 * ETHER)


def test_the_shipped_unequal_stakes_scenario_runs_as_written() -> None:
    text = (Path(__file__).resolve().parents[2] / "scenarios" / "unequal_stakes.toml").read_text()
    merged, overrides = _merged([], text)
    assert merged["validator_stakes"] == tuple(s * ETHER for s in (1, 1, 1, 1, 2, 2, 4, 4))
    assert stakes_problem(merged, overrides) is None
    assert overrides["committee_size"] == 4 and overrides["validator_stake_wei"] == ETHER


def test_stakes_that_cannot_run_are_refused_with_the_fix() -> None:
    merged, overrides = _merged(["--validators", "3", "--validator-stakes", "1,2"])
    assert "gives 2 stakes for 3 validators; give one per validator" in str(
        stakes_problem(merged, overrides)
    )
    text = f"[task]\nvalidator_stake_wei = {2 * ETHER}\n"
    merged, overrides = _merged(["--validators", "2", "--validator-stakes", "1,2"], text)
    assert f"{ETHER} wei is below the task's minimum stake, [task] validator_stake_wei" in str(
        stakes_problem(merged, overrides)
    )
    with pytest.raises(ScenarioError, match=r"s.toml: \[defaults\] validator_stakes: stake #1"):
        parse_scenario("[defaults]\nvalidator_stakes = [-1]\n", source="s.toml")
    with pytest.raises(ScenarioError, match=r"\[defaults\] validator_stakes must be list"):
        parse_scenario("[defaults]\nvalidator_stakes = 2\n", source="s.toml")


def test_the_command_refuses_a_stake_count_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["localnet", "--validators", "3", "--validator-stakes", "1,2", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and "--validator-stakes gives 2 stakes for 3 validators" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["localnet", "--validator-stakes", "1,-2"])
    assert "stake #2 must be a positive whole number of wei" in capsys.readouterr().err


def _document(tmp_path: Path, role: str, stake_wei: int) -> dict[str, Any]:
    plan = NodePlan(f"{role}-0", role, tmp_path / role, "0x" + "11" * 32, stake_wei=stake_wei)
    return node_document(
        plan, rpc_url="http://127.0.0.1:8545", registry="0x" + "22" * 20, bootstrap=[],
        data_root=tmp_path, partition="iid", alpha=0.5, num_parts=1, seed=0, max_samples=None,
        task=TaskDefaults(rounds=2, workers=1, validators=1),
    )  # fmt: skip


def test_a_validators_stake_reaches_its_node_config_and_funding(tmp_path: Path) -> None:
    document = _document(tmp_path, "validator", 5 * ETHER)
    assert parse_config(document, tmp_path / "v.toml").node.stake_wei == 5 * ETHER
    section = TaskDefaults(rounds=2, workers=1, validators=1).section(tmp_path / "m.bin")
    assert funding_wei("validator", section, 5 * ETHER) - funding_wei("validator", section) == 3 * ETHER
    assert "stake_wei" not in _document(tmp_path, "validator", 0)["node"]


def test_node_config_refuses_a_stake_it_cannot_use(tmp_path: Path) -> None:
    worker = _document(tmp_path, "worker", 0)
    worker["node"]["stake_wei"] = ETHER
    with pytest.raises(ConfigError, match=r"\[node\] stake_wei is a validator's stake; this node is a worker"):
        parse_config(worker, tmp_path / "w.toml")
    validator = _document(tmp_path, "validator", 0)
    validator["node"]["stake_wei"] = MAX_STAKE + 1
    with pytest.raises(ConfigError, match="stake_wei"):
        parse_config(validator, tmp_path / "v.toml")
