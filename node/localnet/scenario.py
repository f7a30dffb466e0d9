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
committee_size = 3         # validators the VRF draws per round, stake-weighted (default: all)
validator_stakes = [1, 1, 2.5]  # each validator's stake in ETH, one per validator (default: all
                           # the task's minimum); the task's minimum becomes the smallest
workers_per_round = 4      # workers the round's seed draws to train (default 0: every one)

[[worker]]                 # indexes are 0-based: worker-0 .. worker-(N-1)
index = 4
kind = "label_flip"        # one of WORKER_KINDS (node.attacks.spec.WORKER_ATTACKS)
source = 1                 # the kind's parameters, if any, beside it
target = 7

[[validator]]
index = 2
kind = "lying"             # honest | lying | lazy | colluding | copycat

[[crash]]                  # SIGKILL a node once round `after_round` is finalized
role = "worker"            # worker | validator
index = 1
after_round = 1
restart_after = 2.0        # seconds until it is started again; omit to leave it down

[task]                     # optional: overrides of the requester's [task] (see node.toml)
qualification_threshold = 0.5
```

Worker kinds and their parameters (defaults in brackets): honest, shuffled_labels, noise,
free_rider, free_rider_noise (sigma [0.001]), copycat (victim [0]), sign_flip (scale [1]),
scaled (scale [number of workers]), gaussian (sigma [1]), alie (z [z_max of Baruch et al.
for the workers and ALIE attackers run], parts [4]), ipm (epsilon [0.5]), label_flip
(source, target), backdoor (target [0], fraction [0.3], size [4], claim: the share of its
samples it reports [1]), inflated_samples
(factor [10], scale [1]). See node.attacks.

Parsing (`parse_scenario`) checks types and names; `Scenario.resolve(workers, validators)`
checks indexes against the sizes actually run and fills in the parameters that depend on
them. Every error names the file and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from node.attacks.spec import WORKER_ATTACKS, AttackSpec, AttackSpecError, alie_z_max, parse_attack
from node.attacks.validator import VALIDATOR_ATTACKS
from protocol.limits import MAX_STAKE

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
    "stakes_in_wei",
]

ETHER_WEI = 10**18

WORKER_KINDS = tuple(WORKER_ATTACKS)
VALIDATOR_KINDS = VALIDATOR_ATTACKS
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
    "committee_size": (int,),
    "workers_per_round": (int,),
    "validator_stakes": (list,),
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
    attack: AttackSpec | None = None  # a worker's kind with its parameters


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
    worker_kinds: tuple[str, ...]  # node.toml's form: "kind" or "kind:key=value,..."
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
            if behaviour.attack is not None:
                attack = self._sized(behaviour.attack, workers)
                kinds["worker"][behaviour.index] = str(attack)
                if attack.kind == "copycat":
                    self._check_victim(behaviour.index, int(attack["victim"]), workers)
        for crash in self.crashes:
            self._check_index(crash.role, crash.index, sizes, "[[crash]]")
        return ResolvedScenario(
            description=self.description,
            worker_kinds=tuple(kinds["worker"]),
            validator_kinds=tuple(kinds["validator"]),
            crashes=self.crashes,
        )

    def _sized(self, attack: AttackSpec, workers: int) -> AttackSpec:
        """Fill the parameters that depend on how many workers (and attackers) run."""
        for name in attack.missing():
            if name == "scale":  # model replacement: gamma = the number of models averaged
                attack = attack.with_params(scale=float(workers))
            elif name == "z":
                attackers = sum(1 for b in self.behaviours if b.kind == "alie")
                try:
                    # rounded down: readable in node.toml and results, still within z_max
                    z = math.floor(alie_z_max(workers, attackers) * 10_000) / 10_000
                    attack = attack.with_params(z=z)
                except AttackSpecError as exc:
                    raise ScenarioError(f"{self.source}: [[worker]] kind \"alie\": {exc}") from None
        return attack

    def _check_victim(self, index: int, victim: int, workers: int) -> None:
        if victim == index or victim >= workers:
            raise ScenarioError(
                f"{self.source}: [[worker]] index = {index} kind \"copycat\" victim = {victim} "
                f"must name another worker of the {workers} run (0..{workers - 1})"
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
            attack = None
            if role == "worker":
                attack = _parse_attack(source, where, entry)
            else:
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
            behaviours.append(NodeBehaviour(role, index, kind, attack))  # type: ignore[arg-type]

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


def _parse_attack(source: str, where: str, entry: dict[str, Any]) -> AttackSpec:
    """A worker's kind and the parameter keys beside it (sized ones may wait for resolve)."""
    kind = entry.get("kind")
    if kind not in WORKER_ATTACKS:
        raise ScenarioError(
            f"{source}: {where} kind must be one of {list(WORKER_KINDS)}, got {_describe(kind)}"
        )
    allowed = _BEHAVIOUR_KEYS | {param.name for param in WORKER_ATTACKS[kind]}
    _reject_unknown(source, f"{where} (kind {kind!r})", entry, allowed)
    params = {key: value for key, value in entry.items() if key not in _BEHAVIOUR_KEYS}
    try:
        return parse_attack(kind, params, allow_sized=True)
    except AttackSpecError as exc:
        raise ScenarioError(f"{source}: {where} (kind {kind!r}) {exc}") from None


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
    minimums = {
        "workers": 1, "validators": 1, "rounds": 1, "max_samples": 1, "seed": 0,
        "committee_size": 1, "workers_per_round": 0,
    }
    for key, minimum in minimums.items():
        if key in raw and raw[key] < minimum:
            raise ScenarioError(f"{source}: [defaults] {key} must be >= {minimum}, got {raw[key]}")
    if "alpha" in raw and not raw["alpha"] > 0:
        raise ScenarioError(f"{source}: [defaults] alpha must be > 0, got {raw['alpha']}")
    parsed = dict(raw)
    if "validator_stakes" in raw:
        try:
            parsed["validator_stakes"] = stakes_in_wei(raw["validator_stakes"])
        except ValueError as exc:
            raise ScenarioError(f"{source}: [defaults] validator_stakes: {exc}") from None
    return parsed


def stakes_in_wei(stakes: list[object] | str) -> tuple[int, ...]:
    """Validator stakes in ETH ("1,1,2.5" or [1, 1, 2.5]) as wei; ValueError names the bad one."""
    items: list[object] = [s.strip() for s in stakes.split(",")] if isinstance(stakes, str) else stakes
    if not items:
        raise ValueError("give one stake in ETH per validator, e.g. 1,1,2,4")
    wei: list[int] = []
    for n, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            raise ValueError(f"stake #{n + 1} must be a number of ETH, got {_describe(item)}")
        try:
            amount = Decimal(str(item)) * ETHER_WEI
        except InvalidOperation:
            raise ValueError(f"stake #{n + 1} must be a number of ETH, got {item!r}") from None
        if not amount.is_finite() or amount <= 0 or amount != amount.to_integral_value():
            raise ValueError(f"stake #{n + 1} must be a positive whole number of wei, got {item!r} ETH")
        if amount > MAX_STAKE:
            raise ValueError(f"stake #{n + 1} is above MAX_STAKE, 2**112 wei, the most one validator stakes")
        wei.append(int(amount))
    return tuple(wei)


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
