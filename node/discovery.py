"""Peer discovery: bootstrap peers, a Kademlia DHT, task rendezvous and provider records.

How a node that knows only a bootstrap multiaddr finds the other peers of its task:
the node joins the task's *namespace* (``/fl/<chainId>/<task>``) by putting a DHT provider
record for the namespace's CID, and looks up the other providers of that CID. Whoever joins
later finds everyone who joined earlier and connects to them, so every pair ends up
connected (up to ``target_peers``); gossipsub then builds its mesh over those connections.

Why DHT provider records rather than a rendezvous server: the DHT is needed anyway for the
block exchange's provider records, every DHT server (bootstrap or node) can answer the
lookup, so no single rendezvous point must stay up, and the records carry the peers'
addresses. Gossipsub's peer exchange would only work once a first connection exists.

py-libp2p details handled here (see /work/shared/LIBP2P-NOTES.md, pitfall 9):
- connected peers are not added to the routing table: the maintenance loop adds them;
- ``KadDHT.find_providers`` answers from the local store alone whenever it holds any record
  for the key, so a node would never learn of providers that appear later:
  :meth:`Discovery.find_providers` always asks the network too and merges.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from node.host import HostConfigError, parse_peer_multiaddr
from protocol.cid import cid_of, parse_cid
from protocol.errors import CIDError
from protocol.messages import topic_name

__all__ = [
    "Discovery",
    "DiscoveryConfig",
    "open_discovery",
    "task_namespace",
]

logger = logging.getLogger(__name__)

_MIN_ROUND_PAUSE_S = 0.2


def task_namespace(chain_id: int, task: bytes) -> str:
    """The rendezvous namespace of a task: its topic names without the ``/<kind>`` suffix."""
    return topic_name(chain_id, task, "models").rsplit("/", 1)[0]


def _namespace_cid(namespace: str) -> str:
    # The CID of the namespace text: a DHT key nobody can confuse with a model blob's CID.
    return cid_of(f"fl-node rendezvous {namespace}".encode())


@dataclass(frozen=True)
class DiscoveryConfig:
    bootstrap_addrs: tuple[str, ...] = ()
    """Full multiaddrs (ending in /p2p/<peer id>) of bootstrap peers."""
    dht_server: bool = True
    """Answer DHT queries and store records (bootstrap peers must; small networks should)."""
    target_peers: int = 8
    """Connections to peers of each joined namespace that maintenance keeps open."""
    maintenance_interval_s: float = 2.0
    """Pause between maintenance rounds while a namespace has fewer than target_peers."""
    settled_interval_s: float = 30.0
    """Pause between maintenance rounds once every namespace has target_peers."""
    advertise_interval_s: float = 300.0
    """Re-put our rendezvous records this often (a restarted DHT server forgets them)."""
    query_timeout_s: float = 10.0
    """Bound on one DHT lookup or one dial."""
    random_walk: bool = False
    """py-libp2p's random-walk routing-table refresh; rendezvous does not need it."""

    def __post_init__(self) -> None:
        for addr in self.bootstrap_addrs:
            parse_peer_multiaddr(addr)
        if self.target_peers < 1:
            raise HostConfigError(f"target_peers must be >= 1, got {self.target_peers}")
        for name in (
            "maintenance_interval_s",
            "settled_interval_s",
            "advertise_interval_s",
            "query_timeout_s",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise HostConfigError(f"{name} must be a positive number, got {value}")


class Discovery:
    """Bootstrap connections, DHT routing, namespace rendezvous and content provider records.

    Use :func:`open_discovery`; it runs the DHT service and the maintenance loop.
    """

    def __init__(self, host: IHost, config: DiscoveryConfig) -> None:
        self.host = host
        self.config = config
        self.dht = KadDHT(
            host,
            DHTMode.SERVER if config.dht_server else DHTMode.CLIENT,
            enable_random_walk=config.random_walk,
        )
        self._bootstrap = [parse_peer_multiaddr(a) for a in config.bootstrap_addrs]
        self._namespaces: dict[str, float] = {}  # namespace -> when we last advertised it
        self._namespace_peers: dict[str, set[PeerID]] = {}
        self._wake = trio.Event()

    # --- namespaces (task rendezvous) ---

    def join(self, namespace: str) -> None:
        """Advertise ``namespace`` and keep ``target_peers`` of its peers connected."""
        if namespace not in self._namespaces:
            self._namespaces[namespace] = -math.inf
            self._namespace_peers[namespace] = set()
            self._wake.set()

    def leave(self, namespace: str) -> None:
        """Stop maintaining ``namespace`` (its records expire on the DHT servers)."""
        self._namespaces.pop(namespace, None)
        self._namespace_peers.pop(namespace, None)

    def namespace_peers(self, namespace: str) -> set[PeerID]:
        """Peers found in ``namespace`` so far (connected or not)."""
        return set(self._namespace_peers.get(namespace, ()))

    def connected_namespace_peers(self, namespace: str) -> set[PeerID]:
        connected = set(self.host.get_connected_peers())
        return self.namespace_peers(namespace) & connected

    async def find_namespace_peers(self, namespace: str) -> list[PeerInfo]:
        """Look the namespace's peers up on the DHT (our own peer excluded)."""
        return await self.find_providers(_namespace_cid(namespace))

    # --- content provider records ---

    async def provide(self, cid: str) -> bool:
        """Put a provider record for ``cid`` on the DHT; False if no DHT server took it."""
        _check_cid(cid)
        with trio.move_on_after(self.config.query_timeout_s):
            return bool(await self.dht.provide(cid))
        logger.info("providing %s timed out after %.0f s", cid, self.config.query_timeout_s)
        return False

    async def find_providers(self, cid: str, limit: int = 20) -> list[PeerInfo]:
        """Providers of ``cid`` from the local record store and the network, ourselves excluded."""
        key = _check_cid(cid)
        found: dict[PeerID, PeerInfo] = {}
        for info in self.dht.provider_store.get_providers(key):
            found[info.peer_id] = info
        with trio.move_on_after(self.config.query_timeout_s):
            for info in await self._network_providers(key):
                known = found.get(info.peer_id)
                if known is None or (info.addrs and not known.addrs):
                    found[info.peer_id] = info
        found.pop(self.host.get_id(), None)
        return [_with_known_addrs(self.host, info) for info in found.values()][:limit]

    async def _network_providers(self, key: bytes) -> list[PeerInfo]:
        closest = await self.dht.peer_routing.find_closest_peers_network(key)
        results: list[PeerInfo] = []
        store = self.dht.provider_store

        async def ask(peer_id: PeerID) -> None:
            with trio.move_on_after(self.config.query_timeout_s):
                # A private helper of py-libp2p's ProviderStore: the one GET_PROVIDERS RPC
                # without the local-store shortcut of find_providers (see module doc).
                providers, _closer = await store._get_providers_from_peer_with_closers(peer_id, key)
                results.extend(providers)

        async with trio.open_nursery() as nursery:
            for peer_id in closest:
                if peer_id != self.host.get_id():
                    nursery.start_soon(ask, peer_id)
        return results

    # --- connections ---

    async def connect(self, info: PeerInfo) -> bool:
        """Dial ``info`` within the query timeout; False (logged) if it cannot be reached."""
        if info.peer_id == self.host.get_id():
            return False
        if self.host.get_network().get_connections(info.peer_id):
            return True
        if not info.addrs and not self.host.get_peerstore().addrs(info.peer_id):
            return False
        try:
            with trio.fail_after(self.config.query_timeout_s):
                await self.host.connect(info)
        except (trio.TooSlowError, Exception) as exc:
            logger.debug("could not connect to %s: %s", info.peer_id, exc)
            return False
        await self._add_to_routing_table(info.peer_id)
        return True

    async def connect_bootstrap(self) -> int:
        """Connect to every bootstrap peer not yet connected; returns how many are connected."""
        connected = 0
        for info in self._bootstrap:
            if await self.connect(info):
                connected += 1
        return connected

    async def _add_to_routing_table(self, peer_id: PeerID) -> None:
        if self.dht.routing_table.peer_in_table(peer_id):
            return
        try:
            await self.dht.add_peer(peer_id)
        except Exception as exc:  # a peer without addresses yet; the next round retries
            logger.debug("routing table refused %s: %s", peer_id, exc)

    # --- maintenance ---

    def wake(self) -> None:
        """Start the next maintenance round now."""
        self._wake.set()

    async def maintain_once(self) -> bool:
        """One maintenance round; True when every joined namespace has ``target_peers``."""
        await self.connect_bootstrap()
        for peer_id in self.host.get_connected_peers():
            await self._add_to_routing_table(peer_id)
        settled = True
        now = trio.current_time()
        for namespace in list(self._namespaces):
            if now - self._namespaces[namespace] >= self.config.advertise_interval_s:
                if await self.provide(_namespace_cid(namespace)):
                    self._namespaces[namespace] = now
                else:
                    settled = False
            if not await self._fill_namespace(namespace):
                settled = False
        return settled

    async def _fill_namespace(self, namespace: str) -> bool:
        peers = self._namespace_peers.get(namespace)
        if peers is None:
            return True
        connected = self.connected_namespace_peers(namespace)
        if len(connected) >= self.config.target_peers:
            return True
        for info in await self.find_namespace_peers(namespace):
            if namespace not in self._namespace_peers:
                return True  # left meanwhile
            peers.add(info.peer_id)
            if info.peer_id in connected:
                continue
            if len(connected) >= self.config.target_peers:
                break
            if await self.connect(info):
                connected.add(info.peer_id)
        return len(connected) >= self.config.target_peers

    async def run_maintenance(self) -> None:
        """Keep bootstrap connections, the routing table and namespace peers healthy; forever."""
        while True:
            self._wake = trio.Event()  # before the round: a wake during it starts the next
            try:
                settled = await self.maintain_once()
            except Exception as exc:  # a transient network failure must not end discovery
                logger.warning("discovery maintenance round failed: %s", exc)
                settled = False
            interval = (
                self.config.settled_interval_s if settled else self.config.maintenance_interval_s
            )
            await trio.sleep(_MIN_ROUND_PAUSE_S)  # connection churn must not spin the loop
            with trio.move_on_after(interval):
                await self._wake.wait()


class _WakeOnConnectionChange(INotifee):
    """Runs a maintenance round right after a connection opens or closes, instead of up
    to ``settled_interval_s`` later."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.discovery.wake()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.discovery.wake()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


def _check_cid(cid: str) -> bytes:
    try:
        return bytes(parse_cid(cid).digest)
    except CIDError as exc:
        raise CIDError(f"cannot use {cid!r} as a DHT key: {exc}") from exc


def _with_known_addrs(host: IHost, info: PeerInfo) -> PeerInfo:
    if info.addrs:
        return info
    try:
        return PeerInfo(info.peer_id, list(host.get_peerstore().addrs(info.peer_id)))
    except Exception:  # unknown peer: no addresses to add
        return info


@asynccontextmanager
async def open_discovery(
    host: IHost, config: DiscoveryConfig, namespaces: Sequence[str] = ()
) -> AsyncIterator[Discovery]:
    """Run the DHT and the maintenance loop on ``host`` until the block exits."""
    discovery = Discovery(host, config)
    for namespace in namespaces:
        discovery.join(namespace)
    dht_service: Any = discovery.dht
    notifee = _WakeOnConnectionChange(discovery)
    network = host.get_network()
    async with background_trio_service(dht_service):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discovery.run_maintenance)
            network.register_notifee(notifee)
            try:
                yield discovery
            finally:
                network.remove_notifee(notifee)
                nursery.cancel_scope.cancel()
