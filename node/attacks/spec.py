"""Which attack a worker runs, with its parameters: the scenario's and node.toml's vocabulary.

A spec is written two ways. In a scenario, as keys of the worker's table::

    [[worker]]
    index = 3
    kind = "label_flip"
    source = 1
    target = 7

and in node.toml's ``[behaviour] worker`` as one string, ``kind`` or
``kind:key=value,key=value`` (``"label_flip:source=1,target=7"``), which is what the
localnet writes for each node. Both parse to the same `AttackSpec`, checked against
`WORKER_ATTACKS`. Parameters marked `sized` depend on the size of the run (how many workers,
how many attackers) and have no default in node.toml: the localnet's scenario fills them in.

Pure: no numpy, no torch, so node.config can import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

__all__ = [
    "WORKER_ATTACKS",
    "AttackSpec",
    "AttackSpecError",
    "Param",
    "alie_z_max",
    "parse_attack",
    "parse_attack_spec",
]

Number = int | float

MAX_SAMPLE_FACTOR = 1_000_000
"""Largest sample-count multiplier an `inflated_samples` worker may claim, so the claim it
writes on chain stays far inside uint256 even for the largest shards."""


class AttackSpecError(ValueError):
    """An attack kind or parameter is wrong; the text names the parameter and what fits."""


def _positive(value: Number) -> str | None:
    return None if value > 0 and math.isfinite(value) else "a finite number > 0"


def _non_negative(value: Number) -> str | None:
    return None if value >= 0 and math.isfinite(value) else "a finite number >= 0"


def _fraction(value: Number) -> str | None:
    return None if 0 < value <= 1 else "a fraction in (0, 1]"


def _label(value: Number) -> str | None:
    return None if 0 <= value < 1000 else "a class index 0..999"


def _at_least(minimum: int, maximum: int) -> Callable[[Number], str | None]:
    return lambda value: None if minimum <= value <= maximum else f"an integer {minimum}..{maximum}"


@dataclass(frozen=True)
class Param:
    name: str
    type: type  # int or float (an int is accepted where a float is expected)
    check: Callable[[Number], str | None]  # None when fine, else what would be accepted
    default: Number | None = None  # None: required (or, when sized, filled by the scenario)
    sized: bool = False  # default depends on the run's size; Scenario.resolve fills it in
    doc: str = ""


_COLLUDERS = (
    "attackers pooling their honest updates in-process (0: none, each estimates alone)"
)

WORKER_ATTACKS: dict[str, tuple[Param, ...]] = {
    "honest": (),
    "shuffled_labels": (),
    "noise": (),
    "free_rider": (),
    "free_rider_noise": (
        Param("sigma", float, _positive, 1e-3, doc="std of the noise added to the base"),
    ),
    "copycat": (  # the runtime copies the first update another worker announces instead
        Param("victim", int, _at_least(0, 100_000), 0, doc="index of the copied worker"),
    ),
    "sign_flip": (Param("scale", float, _positive, 1.0, doc="update = base - scale * delta"),),
    "scaled": (
        Param("scale", float, _positive, sized=True, doc="boost gamma (default: worker count)"),
    ),
    "gaussian": (Param("sigma", float, _positive, 1.0, doc="std of the delta's noise"),),
    "alie": (
        Param("z", float, _non_negative, sized=True, doc="z_max (default: from the paper)"),
        Param("parts", int, _at_least(2, 64), 4, doc="local deltas estimating mean and std"),
        Param("colluders", int, _at_least(0, 64), 0, doc=_COLLUDERS),
    ),
    "ipm": (
        Param("epsilon", float, _positive, 0.5, doc="update = base - epsilon * mean"),
        Param("colluders", int, _at_least(0, 64), 0, doc=_COLLUDERS),
    ),
    "label_flip": (
        Param("source", int, _label, doc="class whose samples are relabelled"),
        Param("target", int, _label, doc="label they get"),
        Param("fraction", float, _fraction, 1.0, doc="share of the source class flipped"),
    ),
    "backdoor": (
        Param("target", int, _label, 0, doc="label of triggered images"),
        Param("fraction", float, _fraction, 0.3, doc="share of the shard stamped"),
        Param("size", int, _at_least(1, 16), 4, doc="side of the square trigger, pixels"),
        Param("claim", float, _fraction, 1.0, doc="share of its true sample count it claims"),
    ),
    "inflated_samples": (
        Param("factor", int, _at_least(1, MAX_SAMPLE_FACTOR), 10, doc="claimed / true count"),
        Param("scale", float, _positive, 1.0, doc="boost gamma of the honest delta"),
    ),
}


@dataclass(frozen=True)
class AttackSpec:
    """One worker's attack: its kind and every parameter with its value."""

    kind: str
    params: tuple[tuple[str, Number], ...] = ()

    def __getitem__(self, name: str) -> Number:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"attack {self.kind!r} has no parameter {name!r}")

    def missing(self) -> tuple[str, ...]:
        """The sized parameters still to be filled in from the run's size."""
        given = {key for key, _ in self.params}
        return tuple(p.name for p in WORKER_ATTACKS[self.kind] if p.name not in given)

    def with_params(self, **values: Number) -> AttackSpec:
        merged = dict(self.params) | values
        order = [p.name for p in WORKER_ATTACKS[self.kind]]
        return AttackSpec(self.kind, tuple((k, merged[k]) for k in order if k in merged))

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v!r}" for k, v in self.params)


