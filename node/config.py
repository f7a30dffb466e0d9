"""The node's TOML config (`fl-node run --config node.toml`); see node.toml for every key.

Loading is strict: unknown sections and keys are rejected, every value is type-checked,
and each error names the file, the key and what would be accepted. Relative paths are
resolved against the config file's folder (`network.key_file` against `node.data_dir`).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from node.attacks.spec import WORKER_ATTACKS, AttackSpecError, parse_attack_spec
from node.attacks.validator import VALIDATOR_ATTACKS
from protocol.aggregation import AggregationError
from protocol.aggregation.rule import AggregationRule
from protocol.data import BUILTIN_SPECS
from protocol.data import PARTITIONS as PARTITIONS
from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE
from protocol.limits import MAX_SAMPLES_PER_WORKER, MAX_STAKE
from protocol.models import ModelReference, is_import_reference

__all__ = [
    "BehaviourConfig",
    "ChainConfig",
    "ConfigError",
    "DataConfig",
    "NetworkConfig",
    "NodeConfig",
    "NodeSection",
    "TaskConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
]

ROLES = ("worker", "validator", "requester")
LOG_LEVELS = ("debug", "info", "warning", "error")
WORKER_BEHAVIOURS = tuple(WORKER_ATTACKS)  # each may carry parameters: "kind:key=value,..."
VALIDATOR_BEHAVIOURS = VALIDATOR_ATTACKS
REWARD_POLICIES = ("work", "contribution", "topk")
EMBEDDED_CHAIN = "embedded"
AUTO_TASK = "auto"
HOLDOUT = "holdout"  # [task] validation: the held-out slice of [data] source's train split


class ConfigError(ValueError):
    """A config file is missing, not TOML, or has a wrong key; the text names file and key."""


@dataclass(frozen=True)
class NodeSection:
    role: str
    data_dir: Path
    torch_threads: int = 1
    log_level: str = "info"
    status_listen: str = ""  # host:port of the status page; empty = no page
    trusted_models: tuple[str, ...] = ()  # "package.module:factory" a task may name
    stake_wei: int = 0  # a validator's stake in the task it joins; 0: the task's minimum


@dataclass(frozen=True)
class NetworkConfig:
    key_file: Path  # resolved against data_dir
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChainConfig:
    rpc_url: str
    private_key_file: Path
    registry: str
    task: str = AUTO_TASK
    poll_interval: float = 0.5

    @property
    def embedded(self) -> bool:
        return self.rpc_url == EMBEDDED_CHAIN


@dataclass(frozen=True)
class DataConfig:
    """Where this node's samples come from (see node.datasets.sources) and its part of them."""

    source: str = "mnist"  # built-in name, file or folder (absolute), or "package.module:loader"
    root: Path | None = None  # where built-in datasets are looked for; None: $FL_NODE_DATA_ROOT
    label_column: str = "label"  # CSV sources
    num_classes: int | None = None  # non-built-in sources; default: the largest label + 1
    mean: tuple[float, ...] | None = None  # normalisation of non-built-in sources
    std: tuple[float, ...] | None = None
    partition: str = "iid"
    alpha: float = 0.5
    num_parts: int = 1
    part_index: int = 0
    seed: int = 0
    max_samples: int | None = None
    shards_per_part: int = 2
    holdout_samples: int = 0  # training samples no worker trains on ([task] validation = "holdout")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.02  # with momentum 0.9: 5 IID MNIST workers pass 99% by round 3-5 (bench.fedsim)
    momentum: float = 0.9
    prox_mu: float = 0.0
    # the update is the mean of the weights over the last half of the steps: a last
    # iterate alone can forget a class, which the WORK policy rejects as a label flip
    average_tail: float = 0.5


@dataclass(frozen=True)
class TaskConfig:
    """The task a requester creates. Fixed-point values (thresholds, accuracies) are given
    as fractions in [0, 1] here and converted with protocol.fixedpoint.SCALE."""

    model: str = "mnist_cnn"
    rounds: int = 3
    worker_reward_per_round_wei: int = 3 * 10**18
    validator_reward_per_round_wei: int = 10**18
    worker_deposit_wei: int = 10**18
    validator_stake_wei: int = 2 * 10**18
    committee_size: int = 3
    qualification_threshold: float = 0.5
    tolerance: float = 0.01
    training_seconds: int = 300
    commit_seconds: int = 300
    reveal_seconds: int = 300
    target_accuracy: float = 0.0
    reward_policy: str = "work"
    top_k: int = 0
    slash_fraction_bps: int = 5000
    min_workers: int = 1
    min_validators: int = 1
    max_workers: int = 16
    max_validators: int = 16
    max_samples_per_worker: int = 60_000  # the largest sample count a worker may claim
    workers_per_round: int = 0  # workers the round's seed draws to train; 0: every one
    recruit_seconds: int = 600
    start_after_seconds: int = 60
    aggregator: str = "fedavg"
    validation_samples: int = 1000
    validation: str | None = None  # the validation data's source; default: [data] source's test split
    model_seed: int = 0
    output: Path | None = None

    def fixed(self, name: str) -> int:
        return round(float(getattr(self, name)) * SCALE)


