"""The launcher on a real anvil and a real bootstrap node, with stand-in nodes: a node that
dies fails the run with its log tail, Ctrl-C stops the run, and either way every process the
launcher started (nodes, bootstrap, anvil) is gone afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.anvil import AnvilNotFound, find_anvil
from node.datasets import default_data_root, mnist_available

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("standin_node.py")

LAUNCH = """
import sys
from pathlib import Path
from node.localnet.launcher import LocalnetOptions, run_localnet
options = LocalnetOptions(
    output=Path(sys.argv[1]), data_root=Path(sys.argv[2]), workers=2, validators=1, rounds=1,
    max_samples=1000, timeout=120, poll_interval=0.2,
    node_command=(sys.executable, sys.argv[3]),
)
sys.exit(run_localnet(options))
"""


@pytest.fixture
def needs() -> Path:
    try:
        find_anvil()
    except AnvilNotFound as exc:
        pytest.skip(f"launcher tests need the npm anvil binary: {exc}")
    root = default_data_root()
    if not mnist_available(root, "test"):
        pytest.skip(f"MNIST not found under {root}; set FL_NODE_DATA_ROOT")
    return root


def _launch(tmp_path: Path, data_root: Path, fail: str = "") -> subprocess.Popen[str]:
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "STANDIN_PIDS": str(pids), "STANDIN_FAIL": fail, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(tmp_path / "out"), str(data_root), str(STANDIN)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _read_until_started(launcher: subprocess.Popen[str]) -> list[str]:
    """The launcher's output up to its line saying the nodes were started."""
    assert launcher.stdout is not None
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if line.startswith("started requester"):
            break
    return lines


def _finish(launcher: subprocess.Popen[str], lines: list[str], tmp_path: Path) -> str:
    """Wait for the launcher to exit; its whole output (also kept in launcher.out)."""
    rest, _ = launcher.communicate(timeout=60)
    output = "".join(lines) + rest
    (tmp_path / "launcher.out").write_text(output)
    return output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _assert_all_gone(tmp_path: Path, output: str) -> None:
    pids = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    anvil_pid = _anvil_pid(tmp_path)
    assert pids and anvil_pid and anvil_pid > 0, output
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in [*pids, anvil_pid]):
        time.sleep(0.1)
    assert not [p for p in [*pids, anvil_pid] if _alive(p)], output


def _anvil_pid(tmp_path: Path) -> int | None:
    # The launcher names its anvil's pid in its first line: "anvil http://... (pid N) ...".
    for line in (tmp_path / "launcher.out").read_text().splitlines():
        if line.startswith("anvil http://"):
            return int(line.split("(pid ")[1].split(")")[0])
    return None


@pytest.mark.anvil
def test_a_dying_node_fails_the_run_with_its_log_tail(tmp_path: Path, needs: Path) -> None:
    launcher = _launch(tmp_path, needs, fail="worker-1")
    output, _ = launcher.communicate(timeout=180)
    (tmp_path / "launcher.out").write_text(output)
    assert launcher.returncode == 1, output
    assert "worker-1 exited with status 3 though nobody stopped it" in output
    assert "simulated crash" in output  # the log tail is shown
    _assert_all_gone(tmp_path, output)


@pytest.mark.anvil
def test_ctrl_c_stops_everything(tmp_path: Path, needs: Path) -> None:
    launcher = _launch(tmp_path, needs)
    lines = _read_until_started(launcher)
    pids = tmp_path / "pids"
    deadline = time.monotonic() + 60
    while len(list(pids.iterdir())) < 4 and time.monotonic() < deadline:  # 1 + 2 + 1 nodes
        time.sleep(0.1)
    launcher.send_signal(signal.SIGINT)
    output = _finish(launcher, lines, tmp_path)
    assert launcher.returncode == 130, output
    assert "localnet failed: stopped by SIGINT" in output
    _assert_all_gone(tmp_path, output)


@pytest.mark.anvil
def test_losing_the_chain_fails_the_run_with_anvils_log(tmp_path: Path, needs: Path) -> None:
    launcher = _launch(tmp_path, needs)
    lines = _read_until_started(launcher)
    (tmp_path / "launcher.out").write_text("".join(lines))
    anvil_pid = _anvil_pid(tmp_path)
    assert anvil_pid and _alive(anvil_pid), lines
    os.kill(anvil_pid, signal.SIGKILL)
    output = _finish(launcher, lines, tmp_path)
    assert launcher.returncode == 1, output
    assert "lost the chain at http://127.0.0.1:" in output
    _assert_all_gone(tmp_path, output)
