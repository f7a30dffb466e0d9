"""Start and stop a local anvil chain (Foundry's dev node, installed from npm by `npm ci`).

    with Anvil() as chain:
        w3 = chain.web3()
        keys = chain.dev_private_keys(5)   # one funded account per process/participant

anvil runs on 127.0.0.1 on a free port with Prague rules, quiet, instant mining. It is
stopped by PID (SIGTERM, then SIGKILL), and on Linux it also gets SIGTERM if this process
dies first, so no chain outlives its launcher.

Note: anvil hands out duplicate nonces to concurrent senders of one account, so each
process or participant must use its own account (dev_private_keys gives distinct ones).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from eth_account import Account
from web3 import Web3

from node.chain.errors import ChainError

REPO_ROOT = Path(__file__).resolve().parents[1]
# anvil's default mnemonic: its dev accounts are funded from this (test keys, never real money).
DEV_MNEMONIC = "test test test test test test test test test test test junk"
INSTALL_HINT = "run `npm ci` in the repository root (or `bash scripts/setup.sh`) to install it"


class AnvilNotFound(ChainError):
    """No anvil binary in node_modules or on PATH."""


class AnvilStartError(ChainError):
    """anvil was found but did not come up."""


def _platform_package() -> str | None:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    if arch is None or system is None:
        return None
    return f"anvil-{system}-{arch}"


def find_anvil(repo_root: Path = REPO_ROOT) -> Path:
    """The anvil executable: the native binary from node_modules first (no node wrapper between
    us and the process, so signals reach anvil itself), then node_modules/.bin/anvil, then PATH."""
    candidates: list[Path] = []
    package = _platform_package()
    if package is not None:
        candidates.append(repo_root / "node_modules" / "@foundry-rs" / package / "bin" / "anvil")
    candidates.append(repo_root / "node_modules" / ".bin" / "anvil")
    on_path = shutil.which("anvil")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise AnvilNotFound(f"anvil not found (looked at {looked} and PATH); {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dev_private_keys(count: int, mnemonic: str = DEV_MNEMONIC) -> list[str]:
    """Private keys (hex) of anvil's first `count` funded dev accounts."""
    Account.enable_unaudited_hdwallet_features()
    return [
        "0x" + bytes(Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key).hex()
        for i in range(count)
    ]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Anvil:
    def __init__(
        self,
        *,
        binary: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        accounts: int = 10,
        balance_ether: int = 10_000,
        chain_id: int = 31337,
        block_time: float | None = None,
        mixed_mining: bool = True,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.binary = binary or find_anvil()
        self.host = host
        self.port = port or free_port(host)
        self.accounts = accounts
        self.balance_ether = balance_ether
        self.chain_id = chain_id
        self.block_time = block_time
        # With a block time, also mine each transaction as it arrives (anvil >= 1.x): a
        # receipt in ~50 ms instead of up to a block time, while the interval blocks keep
        # the clock (and so the phases' deadlines) moving.
        self.mixed_mining = mixed_mining
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--hardfork",
            "prague",
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            str(self.accounts),
            "--balance",
            str(self.balance_ether),
            "--mnemonic",
            DEV_MNEMONIC,
            "--quiet",
        ]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
            if self.mixed_mining:
                cmd.append("--mixed-mining")
        return cmd + list(self.extra_args)

    def start(self) -> Anvil:
        if self._process is not None:
            raise AnvilStartError("this Anvil is already started")
        # Output goes to a file, never a pipe nobody drains (a full pipe would stall anvil).
        self._log = open(self.log_path, "ab") if self.log_path else tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        request = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        ).encode()
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise AnvilStartError(
                    f"anvil exited with {self._process.returncode} at startup: {self._output_tail()}"
                )
            try:
                req = urllib.request.Request(
                    self.url, data=request, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=2) as response:
                    answer = json.loads(response.read())
                if int(answer["result"], 16) == self.chain_id:
                    return
                last_error = f"unexpected chain id {answer['result']}"
            except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise AnvilStartError(
            f"anvil on {self.url} did not answer eth_chainId within {self.startup_timeout}s ({last_error})"
        )

    def _output_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-limit:]

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate by PID, then kill if it does not exit within `timeout`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def web3(self, timeout: float = 30.0) -> Web3:
        return Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": timeout}))

    def dev_private_keys(self, count: int) -> list[str]:
        if count > self.accounts:
            raise ValueError(f"anvil was started with {self.accounts} accounts; asked for {count}")
        return dev_private_keys(count)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
