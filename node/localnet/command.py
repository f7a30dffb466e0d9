"""The `fl-node localnet` subcommand: arguments, scenario defaults, and the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from node.localnet.configs import NON_IID_REWARD_POLICY
from node.localnet.scenario import PARTITIONS, Scenario, ScenarioError, load_scenario, stakes_in_wei

__all__ = ["add_arguments", "options_from_args", "run_command"]

# Built-in values for what neither the command line nor the scenario's [defaults] sets.
DEFAULTS: dict[str, Any] = {
    "workers": 5,
    "validators": 3,
    "rounds": 10,
    "partition": "iid",
    "alpha": 0.5,
    "seed": 0,
    "max_samples": None,
    "dataset": "mnist",
    "model": None,
    "committee_size": None,  # None: every validator (tau = the number of validators)
    "workers_per_round": None,  # None or 0: every worker trains every round
    "validator_stakes": None,  # wei, one per validator; None: each the task's minimum
}
# Task parameters the command line and [defaults] may set; they become [task] overrides.
TASK_OPTIONS = ("committee_size", "workers_per_round")
EXIT_USAGE = 2
# The built-in datasets (node.datasets.BUILTIN), listed here so `--help` needs no torch.
DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist-digits", "cifar10")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _stakes(text: str) -> tuple[int, ...]:
    try:
        return stakes_in_wei(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so a scenario's [defaults] can fill what the command line leaves out.
    parser.add_argument("--workers", type=_positive_int, help="number of workers (default 5)")
    parser.add_argument("--validators", type=_positive_int, help="number of validators (default 3)")
    parser.add_argument("--rounds", type=_positive_int, help="rounds of the task (default 10)")
    parser.add_argument(
        "--committee-size",
        type=_positive_int,
        help="validators the VRF draws per round, stake-weighted (tau; default: all of them)",
    )
    parser.add_argument(
        "--validator-stakes",
        type=_stakes,
        metavar="ETH,ETH,...",
        help="each validator's stake in ETH, one per validator, e.g. 1,1,2,4 (default: each the "
        "task's minimum); the task's minimum becomes the smallest unless [task] sets "
        "validator_stake_wei",
    )
    parser.add_argument(
        "--workers-per-round",
        type=_non_negative_int,
        help="workers the round's seed draws to train each round (default 0: every worker)",
    )
    parser.add_argument("--partition", choices=PARTITIONS, help="how the training set is split (default iid)")
    parser.add_argument("--alpha", type=_positive_float, help="Dirichlet concentration (default 0.5)")
    parser.add_argument("--seed", type=int, help="partition seed (default 0)")
    parser.add_argument(
        "--max-samples", type=_positive_int, help="use only the first N training samples (default: all)"
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        help="the built-in dataset the workers share (default mnist); fetched once into "
        "$XDG_CACHE_HOME/fl-node when --data-root lacks it",
    )
    parser.add_argument(
        "--model",
        help="the task's model reference (default: the dataset's built-in model, mnist_cnn or "
        "cifar_cnn)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        help="folder with the dataset's files (default $FL_NODE_DATA_ROOT or ../shared/datasets/mnist)",
    )
    parser.add_argument("--scenario", type=Path, help="scenario TOML (see scenarios/)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("localnet-output"),
        help="empty or new folder for logs, node data, results.json and plots (default localnet-output)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        help="give up after this many seconds (default: from the task's phase durations)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every node in this process on the embedded chain (no anvil, no subprocesses)",
    )
    parser.add_argument(
        "--fork-server",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fork node processes from one that imported the node's code first, so the "
        "~220 MB those imports make is shared by every node (default: on)",
    )


def options_from_args(args: argparse.Namespace, scenario: Scenario | None) -> dict[str, Any]:
    """Command line first, then the scenario's [defaults], then DEFAULTS."""
    from_scenario = scenario.defaults if scenario is not None else {}
    merged: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        given = getattr(args, key)
        merged[key] = given if given is not None else from_scenario.get(key, default)
    return merged


def task_overrides(merged: dict[str, Any], scenario: Scenario | None) -> dict[str, Any]:
    """The requester's [task] overrides: the scenario's [task], then TASK_OPTIONS set on
    the command line or in [defaults] (workers_per_round 0 is the task's default), then the
    task's minimum stake: the smallest of validator_stakes unless [task] names it."""
    overrides = dict(scenario.task) if scenario is not None else {}
    for key in TASK_OPTIONS:
        value = merged[key]
        if value is not None and not (key == "workers_per_round" and value == 0):
            overrides[key] = value
    stakes = merged.get("validator_stakes")
    if stakes:
        overrides.setdefault("validator_stake_wei", min(stakes))
    if merged.get("partition", "iid") != "iid" and "reward_policy" not in overrides:
        overrides["reward_policy"] = NON_IID_REWARD_POLICY
        overrides.setdefault("top_k", merged["workers"])  # every accepted worker paid
    return overrides


