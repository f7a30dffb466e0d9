"""`fl-node run` and `fl-node export` read --config alike: a config that does not load ends
the command with one line naming the file and the key, and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import main


@pytest.mark.parametrize("command", [["run"], ["export", "--car", "out.car"]])
def test_a_config_that_does_not_load_is_one_line(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nrole = "miner"\n[chain]\n')
    assert main([command[0], "--config", str(config), *command[1:]]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"fl-node {command[0]}: {config}: [node] role must be one of")
    assert not (tmp_path / "out.car").exists()
