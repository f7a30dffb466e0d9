"""A node's keys, kept in its data directory with mode 0600.

- ``identity.key`` (or ``[network] key_file``): the libp2p Ed25519 identity (node.host);
- ``encryption.key``: the raw X25519 private key blobs are sealed to (protocol.envelope);
- ``vrf.pem``: the RSA VRF key for committee sortition (protocol.vrf);
- ``[chain] private_key_file``: the chain account's private key as hex (never created
  here: an account must be funded, so the operator provides it).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from libp2p.peer.id import ID as PeerID

from node.host import load_or_create_identity
from protocol import envelope, vrf

ENCRYPTION_KEY_FILE = "encryption.key"
VRF_KEY_FILE = "vrf.pem"
MAX_KEY_FILE_BYTES = 16 * 1024


class KeyFileError(ValueError):
    """A key file is missing, unreadable, malformed or readable by others."""


def write_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never overwriting one), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, path)  # fails if a key appeared meanwhile: never replace a key
    os.unlink(tmp)


def read_secret(path: Path, what: str) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{what} {path} is readable by other users (mode {stat.filemode(info.st_mode)}); "
            f"run: chmod 600 {path}"
        )
    if info.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{what} {path} is {info.st_size} bytes: not a key file")
    return path.read_bytes()


def read_chain_key(path: Path) -> str:
    """The hex private key of the node's chain account."""
    text = read_secret(path, "chain private key file").decode("ascii", "replace").strip()
    try:
        Account.from_key(text)
    except Exception as exc:
        raise KeyFileError(
            f"chain private key file {path} must hold one hex private key (0x + 64 hex digits)"
        ) from exc
    return text


def write_chain_key(path: Path, private_key: bytes) -> None:
    write_secret(path, ("0x" + private_key.hex() + "\n").encode())


@dataclass(frozen=True)
class NodeKeys:
    peer_id: PeerID
    encryption_private: bytes
    encryption_public: bytes
    vrf_key: vrf.VRFPrivateKey
    chain_key: str

    @property
    def address(self) -> str:
        return str(Account.from_key(self.chain_key).address)

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])


def load_or_create_keys(data_dir: Path, identity_file: Path, chain_key_file: Path) -> NodeKeys:
    """Load the node's keys, creating the libp2p, X25519 and VRF keys on first run."""
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(identity_file)
    encryption_path = data_dir / ENCRYPTION_KEY_FILE
    if not encryption_path.exists():
        write_secret(encryption_path, envelope.generate_keypair()[0])
    encryption_private = read_secret(encryption_path, "encryption key file")
    if len(encryption_private) != 32:
        raise KeyFileError(f"encryption key file {encryption_path} must hold 32 raw bytes")
    vrf_path = data_dir / VRF_KEY_FILE
    if not vrf_path.exists():
        write_secret(vrf_path, vrf.private_key_to_pem(vrf.generate_private_key()))
    try:
        vrf_key = vrf.private_key_from_pem(read_secret(vrf_path, "VRF key file"))
    except ValueError as exc:
        raise KeyFileError(f"VRF key file {vrf_path} is not a VRF key: {exc}") from exc
    return NodeKeys(
        peer_id=PeerID.from_pubkey(identity.public_key),
        encryption_private=encryption_private,
        encryption_public=envelope.public_key_of(encryption_private),
        vrf_key=vrf_key,
        chain_key=read_chain_key(chain_key_file),
    )
