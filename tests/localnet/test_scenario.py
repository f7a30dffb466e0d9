"""Scenario files: parsing, validation errors that name the key, and resolution by size."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.localnet.scenario import Crash, ScenarioError, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[2]

FULL = """
description = "mixed"
[defaults]
workers = 4
validators = 2
rounds = 3
partition = "dirichlet"
alpha = 0.3
max_samples = 2000
committee_size = 1
workers_per_round = 2
[task]
qualification_threshold = 0.4
[[worker]]
index = 3
kind = "shuffled_labels"
[[worker]]
index = 0
kind = "free_rider"
[[validator]]
index = 1
kind = "lazy"
[[crash]]
role = "worker"
index = 1
after_round = 1
restart_after = 2
"""


def test_full_scenario_parses_and_resolves() -> None:
    scenario = parse_scenario(FULL, source="mixed.toml")
    assert scenario.description == "mixed"
    assert scenario.defaults == {
        "workers": 4,
        "validators": 2,
        "rounds": 3,
        "partition": "dirichlet",
        "alpha": 0.3,
        "max_samples": 2000,
        "committee_size": 1,
        "workers_per_round": 2,
    }
    assert scenario.task == {"qualification_threshold": 0.4}
    resolved = scenario.resolve(workers=4, validators=2)
    assert resolved.worker_kinds == ("free_rider", "honest", "honest", "shuffled_labels")
    assert resolved.validator_kinds == ("honest", "lazy")
    assert resolved.dishonest_workers() == {0, 3}
    assert resolved.dishonest_validators() == {1}
    assert resolved.crashes == (Crash("worker", 1, 1, 2.0),)
    assert resolved.crashes[0].node_name == "worker-1"


def test_empty_scenario_is_all_honest() -> None:
    resolved = parse_scenario("").resolve(workers=2, validators=1)
    assert resolved.worker_kinds == ("honest", "honest")
    assert resolved.validator_kinds == ("honest",)
    assert resolved.crashes == ()


@pytest.mark.parametrize("name", ["honest.toml", "shuffled_labels.toml", "lying_validator.toml"])
def test_shipped_scenarios_load(name: str) -> None:
    scenario = load_scenario(REPO / "scenarios" / name)
    workers = scenario.defaults.get("workers", 5)
    validators = scenario.defaults.get("validators", 3)
    resolved = scenario.resolve(workers, validators)
    assert len(resolved.worker_kinds) == workers
    if name == "shuffled_labels.toml":
        assert "shuffled_labels" in resolved.worker_kinds
    if name == "lying_validator.toml":
        assert "lying" in resolved.validator_kinds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[worker]]\nindex = 0\nkind = 'flipper'\n", "[[worker]] #1 kind must be one of"),
        ("[[validator]]\nindex = 0\nkind = 'shuffled_labels'\n", "[[validator]] #1 kind"),
        ("[[worker]]\nindex = -1\nkind = 'noise'\n", "index must be an integer >= 0"),
        ("[[worker]]\nindex = true\nkind = 'noise'\n", "index must be an integer >= 0"),
        ("[[worker]]\nkind = 'noise'\n", "index must be an integer >= 0, got nothing"),
        ("[[worker]]\nindex = 0\nkind = 'noise'\nspeed = 2\n", "unknown key(s) ['speed']"),
        (
            "[[worker]]\nindex = 1\nkind = 'noise'\n[[worker]]\nindex = 1\nkind = 'free_rider'\n",
            "names worker-1 a second time",
        ),
        ("worker = 3\n", "worker must be an array of tables written [[worker]]"),
        ("[defaults]\nworkers = 0\n", "[defaults] workers must be >= 1"),
        ("[defaults]\nworkers = '3'\n", "[defaults] workers must be int"),
        ("[defaults]\nrounds = 2.5\n", "[defaults] rounds must be int"),
        ("[defaults]\npartition = 'random'\n", "[defaults] partition must be one of"),
        ("[defaults]\nalpha = 0\n", "[defaults] alpha must be > 0"),
        ("[defaults]\ncommittee_size = 0\n", "[defaults] committee_size must be >= 1"),
        ("[defaults]\nworkers_per_round = -1\n", "[defaults] workers_per_round must be >= 0"),
        ("[defaults]\nworkers_per_round = 0.5\n", "[defaults] workers_per_round must be int"),
        ("[defaults]\nepochs = 2\n", "[defaults] has unknown key(s) ['epochs']"),
        ("[crash]\nrole = 'worker'\n", "crash must be an array of tables"),
        ("[[crash]]\nrole = 'requester'\nindex = 0\nafter_round = 1\n", "role must be"),
        ("[[crash]]\nrole = 'worker'\nindex = 0\nafter_round = 0\n", "after_round must be >= 1"),
        (
            "[[crash]]\nrole = 'worker'\nindex = 0\nafter_round = 1\nrestart_after = -1\n",
            "restart_after must be a number of seconds >= 0",
        ),
        ("task = 3\n", "[task] must be a table"),
        ("description = 5\n", "description must be a string"),
        ("extra = 1\n", "the top level has unknown key(s) ['extra']"),
        ("[[worker]\n", "not valid TOML"),
    ],
)
def test_bad_scenarios_name_file_and_key(text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: ")
    assert expected in message


def test_index_beyond_the_localnet_size_is_an_error() -> None:
    scenario = parse_scenario("[[validator]]\nindex = 3\nkind = 'lying'\n", source="s.toml")
    scenario.resolve(workers=1, validators=4)  # fits
    with pytest.raises(ScenarioError, match=r"runs 3 validators \(indexes 0..2\); raise --validators"):
        scenario.resolve(workers=1, validators=3)
    crash = parse_scenario("[[crash]]\nrole='worker'\nindex=2\nafter_round=1\n", source="c.toml")
    with pytest.raises(ScenarioError, match=r"\[\[crash\]\] index = 2 names worker-2"):
        crash.resolve(workers=2, validators=1)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.toml")
