"""node.runtime.keys: keys are created once with mode 0600, reloaded the same, and a
world-readable or malformed chain key is refused with the fix in the message."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.cli import main
from node.runtime.keys import KeyFileError, load_or_create_keys, write_chain_key


def test_keys_are_created_private_and_reloaded(tmp_path: Path) -> None:
    chain_key = tmp_path / "chain.key"
    write_chain_key(chain_key, bytes(range(1, 33)))
    first = load_or_create_keys(tmp_path / "data", tmp_path / "data" / "identity.key", chain_key)
    for name in ("identity.key", "encryption.key", "vrf.pem"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode == 0o600, name
    again = load_or_create_keys(tmp_path / "data", tmp_path / "data" / "identity.key", chain_key)
    assert again.peer_id == first.peer_id
    assert again.encryption_public == first.encryption_public
    assert again.vrf_key.modulus == first.vrf_key.modulus
    assert again.address == first.address


def test_a_readable_or_malformed_chain_key_is_refused(tmp_path: Path) -> None:
    chain_key = tmp_path / "chain.key"
    write_chain_key(chain_key, bytes(range(1, 33)))
    os.chmod(chain_key, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_keys(tmp_path / "d", tmp_path / "d" / "id.key", chain_key)
    os.chmod(chain_key, 0o600)
    chain_key.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="hex private key"):
        load_or_create_keys(tmp_path / "d", tmp_path / "d" / "id.key", chain_key)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_or_create_keys(tmp_path / "d", tmp_path / "d" / "id.key", tmp_path / "none.key")


def test_run_command_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nrole = "worker"\ndata_dir = "d"\ncolour = "red"\n')
    assert main(["run", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert str(config) in error and "colour" in error
