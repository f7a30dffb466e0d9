"""The driver and its effects act on what actions carry: none of them reads the machine's
view (its state), so every decision stays in protocol/state where it is tested."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "node" / "runtime"
PUMP_AND_EFFECTS = ["driver.py", "effects.py", "effects_chain.py", "effects_network.py", "effects_jobs.py"]


@pytest.mark.parametrize("name", PUMP_AND_EFFECTS)
def test_no_module_of_the_pump_reads_the_machines_view_or_local_state(name: str) -> None:
    tree = ast.parse((RUNTIME / name).read_text(encoding="utf-8"))
    reads = [
        f"{name}:{node.lineno} .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in {"view", "local", "session"}
    ]
    assert reads == []


def test_the_scan_sees_a_view_read() -> None:
    tree = ast.parse("status.phase = machine.view.phase")
    assert any(isinstance(n, ast.Attribute) and n.attr == "view" for n in ast.walk(tree))
