"""node/anvil.py: finding, starting and stopping a real anvil."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from node.anvil import Anvil, AnvilNotFound, AnvilStartError, find_anvil


def test_missing_anvil_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnvilNotFound, match=r"npm ci.*scripts/setup\.sh"):
        find_anvil(repo_root=tmp_path)


@pytest.mark.anvil
def test_start_answers_and_stop_ends_the_process(anvil_binary: Path) -> None:
    chain = Anvil(binary=anvil_binary, chain_id=4242)
    with chain:
        pid = chain.pid
        assert pid is not None and Path(f"/proc/{pid}").exists()
        w3 = chain.web3()
        assert w3.eth.chain_id == 4242
        keys = chain.dev_private_keys(2)
        assert len(set(keys)) == 2
        # The dev keys are the funded accounts anvil lists.
        from eth_account import Account

        assert [Account.from_key(k).address for k in keys] == w3.eth.accounts[:2]
        assert w3.eth.get_block("latest")["baseFeePerGas"] is not None  # London+ rules
    assert chain.pid is None
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


@pytest.mark.anvil
def test_port_in_use_is_a_clear_start_error(anvil_binary: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AnvilStartError, match="exited|did not answer"):
            Anvil(binary=anvil_binary, port=port, startup_timeout=10).start()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.fixture
def anvil_binary() -> Path:
    try:
        return find_anvil()
    except AnvilNotFound as exc:
        pytest.skip(f"needs the npm anvil binary: {exc}")