def parse_attack(kind: Any, raw: Mapping[str, Any], *, allow_sized: bool = False) -> AttackSpec:
    """Check a kind and its parameters; defaults fill what is omitted. With `allow_sized`,
    sized parameters may stay missing (the scenario fills them in when it knows the size)."""
    if kind not in WORKER_ATTACKS:
        raise AttackSpecError(f"kind must be one of {list(WORKER_ATTACKS)}, got {kind!r}")
    params = WORKER_ATTACKS[kind]
    unknown = sorted(set(raw) - {p.name for p in params})
    if unknown:
        takes = [p.name for p in params] or "no parameters"
        raise AttackSpecError(f"unknown parameter(s) {unknown} for kind {kind!r}; it takes {takes}")
    values: list[tuple[str, Number]] = []
    for param in params:
        if param.name not in raw:
            if param.default is not None:
                values.append((param.name, param.default))
            elif not (param.sized and allow_sized):
                raise AttackSpecError(
                    f"{param.name} is required for kind {kind!r} ({param.doc})"
                )
            continue
        values.append((param.name, _check_value(param, raw[param.name])))
    spec = AttackSpec(kind, tuple(values))
    if kind == "label_flip" and spec["source"] == spec["target"]:
        raise AttackSpecError(
            f"source and target must differ (both are {spec['source']}); "
            "the attack relabels the source class as the target"
        )
    return spec


def parse_attack_spec(text: str) -> AttackSpec:
    """``kind`` or ``kind:key=value,...`` (node.toml's form) -> AttackSpec; every parameter
    the kind needs must be there."""
    kind, _, rest = text.partition(":")
    raw: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AttackSpecError(f"{item!r} in {text!r} is not key=value")
        if key in raw:
            raise AttackSpecError(f"{key} is given twice in {text!r}")
        raw[key] = _number(value.strip(), key)
    return parse_attack(kind.strip(), raw)


def alie_z_max(workers: int, attackers: int) -> float:
    """z_max of "A Little Is Enough" (Baruch et al. 2019, Algorithm 1): with
    s = floor(n/2 + 1) - m honest workers needed on the attackers' side,
    z_max = Phi^-1((n - s) / n), the largest z whose shifted update still looks closer to
    the majority than that many honest ones."""
    if not 1 <= attackers < workers:
        raise AttackSpecError(
            f"ALIE needs 1 <= attackers < workers, got {attackers} of {workers}"
        )
    supporters = workers // 2 + 1 - attackers
    if supporters <= 0:
        raise AttackSpecError(
            f"{attackers} attackers of {workers} workers are a majority; ALIE's z_max is "
            "unbounded there (give z explicitly)"
        )
    return NormalDist().inv_cdf((workers - supporters) / workers)


def _check_value(param: Param, value: Any) -> Number:
    allowed = (int,) if param.type is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        what = "an integer" if param.type is int else "a number"
        raise AttackSpecError(f"{param.name} must be {what}, got {type(value).__name__} {value!r}")
    problem = param.check(value)
    if problem is not None:
        raise AttackSpecError(f"{param.name} must be {problem}, got {value!r}")
    return float(value) if param.type is float else int(value)


def _number(text: str, key: str) -> Number:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise AttackSpecError(f"{key}={text!r} is not a number") from None
