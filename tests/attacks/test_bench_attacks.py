"""bench.attacks: its cells are sized as scenarios are, and a one-cell matrix (one attack,
one rule, one round, tiny shards, the honest baseline beside it) runs end to end in
process and writes its table and heatmap."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.attacks import (
    ATTACKS,
    ETHER,
    Cell,
    main,
    measure,
    misses,
    parse_args,
    round_record,
    slackened_exchange,
    task_terms,
    worker_kinds,
)
from node.attacks.spec import alie_z_max, parse_attack_spec
from node.chain.types import RoundResult
from node.localnet.inprocess import InProcessResult
from node.runtime import effects_network
from node.runtime import node as runtime_node
from node.runtime.effects import NodeStatus
from tests.conftest import MNIST_ROOT, needs_mnist


def test_the_last_workers_attack_sized_for_the_run() -> None:
    kinds = worker_kinds("alie_colluding", 10, 3)
    assert kinds[:7] == ("honest",) * 7
    for kind in kinds[7:]:
        spec = parse_attack_spec(kind)
        assert spec["colluders"] == 3 and 0 < alie_z_max(10, 3) - spec["z"] < 1e-4
    (boosted,) = set(worker_kinds("inflated_scaled", 10, 3)[7:])
    assert parse_attack_spec(boosted)["scale"] == 10 and parse_attack_spec(boosted)["factor"] == 10
    assert set(worker_kinds("scaled", 5, 1)[4:]) == {"scaled:scale=5.0"}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_cell_is_a_valid_worker_spec(attack: str) -> None:
    for kind in worker_kinds(attack, 10, 3):
        parse_attack_spec(kind)


@needs_mnist()
def test_a_one_cell_matrix_writes_its_table_and_heatmap(tmp_path: Path) -> None:
    code = main([
        "--attacks", "sign_flip", "--rules", "median:F", "--rounds", "1", "--workers", "4",
        "--attackers", "1", "--validators", "1", "--samples", "300", "--validation", "200",
        "--parallel", "2", "--timeout", "300", "--out", str(tmp_path), "--data-root", str(MNIST_ROOT),
    ])
    assert code == 0
    rows = [line.split("|")[1:-1] for line in (tmp_path / "attacks.md").read_text().splitlines()[2:]]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        ("honest", "median:1"), ("sign_flip", "median:1"),
    ]
    honest, flipped = rows
    assert honest[3].strip() == "+0.00"  # the baseline against itself
    assert flipped[6].strip() in ("0/1", "1/1")  # one attacker, one round, submitted
    assert honest[6].strip() == "" and honest[10].strip() == "0.000"  # nobody honest slashed
    for row in rows:
        assert 0 < float(row[2].strip().rstrip("%")) <= 100
    assert (tmp_path / "attacks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Accuracy:
    """Stands in for the MNIST test split: measure only asks it for the final accuracy."""

    def accuracy(self, final_model: Path) -> float:
        return 0.9


def _round(workers: list[str], paid: list[int], slashed: list[int], validators: list[str]) -> RoundResult:
    return RoundResult(
        finalized=True, workers=tuple(workers), consensus_scores=(0,) * len(workers),
        accepted=tuple(p > 0 for p in paid), worker_payouts=tuple(paid),
        worker_slashes=tuple(slashed), validators=tuple(validators),
        revealed=(True,) * len(validators), agreed=(True,) * len(validators),
        validator_payouts=(1,) * len(validators), validator_slashes=(0,) * len(validators),
        reveals=len(validators), consensus_accuracy=0, returned_to_escrow=0,
    )


def test_a_party_missing_from_a_round_is_counted_missed_and_unpaid(tmp_path: Path) -> None:
    workers = [NodeStatus(f"worker{i}", "worker", f"0xW{i}") for i in range(4)]
    validators = [NodeStatus(f"validator{i}", "validator", f"0xV{i}") for i in range(2)]
    kinds = ("honest", "honest", "honest", "sign_flip")
    clean = _round(["0xw0", "0xw1", "0xw2", "0xw3"], [5, 5, 5, 0], [0, 0, 0, 1], ["0xv0", "0xv1"])
    # round 2: honest worker 1 and validator 1 never made it, the attacker did not submit
    lost = _round(["0xW0", "0xW2"], [5, 5], [0, 0], ["0xV0"])
    result = InProcessResult(
        w3=None, reader=None, registry="", task="",  # type: ignore[arg-type]
        requester=NodeStatus("requester", "requester", "0xR"), workers=workers,
        validators=validators, rounds=[clean, lost],
    )
    cell = measure(result, kinds, _Accuracy(), tmp_path / "m", "sign_flip", "fedavg", 1.0)  # type: ignore[arg-type]
    assert (cell.honest_missed, cell.attacker_missed) == (2, 1)
    assert cell.honest_unpaid == 2 and cell.attacker_rounds == 1 == cell.attacker_rounds_slashed
    honest = measure(
        dataclasses.replace(result, rounds=[dataclasses.replace(clean, worker_payouts=(5,) * 4,
                                                                worker_slashes=(0,) * 4)]),
        ("honest",) * 4, _Accuracy(), tmp_path / "m", "honest", "fedavg", 1.0,  # type: ignore[arg-type]
    )
    assert misses(cell, honest) == ["attackers missed rounds", "honest missed rounds"]
    assert honest.honest_unpaid == 0 and misses(honest, honest) == []
    record = round_record(result, kinds)
    assert [w["worker"] for w in record[1]["workers"]] == [0, 2]
    assert record[0]["workers"][3] | {"score": 0} == {
        "worker": 3, "kind": "sign_flip", "accepted": False, "score": 0, "paid_wei": 0,
        "slashed_wei": 1,
    }


def test_slack_stretches_the_phase_deadlines(tmp_path: Path) -> None:
    plain = task_terms(parse_args([]), "fedavg", tmp_path)
    slack = task_terms(parse_args(["--slack", "2.5"]), "median:3", tmp_path)
    for phase in ("training_seconds", "commit_seconds", "reveal_seconds"):
        assert slack[phase] == round(2.5 * plain[phase])
    assert slack["aggregator"] == "median:3"
    with pytest.raises(SystemExit):
        parse_args(["--slack", "0.5"])


def test_slack_stretches_every_nodes_exchange_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    original = runtime_node.EXCHANGE_LIMITS
    monkeypatch.setattr(runtime_node, "EXCHANGE_LIMITS", original)  # restored afterwards
    monkeypatch.setattr(effects_network, "FETCH_TIMEOUT_S", 120.0)
    slackened_exchange(3)
    assert effects_network.FETCH_TIMEOUT_S == 360.0
    stretched = runtime_node.EXCHANGE_LIMITS
    assert stretched.read_timeout_s == 3 * original.read_timeout_s
    assert stretched.request_arrival_s == 3 * original.request_arrival_s
    assert stretched.strikes_to_ban == original.strikes_to_ban  # counts are not time


def test_tabulate_writes_the_finished_cells_of_a_stopped_run(tmp_path: Path) -> None:
    def cell(attack: str, accuracy: float) -> Cell:
        return Cell(attack, "fedavg", accuracy, 0, 2 * ETHER, 3, 3, 30 * ETHER, 0, 0, 0, 0, 0,
                    4 * ETHER, None, 60.0)

    for done in (cell("scaled", 0.80), cell("honest", 0.85), cell("sign_flip", 0.845)):
        folder = tmp_path / "runs" / "fedavg" / done.attack
        folder.mkdir(parents=True)
        (folder / "rounds.json").write_text(json.dumps({"cell": dataclasses.asdict(done)}))
    (tmp_path / "runs" / "fedavg" / "gaussian").mkdir()  # started, never finished
    assert main(["--tabulate", "--out", str(tmp_path)]) == 0
    rows = [line.split("|")[1:-1] for line in (tmp_path / "attacks.md").read_text().splitlines()[2:]]
    assert [(row[0].strip(), row[3].strip(), row[13].strip()) for row in rows] == [
        ("honest", "+0.00", "none"), ("sign_flip", "-0.50", "none"), ("scaled", "-5.00", "accuracy"),
    ]
    assert (tmp_path / "attacks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--tabulate", "--out", str(tmp_path / "empty")]) == 1


def test_an_inflated_claim_is_overpaid_only_if_it_buys_more_wei_per_unit_of_score(tmp_path: Path) -> None:
    workers = [NodeStatus(f"worker{i}", "worker", f"0xW{i}") for i in range(3)]
    kinds = ("honest", "honest", "inflated_samples:factor=10")

    def cell(paid: list[int], scores: tuple[int, ...]) -> Cell:
        round_ = dataclasses.replace(
            _round(["0xw0", "0xw1", "0xw2"], paid, [0, 0, 0], ["0xv0"]), consensus_scores=scores
        )
        result = InProcessResult(
            w3=None, reader=None, registry="", task="",  # type: ignore[arg-type]
            requester=NodeStatus("requester", "requester", "0xR"), workers=workers,
            validators=[NodeStatus("validator0", "validator", "0xV0")], rounds=[round_],
        )
        return measure(result, kinds, _Accuracy(), tmp_path / "m", "inflated_samples", "fedavg", 1.0)  # type: ignore[arg-type]

    honest = dataclasses.replace(cell([5, 5, 5], (1, 1, 1)), attack="honest")
    # paid more than the mean honest worker for a better update: what its quality bought
    better = cell([400, 600, 700], (400, 600, 700))
    assert better.per_attacker > better.per_honest_worker and better.pay_per_score == 1.0
    assert "overpaid" not in misses(better, honest)
    # the same wei for a worse update: its claim bought the difference
    claimed = cell([400, 600, 700], (400, 600, 350))
    assert claimed.pay_per_score == 2.0 and "overpaid" in misses(claimed, honest)
