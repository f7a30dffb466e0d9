"""node.localnet.processes.ForkServer: node processes forked from one server that imported
their code first, managed like any other child (logs, exit codes, kill and restart by group)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from node.localnet.processes import ForkServer, ManagedProcess, log_tail

PROBE = "tests.localnet.forked_probe"
REPO = Path(__file__).resolve().parents[2]


def _probe(tmp_path: Path, forks: ForkServer | None, mode: str) -> ManagedProcess:
    return ManagedProcess(
        f"probe-{mode}", [sys.executable, "-m", PROBE, mode], tmp_path / f"probe-{mode}.log",
        cwd=tmp_path, env={**os.environ, "PROBE_VALUE": "from-env", "PYTHONPATH": str(REPO)}, forks=forks,
    )  # fmt: skip


def _wait_for_line(process: ManagedProcess, text: str) -> str:
    for _ in range(600):  # bounded: 60 s
        tail = process.tail()
        if text in tail:
            return tail
        time.sleep(0.1)
    raise AssertionError(f"{process.name} never printed {text!r}: {process.tail()}")


def test_a_forked_node_runs_its_module_with_its_env_cwd_and_log_and_reports_its_status(
    tmp_path: Path,
) -> None:
    forks = ForkServer(preload=(PROBE,))
    process = _probe(tmp_path, forks, "3")
    assert process.forks is forks
    process.start()
    assert process._process is not None and process._process.wait(60) == 3
    assert process.returncode == 3 and not process.running
    line = log_tail(process.log_path)
    assert f"cwd {tmp_path}" in line and "probe from-env" in line
    # forked from the server that imported it: what the node's imports made is shared
    assert "preloaded True" in line
    assert f"pid {process.pid}" in line

    plain = _probe(tmp_path / "plain", None, "0")
    (tmp_path / "plain").mkdir()
    plain.start()
    assert plain._process is not None and plain._process.wait(60) == 0
    assert "preloaded False" in log_tail(plain.log_path)


def test_a_forked_node_is_killed_by_group_restarted_and_stopped(tmp_path: Path) -> None:
    forks = ForkServer(preload=(PROBE,))
    process = _probe(tmp_path, forks, "sleep")
    process.start()
    _wait_for_line(process, "preloaded True")
    first = process.pid
    process.kill()
    assert process.returncode == -signal.SIGKILL and not process.running
    process.start()
    tail = _wait_for_line(process, "===== restart #1 =====")
    assert process.pid != first and process.starts == 2
    _wait_for_line(process, f"pid {process.pid}")
    process.stop(timeout=30)
    assert process.returncode == -signal.SIGTERM
    assert tail.count("preloaded True") >= 1


def test_a_command_line_that_is_not_python_dash_m_is_started_plainly(tmp_path: Path) -> None:
    forks = ForkServer(preload=())
    process = ManagedProcess("plain", [sys.executable, "-c", "print('hello')"], tmp_path / "p.log", forks=forks)
    assert process.forks is None
    process.start()
    assert process._process is not None and process._process.wait(60) == 0
    assert "hello" in log_tail(process.log_path)
