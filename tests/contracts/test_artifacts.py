"""The committed artifacts are what the committed sources compile to.

A cheap check (no Node): every artifact names the pinned compiler and settings and carries the
sha256 of its current source file. The exact check recompiles with the pinned solc-js through
contracts/compile.js --check, and a self-test shows that check failing on a stale artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "contracts"
ARTIFACTS = CONTRACTS / "artifacts"
SOLC_VERSION = "0.8.37"


def _node_toolchain() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("recompiling the contracts needs Node.js (`node` is not on PATH)")
    if not (REPO / "node_modules" / "solc" / "package.json").is_file():
        pytest.skip(
            "recompiling the contracts needs solc-js: run `npm ci` (or bash scripts/setup.sh)"
        )
    return node


def test_artifacts_match_sources_pinned_compiler_and_settings() -> None:
    artifacts = sorted(ARTIFACTS.glob("*.json"))
    assert artifacts, f"no artifacts in {ARTIFACTS}; run `node contracts/compile.js`"
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"]["solc"]
    assert pinned == SOLC_VERSION
    for path in artifacts:
        artifact = json.loads(path.read_text())
        source = CONTRACTS / artifact["sourceName"]
        assert source.is_file(), f"{path.name}: its source {source} is gone; recompile"
        digest = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
        assert artifact["sourceHash"] == digest, (
            f"{path.name} was built from an older {artifact['sourceName']}: run "
            "`node contracts/compile.js` and commit contracts/artifacts/"
        )
        assert artifact["compiler"]["version"].startswith(SOLC_VERSION + "+")
        assert artifact["settings"]["evmVersion"] == "prague"
        assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 200}
    for source in CONTRACTS.rglob("*.sol"):
        if "artifacts" in source.parts:
            continue
        text = source.read_text()
        for line in text.splitlines():
            if line.startswith(("contract ", "library ", "interface ", "abstract contract ")):
                name = line.split()[1 if not line.startswith("abstract") else 2]
                assert (ARTIFACTS / f"{name}.json").is_file(), (
                    f"{source.name}: no artifact for {name}"
                )


def test_recompiling_reproduces_the_committed_artifacts() -> None:
    node = _node_toolchain()
    done = subprocess.run(
        [node, str(CONTRACTS / "compile.js"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_staleness_check_fails_on_a_changed_source(tmp_path: Path) -> None:
    node = _node_toolchain()
    # A private copy of one small source and its artifact, compiled by the real script.
    (tmp_path / "artifacts").mkdir()
    shutil.copy(CONTRACTS / "compile.js", tmp_path / "compile.js")
    shutil.copy(CONTRACTS / "RewardMath.sol", tmp_path / "RewardMath.sol")
    shutil.copy(ARTIFACTS / "RewardMath.json", tmp_path / "artifacts" / "RewardMath.json")
    env = {**os.environ, "NODE_PATH": str(REPO / "node_modules")}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [node, str(tmp_path / "compile.js"), "--check"],
            capture_output=True,
            text=True,
            timeout=540,
            env=env,
        )

    fresh = check()
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    source = tmp_path / "RewardMath.sol"
    source.write_text(
        source.read_text().replace("k == 1 ? pool : pool / 2", "k == 1 ? pool : pool / 3")
    )
    stale = check()
    assert stale.returncode == 1
    assert "RewardMath.json (differs)" in stale.stderr
    assert "node contracts/compile.js" in stale.stderr


def test_compile_errors_exit_nonzero_and_are_printed(tmp_path: Path) -> None:
    node = _node_toolchain()
    shutil.copy(CONTRACTS / "compile.js", tmp_path / "compile.js")
    (tmp_path / "Broken.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\n"
        "contract Broken { function f() public { undeclared = 1; } }\n"
    )
    done = subprocess.run(
        [node, str(tmp_path / "compile.js")],
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "NODE_PATH": str(REPO / "node_modules")},
    )
    assert done.returncode == 1
    assert "DeclarationError: Undeclared identifier" in done.stderr
    assert "no artifacts written" in done.stderr
    assert not (tmp_path / "artifacts").exists()
