"""bench.work_medians: the one-sort scores it times are the definition's, on every size."""

from __future__ import annotations

import pytest

from bench import work_medians


def test_the_bench_compares_equal_scores(capsys: pytest.CaptureFixture[str]) -> None:
    work_medians.main(["--updates", "1,2,5", "--parameters", "64", "--repeats", "1"])
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["1", "2", "5"]
    assert all(row.endswith("True") for row in rows)