def policy_notice(merged: dict[str, Any], overrides: dict[str, Any]) -> str | None:
    """What to tell the operator when the partition chose the reward policy, or None."""
    if merged.get("partition", "iid") == "iid" or overrides.get("reward_policy") != NON_IID_REWARD_POLICY:
        return None
    return (
        f"--partition {merged['partition']}: reward policy {NON_IID_REWARD_POLICY}, not work "
        "(work assumes IID workers and would reject and slash honest workers whose data lacks "
        "a class); set [task] reward_policy in a scenario to choose"
    )


def stakes_problem(merged: dict[str, Any], overrides: dict[str, Any]) -> str | None:
    """Why the validator stakes cannot run (one per validator, none below the task's
    minimum), or None."""
    stakes = merged.get("validator_stakes")
    if not stakes:
        return None
    if len(stakes) != merged["validators"]:
        return (
            f"--validator-stakes gives {len(stakes)} stakes for {merged['validators']} validators; "
            "give one per validator (or change --validators)"
        )
    minimum = overrides.get("validator_stake_wei")
    if isinstance(minimum, int) and min(stakes) < minimum:
        return (
            f"--validator-stakes: {min(stakes)} wei is below the task's minimum stake, [task] "
            f"validator_stake_wei = {minimum}; raise that stake or lower validator_stake_wei"
        )
    return None


def run_command(args: argparse.Namespace) -> int:
    from node.chain.errors import ChainError
    from node.config import ConfigError
    from node.datasets import available, default_data_root, load_builtin, search_dirs
    from node.datasets.builtin import BUILTIN
    from node.localnet.launcher import LocalnetError, LocalnetOptions, run_localnet
    from node.models import data_problem, model_problem
    from protocol.errors import DatasetError
    from protocol.models import DEFAULT_MODEL_FOR_DATASET

    try:
        scenario = load_scenario(args.scenario) if args.scenario is not None else None
    except ScenarioError as exc:
        print(f"fl-node localnet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    merged = options_from_args(args, scenario)
    overrides = task_overrides(merged, scenario)
    problem = stakes_problem(merged, overrides)
    if problem is not None:
        print(f"fl-node localnet: {problem}", file=sys.stderr)
        return EXIT_USAGE
    notice = policy_notice(merged, overrides)
    if notice is not None:
        print(f"fl-node localnet: {notice}", flush=True)
    merged["validator_stakes"] = tuple(merged["validator_stakes"] or ())
    data_root = (args.data_root or default_data_root()).resolve()
    dataset = merged["dataset"]
    if not (available(dataset, data_root, "train") and available(dataset, data_root, "test")):
        try:  # once here, so the nodes find the files in the cache
            for split in ("train", "test"):
                load_builtin(dataset, split, data_root)
        except DatasetError as exc:
            looked = ", ".join(str(d) for d in search_dirs(BUILTIN[dataset], data_root))
            print(
                f"fl-node localnet: {dataset} not found (looked in {looked}) and not fetched: "
                f"{exc}\npass --data-root DIR or set FL_NODE_DATA_ROOT to a folder with its files",
                file=sys.stderr,
            )
            return EXIT_USAGE
    model = merged["model"] or DEFAULT_MODEL_FOR_DATASET[dataset]
    problem = model_problem(model, trusted=(model,)) or data_problem(
        model, BUILTIN[dataset].spec, dataset
    )
    if problem is not None:
        print(f"fl-node localnet: --model: {problem}", file=sys.stderr)
        return EXIT_USAGE
    options = LocalnetOptions(
        output=args.output,
        data_root=data_root,
        scenario_path=args.scenario,
        in_process=args.in_process,
        fork_server=args.fork_server,
        timeout=args.timeout,
        task_overrides=overrides,
        **{key: value for key, value in merged.items() if key not in TASK_OPTIONS},
    )
    try:
        return run_localnet(options)
    except (ScenarioError, ConfigError) as exc:
        print(f"fl-node localnet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (LocalnetError, ChainError) as exc:
        print(f"fl-node localnet: {exc}", file=sys.stderr)
        return 1
