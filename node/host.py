"""The libp2p host of a node: persistent Ed25519 identity, TCP + Noise + Yamux, and a swarm
fixed for long-running use.

Why each choice:
- Noise only and Yamux only: py-libp2p's defaults also offer plaintext, secio and mplex.
- ``max_connections_per_peer=1``: below that limit every dial waits a 250 ms
  happy-eyeballs delay for a second connection.
- ``LongRunningSwarm`` (node.libp2p_compat, with every other py-libp2p override): inbound
  connections release their handler task and limiter slot when they close, and a protocol
  handler's exception is kept to its stream instead of stopping the swarm.
- ``ReadingYamux``: a connection's read loop never waits behind its own data writer, so two
  peers sending each other blocks at once do not wedge the connection.
- libp2p logs handshake, identify and stream churn at ERROR level although none of it is a
  failure; :func:`configure_libp2p_logging` routes it through normal logging at a chosen level.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.utils.address_validation import expand_wildcard_address

from node.libp2p_compat import (
    LongRunningSwarm,
    ReadingYamux,
    adopt_swarm,
    install_record_cache,
    install_yamux_patch,
)

__all__ = [
    "HostConfig",
    "HostConfigError",
    "IdentityError",
    "LongRunningSwarm",
    "PeerID",
    "configure_libp2p_logging",
    "connect",
    "host_multiaddrs",
    "load_or_create_identity",
    "open_host",
    "parse_peer_multiaddr",
]

logger = logging.getLogger(__name__)

# A serialized libp2p Ed25519 private key is 68 bytes; anything much larger is not a key file.
_MAX_KEY_FILE_BYTES = 4096
_CLOSE_TIMEOUT_S = 10.0


class IdentityError(ValueError):
    """The node's identity key file is unreadable, unsafe or not an Ed25519 libp2p key."""


class HostConfigError(ValueError):
    """A host setting (listen address, peer multiaddr, limit) is invalid."""


@dataclass(frozen=True)
class HostConfig:
    """Everything needed to start a host. All limits are per host."""

    key_path: Path
    """Ed25519 identity file (libp2p protobuf encoding), created with mode 0600 on first run."""
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    max_connections: int = 300
    """Total connections (both directions) the swarm keeps."""
    max_inbound: int = 250
    """Concurrent inbound connections; the rest of ``max_connections`` stays free for dials."""
    dial_timeout_s: float = 10.0
    max_pending_handshakes: int = 32
    """Inbound connections still in their Noise/Yamux handshake; a new one evicts the oldest,
    so idle sockets cannot hold every inbound slot."""
    handshake_timeout_s: float = 10.0
    libp2p_log_level: int = logging.CRITICAL
    """Level for the ``libp2p`` loggers; their ERROR records are routine churn (see module doc)."""

    def __post_init__(self) -> None:
        if not self.listen_addrs:
            raise HostConfigError(
                "listen_addrs is empty; give at least one, e.g. /ip4/127.0.0.1/tcp/0"
            )
        for addr in self.listen_addrs:
            _parse_listen_addr(addr)
        if self.max_connections < 1:
            raise HostConfigError(f"max_connections must be >= 1, got {self.max_connections}")
        if not 1 <= self.max_inbound <= self.max_connections:
            raise HostConfigError(
                f"max_inbound must be between 1 and max_connections ({self.max_connections}), "
                f"got {self.max_inbound}"
            )
        if self.dial_timeout_s <= 0 or self.handshake_timeout_s <= 0:
            raise HostConfigError(
                "dial_timeout_s and handshake_timeout_s must be > 0, got "
                f"{self.dial_timeout_s} and {self.handshake_timeout_s}"
            )
        if not 1 <= self.max_pending_handshakes <= self.max_inbound:
            raise HostConfigError(
                f"max_pending_handshakes must be between 1 and max_inbound ({self.max_inbound}), "
                f"got {self.max_pending_handshakes}"
            )


