"""Scenario files for ``fl-node localnet``: who misbehaves, who crashes, and run defaults.

```toml
description = "one label-shuffling worker"       # optional, shown in results.json

[defaults]                 # optional; command-line flags win over these
workers = 5
validators = 3
rounds = 10
partition = "iid"          # iid | dirichlet | shards
alpha = 0.5
seed = 0
max_samples = 6000

[[worker]]                 # indexes are 0-based: worker-0 .. worker-(N-1)
index = 4
kind = "shuffled_labels"   # honest | shuffled_labels | noise | free_rider

[[validator]]
index = 2
kind = "lying"             # honest | lying | lazy

[[crash]]                  # SIGKILL a node once round `after_round` is finalized
role = "worker"            # worker | validator
index = 1
after_round = 1
restart_after = 2.0        # seconds until it is started again; omit to leave it down

[task]                     # optional: overrides of the requester's [task] (see node.toml)
qualification_threshold = 0.5
```

Parsing (`parse_scenario`) checks types and names; `Scenario.resolve(workers, validators)`
checks indexes against the sizes actually run. Every error names the file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PARTITIONS",
    "VALIDATOR_KINDS",
    "WORKER_KINDS",
    "Crash",
    "NodeBehaviour",
    "ResolvedScenario",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
]

WORKER_KINDS = ("honest", "shuffled_labels", "noise", "free_rider")
VALIDATOR_KINDS = ("honest", "lying", "lazy")
PARTITIONS = ("iid", "dirichlet", "shards")
RoleName = Literal["worker", "validator"]

_TOP_KEYS = {"description", "defaults", "task", "worker", "validator", "crash"}
_DEFAULT_KEYS: dict[str, tuple[type, ...]] = {
    "workers": (int,),
    "validators": (int,),
    "rounds": (int,),
    "partition": (str,),
    "alpha": (int, float),
    "seed": (int,),
    "max_samples": (int,),
}
_BEHAVIOUR_KEYS = {"index", "kind"}
_CRASH_KEYS = {"role", "index", "after_round", "restart_after"}


class ScenarioError(ValueError):
    """A scenario file is missing, not TOML, or wrong; the text names the file and the key."""


@dataclass(frozen=True)
class NodeBehaviour:
    role: RoleName
    index: int
    kind: str


@dataclass(frozen=True)
class Crash:
    role: RoleName
    index: int
    after_round: int
    restart_after: float | None  # None: the node stays down

    @property
    def node_name(self) -> str:
        return f"{self.role}-{self.index}"


@dataclass(frozen=True)
class ResolvedScenario:
    """A scenario checked against the localnet's size: every node's kind, and the crashes."""

    description: str
    worker_kinds: tuple[str, ...]
    validator_kinds: tuple[str, ...]
    crashes: tuple[Crash, ...]

    def dishonest_workers(self) -> frozenset[int]:
        return frozenset(i for i, kind in enumerate(self.worker_kinds) if kind != "honest")

    def dishonest_validators(self) -> frozenset[int]:
        return frozenset(i for i, kind in enumerate(self.validator_kinds) if kind != "honest")


@dataclass(frozen=True)
class Scenario:
    source: str
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)  # checked by node.config when written
    behaviours: tuple[NodeBehaviour, ...] = ()
    crashes: tuple[Crash, ...] = ()

    def resolve(self, workers: int, validators: int) -> ResolvedScenario:
        """Check indexes against the sizes run; every node not named is honest."""
        sizes = {"worker": workers, "validator": validators}
        kinds: dict[str, list[str]] = {
            "worker": ["honest"] * workers,
            "validator": ["honest"] * validators,
        }
        for behaviour in self.behaviours:
            self._check_index(behaviour.role, behaviour.index, sizes, f"[[{behaviour.role}]]")
            kinds[behaviour.role][behaviour.index] = behaviour.kind
        for crash in self.crashes:
            self._check_index(crash.role, crash.index, sizes, "[[crash]]")
        return ResolvedScenario(
            description=self.description,
            worker_kinds=tuple(kinds["worker"]),
            validator_kinds=tuple(kinds["validator"]),
            crashes=self.crashes,
        )

    def _check_index(self, role: str, index: int, sizes: dict[str, int], where: str) -> None:
        if index >= sizes[role]:
            raise ScenarioError(
                f"{self.source}: {where} index = {index} names {role}-{index}, but this localnet "
                f"runs {sizes[role]} {role}s (indexes 0..{sizes[role] - 1}); raise --{role}s "
                "or lower the index"
            )


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: scenario file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file: {exc}") from exc
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
    _reject_unknown(source, "the top level", document, _TOP_KEYS)

    description = document.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{source}: description must be a string, got {_describe(description)}")

    defaults = _parse_defaults(source, document.get("defaults", {}))
    task = document.get("task", {})
    if not isinstance(task, dict):
        raise ScenarioError(f"{source}: [task] must be a table, got {_describe(task)}")
    behaviours: list[NodeBehaviour] = []
    seen: set[tuple[str, int]] = set()
    for role, kinds in (("worker", WORKER_KINDS), ("validator", VALIDATOR_KINDS)):
        for n, entry in enumerate(_table_array(source, document, role)):
            where = f"[[{role}]] #{n + 1}"
            _reject_unknown(source, where, entry, _BEHAVIOUR_KEYS)
            index = _non_negative_int(source, where, entry, "index")
            kind = entry.get("kind")
            if kind not in kinds:
                raise ScenarioError(
                    f"{source}: {where} kind must be one of {list(kinds)}, got {_describe(kind)}"
                )
            if (role, index) in seen:
                raise ScenarioError(
                    f"{source}: {where} names {role}-{index} a second time; give each node "
                    "one behaviour"
                )
            seen.add((role, index))
            behaviours.append(NodeBehaviour(role=role, index=index, kind=kind))  # type: ignore[arg-type]

    crashes = [_parse_crash(source, n, entry) for n, entry in enumerate(
        _table_array(source, document, "crash")
    )]
    return Scenario(
        source=source,
        description=description,
        defaults=defaults,
        task=dict(task),
        behaviours=tuple(behaviours),
        crashes=tuple(crashes),
    )


def _parse_defaults(source: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: [defaults] must be a table, got {_describe(raw)}")
    _reject_unknown(source, "[defaults]", raw, set(_DEFAULT_KEYS))
    for key, value in raw.items():
        allowed = _DEFAULT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise ScenarioError(
                f"{source}: [defaults] {key} must be {names}, got {_describe(value)}"
            )
    if "partition" in raw and raw["partition"] not in PARTITIONS:
        raise ScenarioError(
            f"{source}: [defaults] partition must be one of {list(PARTITIONS)}, "
            f"got {raw['partition']!r}"
        )
    minimums = {"workers": 1, "validators": 1, "rounds": 1, "max_samples": 1, "seed": 0}
    for key, minimum in minimums.items():
        if key in raw and raw[key] < minimum:
            raise ScenarioError(f"{source}: [defaults] {key} must be >= {minimum}, got {raw[key]}")
    if "alpha" in raw and not raw["alpha"] > 0:
        raise ScenarioError(f"{source}: [defaults] alpha must be > 0, got {raw['alpha']}")
    return dict(raw)


def _parse_crash(source: str, n: int, entry: dict[str, Any]) -> Crash:
    where = f"[[crash]] #{n + 1}"
    _reject_unknown(source, where, entry, _CRASH_KEYS)
    role = entry.get("role")
    if role not in ("worker", "validator"):
        raise ScenarioError(
            f"{source}: {where} role must be \"worker\" or \"validator\", got {_describe(role)}"
        )
    index = _non_negative_int(source, where, entry, "index")
    after_round = _non_negative_int(source, where, entry, "after_round")
    if after_round < 1:
        raise ScenarioError(
            f"{source}: {where} after_round must be >= 1 (rounds are numbered from 1), "
            f"got {after_round}"
        )
    restart_after = entry.get("restart_after")
    if restart_after is not None and (
        isinstance(restart_after, bool)
        or not isinstance(restart_after, int | float)
        or restart_after < 0
    ):
        raise ScenarioError(
            f"{source}: {where} restart_after must be a number of seconds >= 0 (omit it to "
            f"leave the node down), got {_describe(restart_after)}"
        )
    return Crash(
        role=role,
        index=index,
        after_round=after_round,
        restart_after=None if restart_after is None else float(restart_after),
    )


def _table_array(source: str, document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = document.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ScenarioError(
            f"{source}: {key} must be an array of tables written [[{key}]], got {_describe(entries)}"
        )
    return entries


def _non_negative_int(source: str, where: str, entry: dict[str, Any], key: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(
            f"{source}: {where} {key} must be an integer >= 0, got {_describe(value)}"
        )
    return value


def _reject_unknown(source: str, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(
            f"{source}: {where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}"
        )


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
