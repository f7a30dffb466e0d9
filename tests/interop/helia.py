"""A Helia 7 peer in a Node.js process (tests/interop/js/helia_peer.mjs), driven over
its stdin/stdout; the tests skip with the reason when node or the npm packages are missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "interop" / "js" / "helia_peer.mjs"
PACKAGES = ("helia", "@helia/bitswap", "@helia/unixfs", "@helia/car", "@helia/libp2p", "libp2p",
            "@libp2p/tcp", "@libp2p/noise", "@libp2p/yamux", "@libp2p/identify", "@ipld/car",
            "ipfs-unixfs-importer", "blockstore-core")
START_TIMEOUT_S = 60.0  # importing libp2p under a loaded 2-core machine; a hang guard
COMMAND_TIMEOUT_S = 90.0


def helia_missing(packages: tuple[str, ...] = PACKAGES, what: str = "Helia") -> str | None:
    """Why the Node.js peer needing ``packages`` cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH; install Node.js and run scripts/setup.sh"
    absent = [name for name in packages if not (REPO / "node_modules" / name / "package.json").exists()]
    if absent:
        return (f"node_modules lacks {', '.join(absent)}; run scripts/setup.sh "
                f"(npm install) to get the {what} interop packages")
    return None


requires_helia = pytest.mark.skipif(helia_missing() is not None, reason=helia_missing() or "")


class HeliaPeer:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()
        self.peer_id = ""
        self.addr = ""

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError(f"the Helia peer exited (status {self.process.returncode})")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def start(self) -> None:
        with trio.fail_after(START_TIMEOUT_S):
            hello = await self._line()
        assert hello["ok"], hello
        self.peer_id = hello["peer_id"]
        self.addr = hello["addrs"][0]

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Run one command; raises AssertionError with Helia's error text if it failed."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        with trio.fail_after(COMMAND_TIMEOUT_S):
            reply = await self._line()
        assert reply.get("ok"), f"Helia {cmd} failed: {reply.get('error')}"
        return reply


@asynccontextmanager
async def helia_peer(script: Path = SCRIPT) -> AsyncIterator[HeliaPeer]:
    """A Node.js peer running ``script`` (any script that speaks helia_peer.mjs's protocol)."""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status=trio.TASK_STATUS_IGNORED: trio.run_process(
                ["node", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                check=False, cwd=REPO, task_status=task_status,
            )
        )
        peer = HeliaPeer(process)
        try:
            await peer.start()
            yield peer
        finally:
            with trio.move_on_after(10), trio.CancelScope(shield=True):
                try:
                    await peer.call("stop")
                except Exception:
                    pass
            if process.returncode is None:
                process.kill()