def configure_libp2p_logging(level: int = logging.CRITICAL) -> None:
    """Route libp2p's records through normal logging, filtered at ``level``.

    On import libp2p sets its logger to WARNING with no handler and ``propagate=False``, so
    Python's last-resort handler prints routine churn to stderr. A NullHandler stops that;
    propagation lets the application's handlers see whatever passes ``level``.
    """
    libp2p_logger = logging.getLogger("libp2p")
    libp2p_logger.setLevel(level)
    libp2p_logger.propagate = True
    if not any(isinstance(h, logging.NullHandler) for h in libp2p_logger.handlers):
        libp2p_logger.addHandler(logging.NullHandler())


def load_or_create_identity(path: Path) -> KeyPair:
    """Load the Ed25519 identity at ``path``, creating it (mode 0600) when it does not exist.

    The file holds the libp2p protobuf encoding of the private key (the same bytes as
    go-libp2p's ``crypto.MarshalPrivateKey``). Creation is atomic: a crash never leaves a
    half-written key behind.
    """
    path = Path(path)
    if path.exists():
        return _load_identity(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    encoded = key_pair.private_key.serialize()
    tmp_path = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(encoded)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        # link() fails if another process created the key meanwhile: keep theirs.
        try:
            os.link(tmp_path, path)
        except FileExistsError:
            return _load_identity(path)
    finally:
        tmp_path.unlink(missing_ok=True)
    logger.info("created a new node identity at %s", path)
    return key_pair


def _load_identity(path: Path) -> KeyPair:
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise IdentityError(f"identity key file {path} is not a regular file")
    if mode & 0o077:
        raise IdentityError(
            f"identity key file {path} is readable by other users (mode {oct(mode & 0o777)}); "
            f"run: chmod 600 {path}"
        )
    encoded = path.read_bytes()
    if not encoded or len(encoded) > _MAX_KEY_FILE_BYTES:
        raise IdentityError(
            f"identity key file {path} has {len(encoded)} bytes, not a libp2p private key; "
            "move it away and a new identity is created on the next start"
        )
    try:
        private_key = deserialize_private_key(encoded)
    except Exception as exc:
        raise IdentityError(
            f"identity key file {path} is not a libp2p private key ({exc}); "
            "move it away and a new identity is created on the next start"
        ) from exc
    if private_key.get_type() != KeyType.Ed25519:
        raise IdentityError(
            f"identity key file {path} holds a {private_key.get_type().name} key; "
            "fl-node uses Ed25519 identities only"
        )
    return KeyPair(private_key, private_key.get_public_key())


def _parse_listen_addr(addr: str) -> multiaddr.Multiaddr:
    try:
        parsed = multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise HostConfigError(
            f"listen address {addr!r} is not a multiaddr ({exc}); use e.g. /ip4/0.0.0.0/tcp/4001"
        ) from exc
    protocols = [p.name for p in parsed.protocols()]
    if len(protocols) != 2 or protocols[0] not in ("ip4", "ip6") or protocols[1] != "tcp":
        raise HostConfigError(
            f"listen address {addr!r} is not supported; fl-node listens on TCP only: "
            "/ip4/<address>/tcp/<port> or /ip6/<address>/tcp/<port>"
        )
    return parsed


def _check_port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a fixed port that another socket listens on.

    py-libp2p listens with SO_REUSEPORT, so a second node on the same port would bind
    without error and the kernel would split inbound connections between the two at random.
    """
    port = int(addr.value_for_protocol("tcp"))
    if port == 0:
        return
    ip4 = _value_or_none(addr, "ip4")
    family, ip = (
        (socket.AF_INET, ip4)
        if ip4 is not None
        else (socket.AF_INET6, addr.value_for_protocol("ip6"))
    )
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise HostConfigError(
                f"cannot listen on {addr}: {exc.strerror or exc}; is another node using port "
                f"{port}? Choose another port or stop it"
            ) from exc


def _value_or_none(addr: multiaddr.Multiaddr, protocol: str) -> str | None:
    try:
        value = addr.value_for_protocol(protocol)
    except Exception:  # multiaddr raises when the protocol is absent
        return None
    return str(value) if value is not None else None


def _announced_addrs(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """The addresses a host gives peers (identify, DHT provider records, the bootstrap line):
    a wildcard listen address (0.0.0.0 or ::) is nothing a peer on another machine can dial,
    so it is replaced by this machine's interface addresses, with its port (by loopback
    where the machine has no other interface)."""
    announced: list[multiaddr.Multiaddr] = []
    for addr in candidates:
        concrete = [addr]
        wildcard = _wildcard_ip(addr)
        if wildcard is not None:
            concrete = [a for a in expand_wildcard_address(addr) if _wildcard_ip(a) is None]
            if not concrete:
                protocol, loopback = ("ip6", "::1") if ":" in wildcard else ("ip4", "127.0.0.1")
                text = str(addr).replace(f"/{protocol}/{wildcard}/", f"/{protocol}/{loopback}/", 1)
                concrete = [multiaddr.Multiaddr(text)]
        for one in concrete:
            if one not in announced:
                announced.append(one)
    return announced


def _wildcard_ip(addr: multiaddr.Multiaddr) -> str | None:
    ip = _value_or_none(addr, "ip4") or _value_or_none(addr, "ip6")
    return ip if ip is not None and ipaddress.ip_address(ip).is_unspecified else None


def _build_host(config: HostConfig) -> IHost:
    key_pair = load_or_create_identity(config.key_path)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    # The swarm's inbound cap is max_connections - min_connections.
    min_connections = config.max_connections - config.max_inbound
    connection_config = ConnectionConfig(
        max_connections=config.max_connections,
        min_connections=min_connections,
        low_watermark=min_connections,
        high_watermark=config.max_connections,
        max_connections_per_peer=1,
        dial_timeout=config.dial_timeout_s,
    )
    install_yamux_patch()
    install_record_cache()
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): ReadingYamux},
        listen_addrs=[_parse_listen_addr(a) for a in config.listen_addrs],
        connection_config=connection_config,
        addrs_factory=_announced_addrs,
    )
    adopt_swarm(
        cast(Swarm, host.get_network()), config.max_pending_handshakes, config.handshake_timeout_s
    )
    return host


@asynccontextmanager
async def open_host(config: HostConfig) -> AsyncIterator[IHost]:
    """A running host listening on ``config.listen_addrs``; stopped cleanly on exit."""
    configure_libp2p_logging(config.libp2p_log_level)
    host = _build_host(config)
    listen = [_parse_listen_addr(a) for a in config.listen_addrs]
    for addr in listen:
        _check_port_free(addr)
    async with host.run(listen_addrs=listen):
        if not host.get_transport_addrs():
            raise HostConfigError(
                f"could not listen on any of {list(config.listen_addrs)}; "
                "is the port in use or the address not on this machine?"
            )
        try:
            yield host
        finally:
            with trio.CancelScope(shield=True):
                await _close_connections(host)
                await host.close()


async def _close_connections(host: IHost) -> None:
    """Close every connection at once: each close sleeps ~0.17 s inside py-libp2p, and the
    swarm closes them one after another."""

    async def close_peer(peer_id: PeerID) -> None:
        try:
            await host.disconnect(peer_id)
        except Exception as exc:  # already gone or broken; it is closed either way
            logger.debug("closing the connection to %s raised %s", peer_id, exc)

    with trio.move_on_after(_CLOSE_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for peer_id in host.get_connected_peers():
                nursery.start_soon(close_peer, peer_id)


def host_multiaddrs(host: IHost) -> list[str]:
    """The host's listen addresses, each ending in ``/p2p/<peer id>``, ready to share."""
    return [str(addr) for addr in host.get_addrs()]


def parse_peer_multiaddr(addr: str) -> PeerInfo:
    """Parse ``/ip4/…/tcp/…/p2p/<peer id>`` into a PeerInfo, with a clear error if malformed."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:
        raise HostConfigError(
            f"peer address {addr!r} is not a full libp2p multiaddr ({exc}); it must end in "
            "/p2p/<peer id>, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…"
        ) from exc


async def connect(host: IHost, addr: str) -> PeerID:
    """Connect to the peer at the full multiaddr ``addr`` and return its peer ID."""
    info = parse_peer_multiaddr(addr)
    if info.peer_id == host.get_id():
        raise HostConfigError(f"peer address {addr!r} is this host's own address")
    await host.connect(info)
    return info.peer_id
