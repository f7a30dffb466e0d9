"""results.json for a localnet run: building it, checking its schema, and plotting it.

Amounts are integers in wei, scores and accuracies are floats in [0, 1] (the chain's fixed
point divided by protocol.fixedpoint.SCALE), participants are named by node
("requester", "worker-0", "validator-1") with their addresses under "participants".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.chain.tracker import TX_KINDS, RoundRecord, TaskTracker
from node.chain.types import RoundInfo
from protocol.fixedpoint import SCALE
from protocol.training import Metrics

__all__ = [
    "SCHEMA",
    "Participant",
    "ResultsError",
    "build_results",
    "detection_scores",
    "load_results",
    "phase_seconds",
    "validate_results",
    "write_plots",
    "write_results",
]

SCHEMA = "fl-node-localnet-results/1"
PHASES = ("training", "commit", "reveal", "finalize")


class ResultsError(ValueError):
    """results.json does not follow the schema; the text names the key."""


@dataclass(frozen=True)
class Participant:
    name: str  # requester | worker-<i> | validator-<i>
    role: str  # requester | worker | validator
    address: str
    kind: str  # behaviour kind from the scenario ("honest" for the requester)


def phase_seconds(info: RoundInfo, finalized_at: int) -> dict[str, int]:
    """Seconds spent in each phase: the contract's effective boundaries (an early end wins over
    the deadline), then the wait from the reveal end until someone finalized."""
    return {
        "training": info.training_end - info.training_start,
        "commit": info.commit_end - info.training_end,
        "reveal": info.reveal_end - info.commit_end,
        "finalize": max(0, finalized_at - info.reveal_end),
    }


def detection_scores(
    submitted: Sequence[str], rejected: Sequence[str], dishonest: set[str] | frozenset[str]
) -> dict[str, Any]:
    """How well the committee caught the scenario's dishonest workers in one round: a rejected
    dishonest worker is a true positive. Precision/recall are None when undefined (0/0)."""
    submitted_set = set(submitted)
    rejected_set = set(rejected) & submitted_set
    bad = set(dishonest) & submitted_set
    true_positives = len(rejected_set & bad)
    false_positives = len(rejected_set - bad)
    false_negatives = len(bad - rejected_set)
    flagged = true_positives + false_positives
    return {
        "true_positives": true_positives,
        "false_positives": false_positives,
        "false_negatives": false_negatives,
        "precision": true_positives / flagged if flagged else None,
        "recall": true_positives / len(bad) if bad else None,
    }


def _metrics_entry(metrics: Metrics | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    return {
        "test_accuracy": metrics.accuracy,
        "test_loss": metrics.loss,
        "test_macro_precision": metrics.macro_precision,
        "test_macro_recall": metrics.macro_recall,
    }


def _fixed(value: int | None) -> float | None:
    return None if value is None else value / SCALE


def build_results(
    *,
    options: Mapping[str, Any],
    scenario: Mapping[str, Any],
    participants: Sequence[Participant],
    chain: Mapping[str, Any],
    tracker: TaskTracker,
    boundaries: Mapping[int, RoundInfo],
    evaluations: Mapping[int, Metrics],
    gas_by_tx: Mapping[str, int],
    final_balances: Mapping[str, int],
    wall_seconds: float,
    outcome: str,
    initial_evaluation: Metrics | None = None,
    final_evaluation: Metrics | None = None,
) -> dict[str, Any]:
    """The results document. `final_balances` is wei credited and not withdrawn per address
    (deposits excluded); `gas_by_tx` maps transaction hashes to gas used."""
    by_address = {p.address: p for p in participants}
    dishonest = {p.name for p in participants if p.role == "worker" and p.kind != "honest"}

    def name(address: str) -> str:
        participant = by_address.get(address)
        return participant.name if participant else address

    rounds = [
        _round_entry(record, name, boundaries, evaluations, gas_by_tx, dishonest)
        for record in tracker.finalized_rounds()
    ]
    totals_rewards: dict[str, int] = {p.name: 0 for p in participants if p.role != "requester"}
    totals_slashes: dict[str, int] = dict.fromkeys(totals_rewards, 0)
    for entry in rounds:
        for who, amount in entry["rewards"].items():
            totals_rewards[who] = totals_rewards.get(who, 0) + amount
        for who, amount in entry["slashes"].items():
            totals_slashes[who] = totals_slashes.get(who, 0) + amount
    return {
        "schema": SCHEMA,
        "outcome": outcome,
        "options": dict(options),
        "scenario": dict(scenario),
        "chain": dict(chain),
        "participants": [
            {"name": p.name, "role": p.role, "address": p.address, "kind": p.kind}
            for p in participants
        ],
        "termination": tracker.termination.name if tracker.termination is not None else None,
        "initial_test_accuracy": initial_evaluation.accuracy if initial_evaluation else None,
        "final_model": _metrics_entry(final_evaluation),
        "rounds": rounds,
        "totals": {
            "rewards": totals_rewards,
            "slashes": totals_slashes,
            "balances": {name(a): int(v) for a, v in final_balances.items()},
            "withdrawn": {name(a): int(v) for a, v in tracker.withdrawn.items()},
            "gas": sum(entry["gas"]["total"] for entry in rounds),
        },
        "wall_seconds": round(wall_seconds, 3),
    }


def _round_entry(
    record: RoundRecord,
    name: Any,
    boundaries: Mapping[int, RoundInfo],
    evaluations: Mapping[int, Metrics],
    gas_by_tx: Mapping[str, int],
    dishonest: set[str],
) -> dict[str, Any]:
    submitted = [name(a) for a in record.submissions]
    rejected = [name(a) for a in record.rejected]
    metrics = evaluations.get(record.round)
    gas = {
        kind: sum(gas_by_tx.get(h, 0) for h in record.tx_hashes.get(kind, []))
        for kind in TX_KINDS.values()
    }
    gas["total"] = sum(gas.values())
    info = boundaries.get(record.round)
    assert record.finalized_at is not None
    rewards = {name(a): o.payout for a, o in record.workers.items()}
    rewards.update({name(a): o.payout for a, o in record.validators.items()})
    slashes = {name(a): o.slash for a, o in record.workers.items()}
    slashes.update({name(a): o.slash for a, o in record.validators.items()})
    return {
        "round": record.round,
        "submitted": submitted,
        "samples": {name(a): n for a, n in record.submissions.items()},
        "accepted": [name(a) for a in record.accepted],
        "rejected": rejected,
        "consensus_scores": {name(a): o.consensus_score / SCALE for a, o in record.workers.items()},
        "consensus_accuracy": _fixed(record.consensus_accuracy),
        "committee": [name(a) for a in record.committed],
        "revealed": [name(a) for a in record.reveals],
        "agreed": [name(a) for a, o in record.validators.items() if o.agreed],
        "test_accuracy": metrics.accuracy if metrics else None,
        "test_loss": metrics.loss if metrics else None,
        "test_macro_precision": metrics.macro_precision if metrics else None,
        "test_macro_recall": metrics.macro_recall if metrics else None,
        "detection": detection_scores(submitted, rejected, dishonest),
        "rewards": rewards,
        "slashes": slashes,
        "returned_to_escrow": record.returned_to_escrow,
        "gas": gas,
        "phase_seconds": phase_seconds(info, record.finalized_at) if info else None,
        "round_seconds": record.finalized_at - record.started_at,
    }


# ---------------------------------------------------------------------- schema

_NUMBER = (int, float)
_OPTIONAL_FLOAT = (int, float, type(None))
_TOP = {
    "schema": str,
    "outcome": str,
    "options": dict,
    "scenario": dict,
    "chain": dict,
    "participants": list,
    "termination": (str, type(None)),
    "initial_test_accuracy": _OPTIONAL_FLOAT,
    "final_model": (dict, type(None)),
    "rounds": list,
    "totals": dict,
    "wall_seconds": _NUMBER,
}
_ROUND = {
    "round": int,
    "submitted": list,
    "samples": dict,
    "accepted": list,
    "rejected": list,
    "consensus_scores": dict,
    "consensus_accuracy": _OPTIONAL_FLOAT,
    "committee": list,
    "revealed": list,
    "agreed": list,
    "test_accuracy": _OPTIONAL_FLOAT,
    "test_loss": _OPTIONAL_FLOAT,
    "test_macro_precision": _OPTIONAL_FLOAT,
    "test_macro_recall": _OPTIONAL_FLOAT,
    "detection": dict,
    "rewards": dict,
    "slashes": dict,
    "returned_to_escrow": int,
    "gas": dict,
    "phase_seconds": (dict, type(None)),
    "round_seconds": int,
}
_DETECTION = {
    "true_positives": int,
    "false_positives": int,
    "false_negatives": int,
    "precision": _OPTIONAL_FLOAT,
    "recall": _OPTIONAL_FLOAT,
}
_FINAL_MODEL = {
    "test_accuracy": _NUMBER,
    "test_loss": _NUMBER,
    "test_macro_precision": _NUMBER,
    "test_macro_recall": _NUMBER,
}
_PARTICIPANT = {"name": str, "role": str, "address": str, "kind": str}
_TOTALS = {"rewards": dict, "slashes": dict, "balances": dict, "withdrawn": dict, "gas": int}


def _check_fields(where: str, value: Any, fields: Mapping[str, Any]) -> None:
    if not isinstance(value, dict):
        raise ResultsError(f"{where} must be an object, got {type(value).__name__}")
    missing = sorted(set(fields) - set(value))
    if missing:
        raise ResultsError(f"{where} lacks key(s) {missing}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ResultsError(f"{where} has unknown key(s) {unknown}")
    for key, expected in fields.items():
        item = value[key]
        if isinstance(item, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
            raise ResultsError(f"{where}.{key} must not be a boolean")
        if not isinstance(item, expected):
            raise ResultsError(f"{where}.{key} has type {type(item).__name__}, expected {expected}")
        if isinstance(item, float) and not math.isfinite(item):
            raise ResultsError(f"{where}.{key} is {item}; JSON results hold finite numbers only")


def _check_amounts(where: str, amounts: Any) -> None:
    for who, amount in amounts.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ResultsError(f"{where}[{who!r}] must be a non-negative integer (wei), got {amount!r}")


def _check_fraction(where: str, value: Any) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ResultsError(f"{where} = {value} is outside [0, 1]")


def validate_results(document: Any) -> None:
    """Raise ResultsError naming the first key that breaks the schema."""
    _check_fields("results", document, _TOP)
    if document["schema"] != SCHEMA:
        raise ResultsError(f"results.schema is {document['schema']!r}, expected {SCHEMA!r}")
    names = set()
    for i, participant in enumerate(document["participants"]):
        _check_fields(f"results.participants[{i}]", participant, _PARTICIPANT)
        names.add(participant["name"])
    _check_fraction("results.initial_test_accuracy", document["initial_test_accuracy"])
    if document["final_model"] is not None:
        _check_fields("results.final_model", document["final_model"], _FINAL_MODEL)
        for key in ("test_accuracy", "test_macro_precision", "test_macro_recall"):
            _check_fraction(f"results.final_model.{key}", document["final_model"][key])
    previous = 0
    for i, entry in enumerate(document["rounds"]):
        where = f"results.rounds[{i}]"
        _check_fields(where, entry, _ROUND)
        if entry["round"] <= previous:
            raise ResultsError(f"{where}.round = {entry['round']} does not follow {previous}")
        previous = entry["round"]
        _check_fields(f"{where}.detection", entry["detection"], _DETECTION)
        for key in ("consensus_accuracy", "test_accuracy", "test_macro_precision", "test_macro_recall"):
            _check_fraction(f"{where}.{key}", entry[key])
        for key in ("rewards", "slashes", "gas", "samples"):
            _check_amounts(f"{where}.{key}", entry[key])
        if set(entry["accepted"]) & set(entry["rejected"]):
            raise ResultsError(f"{where}: a worker is both accepted and rejected")
        for key in ("submitted", "accepted", "rejected", "committee", "revealed", "agreed"):
            strangers = set(entry[key]) - names
            if strangers:
                raise ResultsError(f"{where}.{key} names non-participants {sorted(strangers)}")
        if entry["phase_seconds"] is not None and set(entry["phase_seconds"]) != set(PHASES):
            raise ResultsError(f"{where}.phase_seconds must have exactly the keys {list(PHASES)}")
    _check_fields("results.totals", document["totals"], _TOTALS)
    for key in ("rewards", "slashes", "balances", "withdrawn"):
        _check_amounts(f"results.totals.{key}", document["totals"][key])


def write_results(document: Mapping[str, Any], path: Path) -> None:
    """Validate, then write atomically (a reader never sees half a file)."""
    validate_results(document)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_results(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read results: {exc}") from exc
    validate_results(document)
    return dict(document)


# ---------------------------------------------------------------------- plots


def write_plots(document: Mapping[str, Any], folder: Path) -> list[Path]:
    """accuracy.png (test and consensus accuracy per round) and rewards.png (net wei per
    participant, honest and dishonest apart). Matplotlib with the Agg backend: no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rounds = [entry["round"] for entry in document["rounds"]]
    test_set = f"{document.get('options', {}).get('dataset') or 'mnist'} test set"
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, label in (("test_accuracy", f"global model, {test_set}"),
                       ("consensus_accuracy", "consensus (validation set)")):
        points = [(r["round"], r[key]) for r in document["rounds"] if r[key] is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=label)
    final = document.get("final_model")
    if final is not None and rounds:
        axes.plot([rounds[-1]], [final["test_accuracy"]], marker="*", markersize=12,
                  linestyle="none", color="tab:red", label=f"final model, {test_set}")
    if document.get("initial_test_accuracy") is not None:
        axes.axhline(document["initial_test_accuracy"], linestyle=":", color="grey",
                     label="initial model")
    axes.set_xlabel("round")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1)
    if rounds:
        axes.set_xticks(rounds)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("accuracy per round")
    figure.tight_layout()
    written.append(folder / "accuracy.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    kinds = {p["name"]: p["kind"] for p in document["participants"]}
    rewards = document["totals"]["rewards"]
    slashes = document["totals"]["slashes"]
    names = sorted(rewards, key=lambda n: (n.split("-")[0], int(n.split("-")[-1]) if n[-1].isdigit() else 0))
    ether = 10**18
    figure, axes = plt.subplots(figsize=(max(6, 0.8 * len(names)), 4))
    positions = range(len(names))
    axes.bar(positions, [rewards[n] / ether for n in names],
             color=["tab:green" if kinds.get(n, "honest") == "honest" else "tab:orange" for n in names])
    axes.bar(positions, [-slashes.get(n, 0) / ether for n in names], color="tab:red")
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(list(positions))
    axes.set_xticklabels([f"{n}\n({kinds.get(n, '?')})" for n in names], fontsize=8)
    axes.set_ylabel("ETH")
    axes.set_title("rewards and slashes per participant", fontsize=11)
    from matplotlib.patches import Patch

    axes.legend(
        handles=[
            Patch(color="tab:green", label="rewards (honest)"),
            Patch(color="tab:orange", label="rewards (dishonest)"),
            Patch(color="tab:red", label="slashed"),
        ],
        fontsize=8,
    )
    figure.tight_layout()
    written.append(folder / "rewards.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)
    return written
