"""The localnet's child processes: each in its own process group, logging to its own file,
stopped by group (SIGTERM, then SIGKILL) and killed with the launcher if the launcher dies.

A `ForkServer` starts `python -m module ...` children by forking one server process that has
already imported the node's code (torch, py-libp2p, web3: ~220 MB of a node's ~330 MB private
memory), so the pages the imports made are shared copy-on-write by every node on the box
instead of each node making its own."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["ForkServer", "ManagedProcess", "ProcessGroup", "log_tail"]

NODE_MODULES = ("node.runtime.node", "torch._dynamo")
"""What a ForkServer imports before it forks: everything an `fl-node run` imports, and what
a worker's first optimizer imports (`node.runtime.learning.load_optimizer_code`: ~70 MB
that the workers then share instead of each importing its own)."""


def _child_setup() -> None:  # between fork and exec: own process group, die with the launcher
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Child(Protocol):
    """What ManagedProcess needs of a child: subprocess.Popen's pid, poll and wait."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class _ForkedChild:
    """A ForkServer's child as a _Child (exit codes as Popen's: -N for signal N)."""

    def __init__(self, process: BaseProcess, argv: Sequence[str]) -> None:
        self._process = process
        self._argv = list(argv)

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._argv, timeout or 0.0)
        return self._process.exitcode


def _run_module(
    module: str, args: Sequence[str], log_path: str, cwd: str | None, env: Mapping[str, str] | None
) -> None:
    """A forked child: what `python -m module args` with Popen's redirections would do."""
    _child_setup()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


class ForkServer:
    """Starts `python -m module args` command lines as forks of one server process that
    imported `preload` first (multiprocessing's forkserver); any other command line is not
    its to start (`can_start`)."""

    def __init__(self, preload: Sequence[str] = NODE_MODULES) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(preload))

    @staticmethod
    def can_start(argv: Sequence[str]) -> bool:
        return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m"

    def start(
        self, argv: Sequence[str], log_path: Path, cwd: Path | None, env: Mapping[str, str] | None
    ) -> _Child:
        if not self.can_start(argv):
            raise ValueError(f"a fork server starts `{sys.executable} -m module ...`, not {argv}")
        process = self._context.Process(
            target=_run_module,
            args=(argv[2], list(argv[3:]), str(log_path), None if cwd is None else str(cwd), env),
            daemon=True,  # terminated if the launcher exits without stopping it
        )
        process.start()
        return _ForkedChild(process, argv)


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a log file (reads at most `max_bytes` from its end)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One named child process; `start()` can be called again after it exited (a restart)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        """`forks`: start it as a fork of that server where the command line allows."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.expected_down = False  # a scenario crash: its exit is not a failure
        self.starts = 0
        self.forks = forks if forks is not None and forks.can_start(argv) else None
        self._process: _Child | None = None
        self._log: BinaryIO | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/start()
        if self.starts:
            self._log.write(f"\n===== restart #{self.starts} =====\n".encode())
            self._log.flush()
        if self.forks is not None:
            self._process = self.forks.start(self.argv, self.log_path, self.cwd, self.env)
        else:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                preexec_fn=_child_setup,
            )
        self.starts += 1
        self.expected_down = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def kill(self) -> None:
        """SIGKILL the whole group now (a simulated crash)."""
        if self.running:
            assert self._process is not None
            self._signal_group(signal.SIGKILL)
            self._process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it if still there after `timeout`."""
        process = self._process
        if process is not None and process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                process.wait()
        self._close_log()

    def _signal_group(self, signum: signal.Signals) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            try:  # a fork that has not made its own group yet
                os.kill(self._process.pid, signum)
            except ProcessLookupError:
                pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


class ProcessGroup:
    """Every process the launcher started, stopped together (in reverse start order)."""

    def __init__(self) -> None:
        self.processes: dict[str, ManagedProcess] = {}

    def add(self, process: ManagedProcess) -> ManagedProcess:
        if process.name in self.processes:
            raise ValueError(f"two processes named {process.name}")
        self.processes[process.name] = process
        return process

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.processes[name]

    def failed(self, clean_exit_ok: bool = False) -> ManagedProcess | None:
        """The first process that exited though nobody asked it to (with `clean_exit_ok`,
        an exit with status 0 is not a failure: the task is over)."""
        for process in self.processes.values():
            if not process.starts or process.running or process.expected_down:
                continue
            if clean_exit_ok and process.returncode == 0:
                continue
            return process
        return None

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every group at once, then wait for each (SIGKILL after `timeout` overall)."""
        live = [p for p in reversed(self.processes.values()) if p.running]
        for process in live:
            process._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in live:
            process.stop(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            process._close_log()