@dataclass(frozen=True)
class BehaviourConfig:
    """How a scenario makes this node misbehave (default: honest)."""

    worker: str = "honest"
    validator: str = "honest"


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    node: NodeSection
    network: NetworkConfig
    chain: ChainConfig
    data: DataConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)

    @property
    def role(self) -> str:
        return self.node.role

    @property
    def trusted_models(self) -> tuple[str, ...]:
        """Imported model factories this node may build: its [node] trusted_models, and a
        requester's own [task] model."""
        own = (self.task.model,) if self.role == "requester" else ()
        return (*self.node.trusted_models, *own)


# --- the schema ---------------------------------------------------------------------------

Check = Callable[[Any], str | None]
"""A value check: None if fine, else what would be accepted."""


def _one_of(options: tuple[str, ...]) -> Check:
    return lambda v: None if v in options else f"one of {list(options)}"


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (port 0 = any free port) -> (host, port); ValueError saying why not."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. \"127.0.0.1:8080\")")
    return host.strip("[]"), int(port)


def _listen_address(v: str) -> str | None:
    try:
        parse_listen(v)
    except ValueError:
        return "host:port, e.g. \"127.0.0.1:8080\""
    return None


def _aggregation_spec(v: str) -> str | None:
    try:
        AggregationRule.parse(v)
    except AggregationError as exc:
        return f"an aggregation rule spec ({exc})"
    return None


def _worker_attack(v: str) -> str | None:
    try:
        parse_attack_spec(v)
    except AttackSpecError as exc:
        return f'a worker attack, "kind" or "kind:key=value,..." ({exc})'
    return None


def _model_reference(v: str) -> str | None:
    try:
        ModelReference.parse(v)
    except ProtocolError as exc:
        return f"a model reference ({exc})"
    return None


