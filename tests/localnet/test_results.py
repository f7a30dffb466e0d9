"""Following a task from its events, results.json (build, schema, sample) and the plots."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from node.chain.tracker import TaskTracker
from node.chain.types import ChainEvent, Phase, RoundInfo, Termination
from node.localnet.results import (
    Participant,
    ResultsError,
    build_results,
    detection_scores,
    load_results,
    validate_results,
    write_plots,
    write_results,
)
from node.localnet.table import header, round_row, status_line
from protocol.fixedpoint import SCALE
from protocol.state import records
from protocol.training import Metrics

SAMPLE = Path(__file__).parent / "data" / "sample_results.json"
ETHER = 10**18
W = [f"0x{i:040x}" for i in range(0xA1, 0xA4)]  # lower case, as logs may carry them
V = [f"0x{i:040x}" for i in range(0xB1, 0xB3)]
REQUESTER = f"0x{0xC1:040x}"


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


PARTICIPANTS = [Participant("requester", "requester", _checksum(REQUESTER), "honest")]
PARTICIPANTS += [
    Participant(f"worker-{i}", "worker", _checksum(a), "shuffled_labels" if i == 2 else "honest")
    for i, a in enumerate(W)
]
PARTICIPANTS += [Participant(f"validator-{i}", "validator", _checksum(a), "honest") for i, a in enumerate(V)]


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[ChainEvent, int]] = []
        self.block = 10

    def add(self, name: str, at: int, tx: str | None = None, **args: Any) -> None:
        self.block += 1
        tx_hash = tx or f"0x{self.block:064x}"
        self.items.append((ChainEvent(name, "0xTask", args, self.block, len(self.items), tx_hash), at))


def recorded_run() -> Events:
    """The events of a 2-round task: round 1 all accepted, round 2 worker-2 rejected."""
    ev = Events()
    for a in W:
        ev.add("MemberJoined", 100, member=a, role=1, amount=ETHER)
    for a in V:
        ev.add("MemberJoined", 100, member=a, role=2, amount=2 * ETHER)
    ev.add("TaskStarted", 101, validationSetCid="bafy", workers=3, validators=2)
    start = 101
    for r in (1, 2):
        ev.add("RoundStarted", start, round=r, seed=b"s", totalStake=4, trainingEnd=0, commitEnd=0, revealEnd=0)
        for a in W:
            ev.add("UpdateSubmitted", start + 5, round=r, worker=a, commitment=b"c", nSamples=1000)
        ev.add("PhaseEndedEarly", start + 5, round=r, nextPhase=int(Phase.COMMIT), timestamp=start + 6)
        for a in V:
            ev.add("ManifestCommitted", start + 9, round=r, validator=a, commitment=b"m")
        for a in V:
            ev.add(
                "ManifestRevealed", start + 12, round=r, validator=a, workers=W,
                scores=[900_000, 880_000, 100_000 if r == 2 else 870_000],
                verdicts=[1, 1, int(r == 1)], globalAccuracy=910_000, salt=b"x",
            )
        for i, a in enumerate(W):
            rejected = r == 2 and i == 2
            ev.add(
                "WorkerSettled", start + 13, tx=f"0x{r:063x}f", round=r, worker=a,
                consensusScore=100_000 if rejected else 880_000, accepted=not rejected,
                payout=0 if rejected else ETHER + (ETHER // 4 if r == 2 else 0),
                slash=ETHER // 2 if rejected else 0,
            )
        for a in V:
            ev.add("ValidatorSettled", start + 13, tx=f"0x{r:063x}f", round=r, validator=a,
                   revealed=True, agreed=True, payout=ETHER // 2, slash=0)
        ev.add("RoundFinalized", start + 13, tx=f"0x{r:063x}f", round=r, reveals=2,
               consensusAccuracy=910_000 + r, returnedToEscrow=0, escrowLeft=0)
        start += 20
    ev.add("TaskTerminated", start, reason=int(Termination.ROUND_LIMIT), round=2)
    ev.add("Withdrawn", start + 1, account=W[0], amount=ETHER)
    return ev


def build_sample() -> dict[str, Any]:
    tracker = TaskTracker()
    finalized = []
    for event, timestamp in recorded_run().items:
        done = tracker.feed(event, timestamp)
        if done is not None:
            finalized.append(done.round)
    assert finalized == [1, 2]
    boundaries = {
        r: RoundInfo(Phase.NONE, b"", 0, 101 + 20 * (r - 1), 107 + 20 * (r - 1),
                     110 + 20 * (r - 1), 113 + 20 * (r - 1), 3, 2, 2, True)
        for r in (1, 2)
    }
    metrics = {r: Metrics(0.5 / r, 0.8 + 0.05 * r, 0.8, 0.79, 10_000) for r in (1, 2)}
    gas = {h: 50_000 for r in tracker.rounds.values() for hs in r.tx_hashes.values() for h in hs}
    return build_results(
        options={"workers": 3, "validators": 2, "rounds": 2},
        scenario={"description": "sample", "workers": {"worker-2": "shuffled_labels"}},
        participants=PARTICIPANTS,
        chain={"chain_id": 31337, "registry": "0x1", "task": "0x2"},
        tracker=tracker,
        boundaries=boundaries,
        evaluations=metrics,
        gas_by_tx=gas,
        final_balances={p.address: 0 for p in PARTICIPANTS},
        wall_seconds=42.0,
        outcome="completed",
        initial_evaluation=Metrics(2.3, 0.1, 0.01, 0.1, 10_000),
        final_evaluation=Metrics(0.4, 0.9, 0.9, 0.89, 10_000),
    )


def test_tracker_follows_rounds_and_is_idempotent() -> None:
    tracker = TaskTracker()
    run = recorded_run()
    for event, timestamp in run.items + run.items:  # replayed logs change nothing
        tracker.feed(event, timestamp)
    assert [r.round for r in tracker.finalized_rounds()] == [1, 2]
    second = tracker.rounds[2]
    assert second.rejected == [_checksum(W[2])]
    assert len(second.submissions) == 3 and len(second.committed) == 2
    assert second.phase_changed_at[records.Phase.COMMIT] == 127
    assert second.phase == records.Phase.FINALIZED
    assert tracker.termination == Termination.ROUND_LIMIT
    assert tracker.withdrawn == {_checksum(W[0]): ETHER}
    assert set(tracker.members.values()) == {"worker", "validator"}


def test_results_from_recorded_events() -> None:
    document = build_sample()
    validate_results(document)
    first, second = document["rounds"]
    assert first["accepted"] == ["worker-0", "worker-1", "worker-2"] and first["rejected"] == []
    assert second["rejected"] == ["worker-2"]
    assert second["consensus_scores"]["worker-2"] == pytest.approx(0.1)
    assert second["consensus_accuracy"] == pytest.approx((910_000 + 2) / SCALE)
    assert second["detection"] == {
        "true_positives": 1, "false_positives": 0, "false_negatives": 0,
        "precision": 1.0, "recall": 1.0,
    }
    assert first["detection"]["recall"] == 0.0 and first["detection"]["precision"] is None
    assert first["phase_seconds"] == {"training": 6, "commit": 3, "reveal": 3, "finalize": 1}
    # 3 submissions + 2 commits + 2 reveals = 7 txs, settlement events share one finalize tx.
    assert first["gas"]["total"] == 8 * 50_000 and first["gas"]["finalizeRound"] == 50_000
    assert document["totals"]["rewards"]["worker-0"] == 2 * ETHER + ETHER // 4
    assert document["totals"]["slashes"]["worker-2"] == ETHER // 2
    assert document["totals"]["rewards"]["validator-1"] == ETHER
    assert document["totals"]["withdrawn"] == {"worker-0": ETHER}
    assert document["termination"] == "ROUND_LIMIT"


def test_recorded_sample_file_follows_the_schema() -> None:
    """results.json of a real run (multi-process on anvil: 3 workers, 2 validators, 2 rounds,
    3000 MNIST samples, worker-1 killed after round 1 and restarted), kept as the reference
    of the format."""
    document = load_results(SAMPLE)
    assert document["outcome"] == "completed"
    assert document["chain"]["backend"] == "anvil"
    assert len(document["rounds"]) >= 2
    assert all(r["test_accuracy"] is not None for r in document["rounds"])
    names = {p["name"] for p in document["participants"]}
    assert {"requester", "worker-0", "validator-0"} <= names


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("rounds"), "results lacks key(s) ['rounds']"),
        (lambda d: d.update(extra=1), "results has unknown key(s) ['extra']"),
        (lambda d: d.update(schema="other/9"), "results.schema is 'other/9'"),
        (lambda d: d["rounds"][0].update(test_accuracy=1.5), "test_accuracy = 1.5 is outside [0, 1]"),
        (lambda d: d["rounds"][0].update(test_accuracy=float("nan")), "finite numbers only"),
        (lambda d: d["rounds"][0].update(round="1"), "rounds[0].round has type str"),
        (lambda d: d["rounds"][1].update(round=1), "rounds[1].round = 1 does not follow 1"),
        (lambda d: d["rounds"][0]["rewards"].update({"worker-0": -1}), "non-negative integer (wei)"),
        (lambda d: d["rounds"][0]["rewards"].update({"worker-0": 1.5}), "non-negative integer (wei)"),
        (lambda d: d["rounds"][1].update(accepted=["worker-2"]), "both accepted and rejected"),
        (lambda d: d["rounds"][0].update(committee=["mallory"]), "non-participants ['mallory']"),
        (lambda d: d["rounds"][0]["detection"].pop("recall"), "detection lacks key(s) ['recall']"),
        (lambda d: d["rounds"][0]["phase_seconds"].pop("reveal"), "phase_seconds must have exactly"),
        (lambda d: d["totals"].update(gas=True), "totals.gas must not be a boolean"),
        (lambda d: d["participants"][0].pop("address"), "participants[0] lacks key(s) ['address']"),
        (lambda d: d["final_model"].update(test_accuracy=2.0), "final_model.test_accuracy = 2.0"),
        (lambda d: d["final_model"].pop("test_loss"), "final_model lacks key(s) ['test_loss']"),
    ],
)
def test_schema_violations_name_the_key(mutate: Any, expected: str) -> None:
    document = copy.deepcopy(build_sample())
    mutate(document)
    with pytest.raises(ResultsError) as info:
        validate_results(document)
    assert expected in str(info.value)


def test_write_results_roundtrip_and_refuses_bad(tmp_path: Path) -> None:
    document = build_sample()
    path = tmp_path / "results.json"
    write_results(document, path)
    assert json.loads(path.read_text()) == document
    assert load_results(path) == document
    broken = copy.deepcopy(document)
    broken["rounds"][0].pop("gas")
    with pytest.raises(ResultsError):
        write_results(broken, tmp_path / "broken.json")
    assert not (tmp_path / "broken.json").exists()
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(ResultsError, match="cannot read results"):
        load_results(tmp_path / "garbage.json")


def test_plots_are_png_files(tmp_path: Path) -> None:
    written = write_plots(build_sample(), tmp_path)
    assert [p.name for p in written] == ["accuracy.png", "rewards.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5_000


def test_detection_scores() -> None:
    scores = detection_scores(["a", "b", "c", "d"], ["a", "b"], {"a", "c"})
    assert scores == {"true_positives": 1, "false_positives": 1, "false_negatives": 1,
                      "precision": 0.5, "recall": 0.5}
    nothing = detection_scores(["a"], [], set())
    assert nothing["precision"] is None and nothing["recall"] is None


def test_table_rows() -> None:
    tracker = TaskTracker()
    for event, timestamp in recorded_run().items:
        tracker.feed(event, timestamp)
    names = {p.address: p.name for p in PARTICIPANTS}
    row = round_row(tracker.rounds[2], names.__getitem__, Metrics(0.3, 0.9123, 0.9, 0.9, 10), 400_000)
    assert row.split()[:4] == ["2", "w0", "w1", "w2"]
    assert "0.9123" in row and "0.9100" in row and "400000" in row
    assert len(header().splitlines()) == 2
    line = status_line(tracker.rounds[2], "reveal", {"workers": 3, "validators": 2}, ["worker-1"])
    assert line == "round 2 reveal: 3/3 updates, 2/2 commits, 2/2 reveals  [down: worker-1]"
    assert "waiting for the task" in status_line(None, "-", {"workers": 3, "validators": 2}, [])

