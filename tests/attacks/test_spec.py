"""Attack specs: node.toml's one-string form, parameters checked, and scenario parsing of
every worker kind with its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.attacks.spec import WORKER_ATTACKS, AttackSpec, AttackSpecError, parse_attack_spec
from node.config import ConfigError, parse_config
from node.localnet.scenario import ScenarioError, load_scenario, parse_scenario


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("honest", AttackSpec("honest")),
        ("sign_flip", AttackSpec("sign_flip", (("scale", 1.0),))),
        ("sign_flip:scale=4", AttackSpec("sign_flip", (("scale", 4.0),))),
        (
            "label_flip:target=7, source=1",
            AttackSpec("label_flip", (("source", 1), ("target", 7), ("fraction", 1.0))),
        ),
        (
            "label_flip:source=1,target=7,fraction=0.25",
            AttackSpec("label_flip", (("source", 1), ("target", 7), ("fraction", 0.25))),
        ),
        (
            "backdoor:fraction=0.5",
            AttackSpec("backdoor", (("target", 0), ("fraction", 0.5), ("size", 4), ("claim", 1.0))),
        ),
        ("inflated_samples", AttackSpec("inflated_samples", (("factor", 10), ("scale", 1.0)))),
        ("alie:z=0.52", AttackSpec("alie", (("z", 0.52), ("parts", 4), ("colluders", 0)))),
        (
            "alie:z=0.52,colluders=3",
            AttackSpec("alie", (("z", 0.52), ("parts", 4), ("colluders", 3))),
        ),
    ],
)
def test_spec_strings_parse_and_print_back(text: str, expected: AttackSpec) -> None:
    spec = parse_attack_spec(text)
    assert spec == expected
    assert parse_attack_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flipper", "kind must be one of"),
        ("sign_flip:scale=-1", "scale must be a finite number > 0, got -1"),
        ("sign_flip:scale=nan", "scale must be a finite number > 0"),
        ("gaussian:mu=0", "unknown parameter(s) ['mu'] for kind 'gaussian'; it takes ['sigma']"),
        ("label_flip:source=1", "target is required"),
        ("label_flip:source=3,target=3", "source and target must differ"),
        ("label_flip:source=1.5,target=3", "source must be an integer, got float 1.5"),
        ("backdoor:fraction=0", "fraction must be a fraction in (0, 1]"),
        ("scaled", "scale is required"),  # sized: only a scenario may leave it out
        ("alie", "z is required"),
        ("inflated_samples:factor=10000000", "factor must be an integer 1..1000000"),
        ("sign_flip:scale", "is not key=value"),
        ("sign_flip:scale=two", "is not a number"),
        ("sign_flip:scale=1,scale=2", "scale is given twice"),
    ],
)
def test_bad_spec_strings_say_what_fits(text: str, message: str) -> None:
    with pytest.raises(AttackSpecError) as caught:
        parse_attack_spec(text)
    assert message in str(caught.value)


def _config(worker: str) -> dict:
    return {
        "node": {"role": "worker", "data_dir": "data"},
        "chain": {"rpc_url": "embedded", "private_key_file": "k", "registry": "0x" + "11" * 20},
        "behaviour": {"worker": worker},
    }


def test_node_toml_takes_a_worker_attack_with_parameters(tmp_path: Path) -> None:
    config = parse_config(_config("label_flip:source=1,target=7"), tmp_path / "node.toml")
    assert parse_attack_spec(config.behaviour.worker)["target"] == 7
    with pytest.raises(ConfigError, match=r"node.toml: \[behaviour\] worker must be a worker attack"):
        parse_config(_config("label_flip:source=1"), tmp_path / "node.toml")


EVERY_KIND = """
[[worker]]
index = 0
kind = "sign_flip"
scale = 2
[[worker]]
index = 1
kind = "scaled"
[[worker]]
index = 2
kind = "gaussian"
sigma = 0.2
[[worker]]
index = 3
kind = "alie"
[[worker]]
index = 4
kind = "alie"
parts = 3
[[worker]]
index = 5
kind = "ipm"
epsilon = 0.1
[[worker]]
index = 6
kind = "label_flip"
source = 1
target = 7
[[worker]]
index = 7
kind = "backdoor"
target = 2
fraction = 0.25
size = 3
[[worker]]
index = 8
kind = "free_rider_noise"
[[worker]]
index = 9
kind = "copycat"
victim = 10
[[worker]]
index = 11
kind = "inflated_samples"
factor = 10
scale = 5
[[worker]]
index = 12
kind = "free_rider"
[[worker]]
index = 13
kind = "shuffled_labels"
"""


def test_scenario_parses_every_worker_kind_with_its_parameters() -> None:
    resolved = parse_scenario(EVERY_KIND, source="every.toml").resolve(workers=20, validators=2)
    specs = [parse_attack_spec(kind) for kind in resolved.worker_kinds]
    assert {s.kind for s in specs} == set(WORKER_ATTACKS) - {"noise"}
    assert str(specs[0]) == "sign_flip:scale=2.0"
    assert specs[1]["scale"] == 20.0  # model replacement: gamma = the workers averaged
    z = specs[3]["z"]  # 2 ALIE attackers of 20: s = 9, z = Phi^-1(11 / 20)
    assert z == 0.1256 and specs[4]["z"] == z  # 0.12566.. rounded down
    assert specs[4]["parts"] == 3 and specs[3]["parts"] == 4
    assert specs[5]["epsilon"] == 0.1
    assert (specs[6]["source"], specs[6]["target"]) == (1, 7)
    assert (specs[7]["target"], specs[7]["fraction"], specs[7]["size"]) == (2, 0.25, 3)
    assert specs[8]["sigma"] == 1e-3
    assert specs[9]["victim"] == 10
    assert (specs[11]["factor"], specs[11]["scale"]) == (10, 5.0)
    assert resolved.worker_kinds[10] == "honest"
    assert resolved.dishonest_workers() == frozenset(range(20)) - {10, *range(14, 20)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind = 'sign_flip'\nscale = 0\n", "[[worker]] #1 (kind 'sign_flip') scale must be"),
        ("kind = 'sign_flip'\nscale = '2'\n", "scale must be a number, got str '2'"),
        ("kind = 'gaussian'\nsigma = true\n", "sigma must be a number, got bool True"),
        ("kind = 'label_flip'\nsource = 1\n", "target is required for kind 'label_flip'"),
        ("kind = 'label_flip'\nsource = 1\ntarget = 1\n", "source and target must differ"),
        ("kind = 'backdoor'\nfraction = 1.5\n", "fraction must be a fraction in (0, 1]"),
        ("kind = 'ipm'\nsigma = 1\n", "[[worker]] #1 (kind 'ipm') has unknown key(s) ['sigma']"),
        ("kind = 'inflated_samples'\nfactor = 2.5\n", "factor must be an integer, got float"),
    ],
)
def test_bad_attack_parameters_name_the_file_and_key(text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("[[worker]]\nindex = 0\n" + text, source="bad.toml")
    assert str(caught.value).startswith("bad.toml: ")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[worker]]\nindex = 1\nkind = 'copycat'\nvictim = 1\n", "victim = 1 must name another"),
        ("[[worker]]\nindex = 1\nkind = 'copycat'\nvictim = 4\n", "victim = 4 must name another"),
        (
            "".join(f"[[worker]]\nindex = {i}\nkind = 'alie'\n" for i in range(3)),
            "3 attackers of 4 workers are a majority",
        ),
    ],
)
def test_parameters_checked_against_the_size_run(text: str, expected: str) -> None:
    scenario = parse_scenario(text, source="s.toml")
    with pytest.raises(ScenarioError) as caught:
        scenario.resolve(workers=4, validators=1)
    assert str(caught.value).startswith("s.toml: ") and expected in str(caught.value)


SCENARIOS = sorted((Path(__file__).parents[2] / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenarios_resolve_to_node_toml_specs(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    resolved = scenario.resolve(
        scenario.defaults.get("workers", 5), scenario.defaults.get("validators", 3)
    )
    for kind in resolved.worker_kinds:  # what the localnet writes into each worker's node.toml
        parse_config(_config(kind), tmp_path / "node.toml")