def _import_references(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            if not ModelReference.parse(value).imported:
                return f'"package.module:factory" references ({value!r} is not one)'
        except ProtocolError as exc:
            return f'"package.module:factory" references ({exc})'
    return None


def _at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"a number >= {low}"


def _samples_bound(v: Any) -> str | None:
    return None if 1 <= v <= MAX_SAMPLES_PER_WORKER else f"1..{MAX_SAMPLES_PER_WORKER}"


def _fraction(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "a fraction between 0 and 1"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number > 0"


@dataclass(frozen=True)
class _Key:
    kind: str  # "str" | "int" | "float" | "path" | "strs" | "floats"
    check: Check | None = None
    required: bool = False


SCHEMA: dict[str, tuple[type, dict[str, _Key]]] = {
    "node": (
        NodeSection,
        {
            "role": _Key("str", _one_of(ROLES), required=True),
            "data_dir": _Key("path", required=True),
            "torch_threads": _Key("int", _at_least(1)),
            "log_level": _Key("str", _one_of(LOG_LEVELS)),
            "status_listen": _Key("str", _listen_address),
            "trusted_models": _Key("strs", _import_references),
            "stake_wei": _Key("int", lambda v: None if 0 <= v <= MAX_STAKE else f"0..{MAX_STAKE}"),
        },
    ),
    "network": (
        NetworkConfig,
        {
            "key_file": _Key("str"),
            "listen": _Key("strs", lambda v: None if v else "a non-empty list"),
            "bootstrap": _Key("strs"),
        },
    ),
    "chain": (
        ChainConfig,
        {
            "rpc_url": _Key("str", required=True),
            "private_key_file": _Key("path", required=True),
            "registry": _Key("str", required=True),
            "task": _Key("str"),
            "poll_interval": _Key("float", _positive),
        },
    ),
    "data": (
        DataConfig,
        {
            "source": _Key("str"),
            "root": _Key("path"),
            "label_column": _Key("str"),
            "num_classes": _Key("int", _at_least(2)),
            "mean": _Key("floats", lambda v: None if v else "a non-empty list"),
            "std": _Key("floats", lambda v: None if v and min(v) > 0 else "a list of numbers > 0"),
            "partition": _Key("str", _one_of(PARTITIONS)),
            "alpha": _Key("float", _positive),
            "num_parts": _Key("int", _at_least(1)),
            "part_index": _Key("int", _at_least(0)),
            "seed": _Key("int", _at_least(0)),
            "max_samples": _Key("int", _at_least(1)),
            "shards_per_part": _Key("int", _at_least(1)),
            "holdout_samples": _Key("int", _at_least(0)),
        },
    ),
    "training": (
        TrainingConfig,
        {
            "epochs": _Key("int", _at_least(1)),
            "batch_size": _Key("int", _at_least(1)),
            "lr": _Key("float", _positive),
            "momentum": _Key("float", lambda v: None if 0 <= v < 1 else "a number in [0, 1)"),
            "prox_mu": _Key("float", _at_least(0)),
            "average_tail": _Key(
                "float", lambda v: None if 0 <= v <= 1 else "a fraction in [0, 1]"
            ),
        },
    ),
    "task": (
        TaskConfig,
        {
            "model": _Key("str", _model_reference),
            "rounds": _Key("int", _at_least(1)),
            "worker_reward_per_round_wei": _Key("int", _at_least(0)),
            "validator_reward_per_round_wei": _Key("int", _at_least(0)),
            "worker_deposit_wei": _Key("int", _at_least(0)),
            "validator_stake_wei": _Key("int", _at_least(1)),
            "committee_size": _Key("int", _at_least(1)),
            "workers_per_round": _Key("int", _at_least(0)),
            "qualification_threshold": _Key("float", _fraction),
            "tolerance": _Key("float", _fraction),
            "training_seconds": _Key("int", _at_least(1)),
            "commit_seconds": _Key("int", _at_least(1)),
            "reveal_seconds": _Key("int", _at_least(1)),
            "target_accuracy": _Key("float", _fraction),
            "reward_policy": _Key("str", _one_of(REWARD_POLICIES)),
            "top_k": _Key("int", _at_least(0)),
            "slash_fraction_bps": _Key(
                "int", lambda v: None if 0 <= v <= 10_000 else "basis points 0..10000"
            ),
            "min_workers": _Key("int", _at_least(1)),
            "min_validators": _Key("int", _at_least(1)),
            "max_workers": _Key("int", _at_least(1)),
            "max_validators": _Key("int", _at_least(1)),
            "max_samples_per_worker": _Key("int", _samples_bound),
            "recruit_seconds": _Key("int", _at_least(1)),
            "start_after_seconds": _Key("int", _at_least(0)),
            "aggregator": _Key("str", _aggregation_spec),
            "validation_samples": _Key("int", _at_least(1)),
            "validation": _Key("str"),
            "model_seed": _Key("int", _at_least(0)),
            "output": _Key("path"),
        },
    ),
    "behaviour": (
        BehaviourConfig,
        {
            "worker": _Key("str", _worker_attack),
            "validator": _Key("str", _one_of(VALIDATOR_BEHAVIOURS)),
        },
    ),
}
REQUIRED_SECTIONS = ("node", "chain")


def load_config(path: str | Path) -> NodeConfig:
    """Read and check a node config file; ConfigError names the file and key on any problem."""
    path = Path(path)
    try:
        with path.open("rb") as config_file:
            document = tomllib.load(config_file)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; copy node.toml from the repository and edit it"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    return parse_config(document, path)


def parse_config(document: Mapping[str, Any], path: Path) -> NodeConfig:
    """Check an already parsed TOML document; `path` names it in errors and anchors paths."""
    base = path.parent
    loose = sorted(k for k, v in document.items() if not isinstance(v, dict))
    if loose:
        raise ConfigError(f"{path}: key(s) {loose} are outside any section; put them in one")
    unknown = sorted(set(document) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: {sorted(SCHEMA)}")
    for name, raw in document.items():  # typos first: they often explain what is missing
        unknown_keys = sorted(set(raw) - set(SCHEMA[name][1]))
        if unknown_keys:
            raise ConfigError(
                f"{path}: [{name}] has unknown key(s) {unknown_keys}; "
                f"allowed: {sorted(SCHEMA[name][1])}"
            )
    for name in REQUIRED_SECTIONS:
        if name not in document:
            raise ConfigError(f"{path}: missing section [{name}]")
    sections = {name: _section(path, name, document.get(name, {}), base) for name in SCHEMA}
    for section, key in (("data", "source"), ("task", "validation")):
        if key in sections[section]:
            sections[section][key] = _data_source(sections[section][key], base)

    node = sections["node"]
    network = dict(sections["network"])
    key_file = Path(network.pop("key_file", "identity.key")).expanduser()
    network["key_file"] = key_file if key_file.is_absolute() else node["data_dir"] / key_file
    config = NodeConfig(
        path=path,
        node=NodeSection(**node),
        network=NetworkConfig(**network),
        chain=ChainConfig(**sections["chain"]),
        data=DataConfig(**sections["data"]),
        training=TrainingConfig(**sections["training"]),
        task=TaskConfig(**sections["task"]),
        behaviour=BehaviourConfig(**sections["behaviour"]),
    )
    _check_consistency(config)
    return config


def _section(path: Path, name: str, raw: dict[str, Any], base: Path) -> dict[str, Any]:
    cls, keys = SCHEMA[name]
    values: dict[str, Any] = {}
    for key, spec in keys.items():
        where = f"{path}: [{name}] {key}"
        if key not in raw:
            if spec.required:
                raise ConfigError(f"{where} is required")
            continue
        value = _typed(where, spec.kind, raw[key], base)
        problem = spec.check(value) if spec.check is not None else None
        if problem is not None:
            raise ConfigError(f"{where} must be {problem}, got {raw[key]!r}")
        values[key] = value
    assert {f.name for f in fields(cls)} >= set(values)
    return values


def _typed(where: str, kind: str, value: Any, base: Path) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_describe(value)}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {_describe(value)}")
        return float(value)
    if kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string, got {_describe(value)}")
        if kind == "str":
            return value
        resolved = Path(value).expanduser()
        return resolved if resolved.is_absolute() else (base / resolved).resolve()
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {_describe(value)}")
        return tuple(value)
    if kind == "floats":
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        ):
            raise ConfigError(f"{where} must be a list of finite numbers, got {_describe(value)}")
        return tuple(float(v) for v in value)
    raise AssertionError(kind)


def _check_consistency(config: NodeConfig) -> None:
    path, data, task = config.path, config.data, config.task
    if config.node.stake_wei and config.node.role != "validator":
        raise ConfigError(f"{path}: [node] stake_wei is a validator's stake; this node is a {config.node.role}")
    if data.part_index >= data.num_parts:
        raise ConfigError(
            f"{path}: [data] part_index {data.part_index} must be below num_parts {data.num_parts}"
        )
    if task.validation == HOLDOUT and data.holdout_samples < task.validation_samples:
        raise ConfigError(
            f"{path}: [task] validation = \"holdout\" needs [data] holdout_samples >= "
            f"[task] validation_samples ({task.validation_samples})"
        )
    if task.min_workers > task.max_workers:
        raise ConfigError(f"{path}: [task] min_workers must be <= max_workers")
    if task.min_validators > task.max_validators:
        raise ConfigError(f"{path}: [task] min_validators must be <= max_validators")
    if task.reward_policy == "topk" and task.top_k < 1:
        raise ConfigError(f"{path}: [task] top_k must be >= 1 when reward_policy = \"topk\"")
    chain = config.chain
    if chain.task != AUTO_TASK and not _is_address(chain.task):
        raise ConfigError(
            f"{path}: [chain] task must be \"auto\" or a 0x-prefixed 20-byte address, "
            f"got {chain.task!r}"
        )
    if not _is_address(chain.registry):
        raise ConfigError(
            f"{path}: [chain] registry must be a 0x-prefixed 20-byte address, got {chain.registry!r}"
        )
    if not (chain.embedded or chain.rpc_url.startswith(("http://", "https://", "ws://", "wss://"))):
        raise ConfigError(
            f"{path}: [chain] rpc_url must be an http(s):// or ws(s):// URL, or \"embedded\" "
            f"(only inside one process), got {chain.rpc_url!r}"
        )


def _data_source(value: str, base: Path) -> str:
    """A built-in dataset name or loader reference as given; a path made absolute."""
    if value in BUILTIN_SPECS or value == HOLDOUT or is_import_reference(value):
        return value
    resolved = Path(value).expanduser()
    return str(resolved if resolved.is_absolute() else (base / resolved).resolve())


def _is_address(text: str) -> bool:
    if not text.startswith("0x") or len(text) != 42:
        return False
    try:
        bytes.fromhex(text[2:])
    except ValueError:
        return False
    return True


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
