"""bench.attacks: its cells are sized as scenarios are, and a one-cell matrix (one attack,
one rule, one round, tiny shards, the honest baseline beside it) runs end to end in
process and writes its table and heatmap."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.attacks import ATTACKS, main, worker_kinds
from node.attacks.spec import alie_z_max, parse_attack_spec
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
