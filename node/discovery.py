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

py-libp2p 0.8.1 details handled here:
- connected peers are not added to the routing table: the maintenance loop adds them;
- ``KadDHT.find_providers`` answers from the local store alone whenever it holds any record
  for the key, so a node would never learn of providers that appear later:
  :meth:`Discovery.find_providers` always asks the network too and merges.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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
    "BOOTSTRAP_DISCOVERY",
    "Discovery",
    "DiscoveryConfig",
    "open_discovery",
    "task_namespace",
]

logger = logging.getLogger(__name__)

_MIN_ROUND_PAUSE_S = 0.2
_NEARBY_PEERS = 8  # routing-table peers asked directly for provider records
_NAMESPACE_LOOKUP_LIMIT = 64


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
    """Period of the cheap maintenance work: bootstrap and known-peer reconnects."""
    lookup_interval_s: float = 2.0
    """First pause between namespace lookups while under target; doubles while lookups find
    nobody new, up to ``max_lookup_interval_s``."""
    max_lookup_interval_s: float = 60.0
    advertise_interval_s: float = 300.0
    """Re-put our rendezvous records this often (a restarted DHT server forgets them)."""
    query_timeout_s: float = 10.0
    """Bound on one DHT lookup or one dial."""
    inbound_dht_streams: int = 12
    """DHT requests answered at once; more are reset (py-libp2p's cap, which keeps a flood
    from taking the event loop). A bootstrap peer answers every node's rendezvous and
    provider lookups, and a task's nodes all ask at a round's start: it needs more."""
    routing_refresh: bool = False
    """py-libp2p's routing-table refresh: iterative lookups of our own ID and of a random key
    per k-bucket at start and every 10 minutes (its random walk too, when on). Rendezvous and
    provider records go through the bootstrap peers and need none of it, and every lookup
    dials the peers it queries: with it, every node of a hundred-node network ends up
    connected to every other."""

    def __post_init__(self) -> None:
        for addr in self.bootstrap_addrs:
            parse_peer_multiaddr(addr)
        if self.inbound_dht_streams < 1:
            raise HostConfigError(
                f"inbound_dht_streams must be >= 1, got {self.inbound_dht_streams}"
            )
        if self.target_peers < 1:
            raise HostConfigError(f"target_peers must be >= 1, got {self.target_peers}")
        for name in (
            "maintenance_interval_s",
            "lookup_interval_s",
            "max_lookup_interval_s",
            "advertise_interval_s",
            "query_timeout_s",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise HostConfigError(f"{name} must be a positive number, got {value}")
        if self.max_lookup_interval_s < self.lookup_interval_s:
            raise HostConfigError("max_lookup_interval_s must be >= lookup_interval_s")


BOOTSTRAP_DISCOVERY = DiscoveryConfig(dht_server=True, inbound_dht_streams=256)
"""A bootstrap peer's discovery: a DHT server that answers a whole task's lookups at once."""


@dataclass
class _Namespace:
    cid: str
    peers: dict[PeerID, PeerInfo] = field(default_factory=dict)
    advertise_at: float = -math.inf
    looked_up_at: float = -math.inf
    lookup_pause: float = 0.0


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
            enable_random_walk=config.routing_refresh,
        )
        # py-libp2p's handle_stream resets a request when this limiter has no token left
        self.dht._inbound_limiter = trio.CapacityLimiter(config.inbound_dht_streams)
        if not config.routing_refresh:
            self.dht.refresh_routing_table = _no_refresh  # type: ignore[method-assign]
        self._bootstrap = [parse_peer_multiaddr(a) for a in config.bootstrap_addrs]
        self._namespaces: dict[str, _Namespace] = {}
        self._dial_retry_at: dict[PeerID, float] = {}
        self._dial_pause: dict[PeerID, float] = {}
        self._wake = trio.Event()

    # --- namespaces (task rendezvous) ---

    def join(self, namespace: str) -> None:
        """Advertise ``namespace`` and keep ``target_peers`` of its peers connected."""
        if namespace not in self._namespaces:
            self._namespaces[namespace] = _Namespace(
                _namespace_cid(namespace), lookup_pause=self.config.lookup_interval_s
            )
            self._wake.set()

    def namespace_peers(self, namespace: str) -> set[PeerID]:
        """Peers found in ``namespace`` so far (connected or not)."""
        state = self._namespaces.get(namespace)
        return set(state.peers) if state is not None else set()

    def connected_namespace_peers(self, namespace: str) -> set[PeerID]:
        connected = set(self.host.get_connected_peers())
        return self.namespace_peers(namespace) & connected

    def connectivity(self) -> tuple[set[PeerID], int]:
        """(the connected peers, how many of the bootstrap peers are among them): what a
        failed lookup's message reports, since an isolated node finds nothing."""
        connected = set(self.host.get_connected_peers())
        return connected, sum(info.peer_id in connected for info in self._bootstrap)

    # --- content provider records ---

    async def provide(self, cid: str) -> bool:
        """Put a provider record for ``cid`` on the DHT; False if no DHT server took it.

        The record goes where :meth:`find_providers` looks first: our own store, the
        bootstrap peers and the closest connected peers of our routing table (one
        ADD_PROVIDER each). Only when none of them takes it does it run py-libp2p's provide,
        whose iterative lookup queries, and dials, dozens of peers: a hundred nodes doing
        that at once is what saturates an in-process network (``bench.idle_nodes``).
        """
        key = _check_cid(cid)
        with trio.move_on_after(self.config.query_timeout_s):
            if await self._provide_nearby(key):
                return True
            return bool(await self.dht.provide(cid))
        logger.info("providing %s timed out after %.0f s", cid, self.config.query_timeout_s)
        return False

    async def _provide_nearby(self, key: bytes) -> bool:
        store = self.dht.provider_store
        me = self.host.get_id()
        store.add_provider(key, PeerInfo(me, list(self.host.get_addrs())))
        taken = 0

        async def tell(peer_id: PeerID) -> None:
            nonlocal taken
            # A private helper of py-libp2p's ProviderStore: the one ADD_PROVIDER RPC.
            if await store._send_add_provider(peer_id, key):
                taken += 1

        async with trio.open_nursery() as nursery:
            for peer_id in await self._nearby_connected(key):
                nursery.start_soon(tell, peer_id)
        return taken > 0

    async def _nearby_connected(self, key: bytes) -> list[PeerID]:
        """The connected bootstrap peers, then the connected routing-table peers closest to
        ``key``: the peers a provide and a lookup of ``key`` both reach in one round trip.
        With no bootstrap peer connected yet (a node's first seconds), it dials them first:
        a record put nowhere is lost, since a blob's provide is not repeated."""
        if self._bootstrap and not self.connectivity()[1]:
            await self.connect_bootstrap()
        nearby = [i.peer_id for i in self._bootstrap]
        nearby += self.dht.routing_table.find_local_closest_peers(key, _NEARBY_PEERS)
        connected = set(self.host.get_connected_peers())
        me = self.host.get_id()
        return [p for p in dict.fromkeys(nearby) if p in connected and p != me]

    async def find_providers(self, cid: str, limit: int = 20) -> list[PeerInfo]:
        """Providers of ``cid``: our record store, then the network; ourselves excluded.

        The network part asks the connected bootstrap peers (one GET_PROVIDERS each), which
        every :meth:`provide` tells; only when they know no provider, the closest connected
        peers of our routing table, which a provide tells too; and only when those know none
        either, the full iterative Kademlia lookup, which costs dozens of queries and dials.
        """
        key = _check_cid(cid)
        me = self.host.get_id()
        found: dict[PeerID, PeerInfo] = {}

        def merge(infos: list[PeerInfo]) -> None:
            for info in infos:
                known = found.get(info.peer_id)
                if info.peer_id != me and (known is None or (info.addrs and not known.addrs)):
                    found[info.peer_id] = info

        merge(self.dht.provider_store.get_providers(key))
        with trio.move_on_after(self.config.query_timeout_s):
            nearby = await self._nearby_connected(key)
            bootstrap = {info.peer_id for info in self._bootstrap}
            remote = await self._ask_for_providers(key, [p for p in nearby if p in bootstrap])
            if not remote:
                remote = await self._ask_for_providers(
                    key, [p for p in nearby if p not in bootstrap]
                )
            if not remote:
                closest = await self.dht.peer_routing.find_closest_peers_network(key)
                remote = await self._ask_for_providers(key, closest)
            merge(remote)
        return [_with_known_addrs(self.host, info) for info in found.values()][:limit]

    async def locate(self, peer: PeerID) -> PeerInfo | None:
        """Addresses of ``peer`` from the peerstore or the rendezvous records of our
        namespaces (each carries the addresses its member advertised), else a DHT peer lookup
        (the routing table, then the network); None if nobody answers within the query
        timeout. A peer named by a task's chain or gossip may be one we never connected to:
        with ``target_peers`` connections out of many members, most of them are."""
        known = _with_known_addrs(self.host, PeerInfo(peer, []))
        if known.addrs:
            return known
        for state in self._namespaces.values():
            member = state.peers.get(peer)
            if member is not None and member.addrs:
                return member
        with trio.move_on_after(self.config.query_timeout_s):
            known = await self._ask_bootstrap_for(peer)
            if known.addrs:
                return known
            try:
                info = await self.dht.find_peer(peer)
            except Exception as exc:  # a failed lookup is a peer we cannot reach, not an error
                logger.debug("looking up %s failed: %s", peer, exc)
                return None
            return info if info is not None and info.addrs else None
        logger.info("looking up %s timed out after %.0f s", peer, self.config.query_timeout_s)
        return None

    async def _ask_bootstrap_for(self, peer: PeerID) -> PeerInfo:
        """``peer`` with the addresses our connected bootstrap peers know for it: every node
        connects to them, and a FIND_NODE server names the target itself when its peerstore
        holds its addresses. One round trip each, where the iterative lookup walks routing
        tables that, at a hundred nodes, most peers are in nobody's (20 per k-bucket)."""
        connected = set(self.host.get_connected_peers())
        async with trio.open_nursery() as nursery:
            for info in self._bootstrap:
                if info.peer_id in connected and info.peer_id != peer:
                    # A private helper of py-libp2p's PeerRouting: one FIND_NODE to one peer,
                    # whose answer's addresses go to our peerstore.
                    nursery.start_soon(
                        self.dht.peer_routing._query_peer_for_closest, info.peer_id, peer.to_bytes()
                    )
        return _with_known_addrs(self.host, PeerInfo(peer, []))

    async def _ask_for_providers(self, key: bytes, peers: list[PeerID]) -> list[PeerInfo]:
        results: list[PeerInfo] = []
        store = self.dht.provider_store

        async def ask(peer_id: PeerID) -> None:
            with trio.move_on_after(self.config.query_timeout_s):
                # A private helper of py-libp2p's ProviderStore: the one GET_PROVIDERS RPC
                # without the local-store shortcut of find_providers (see module doc).
                providers, _closer = await store._get_providers_from_peer_with_closers(peer_id, key)
                results.extend(providers)

        async with trio.open_nursery() as nursery:
            for peer_id in peers:
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

    async def _connect_with_backoff(self, info: PeerInfo) -> bool:
        """connect(), but a peer that failed is retried only after a doubling pause."""
        now = trio.current_time()
        if now < self._dial_retry_at.get(info.peer_id, -math.inf):
            return False
        if await self.connect(info):
            self._dial_retry_at.pop(info.peer_id, None)
            self._dial_pause.pop(info.peer_id, None)
            return True
        pause = min(
            self._dial_pause.get(info.peer_id, self.config.lookup_interval_s / 2) * 2,
            self.config.max_lookup_interval_s,
        )
        self._dial_pause[info.peer_id] = pause
        # Jittered: nodes started together fail together (a bootstrap evicts handshakes
        # beyond its pending limit) and would otherwise all retry in the same instant again.
        self._dial_retry_at[info.peer_id] = now + pause * random.uniform(0.5, 1.0)
        return False

    async def connect_bootstrap(self) -> int:
        """Connect to every bootstrap peer not yet connected; returns how many are connected."""
        connected = 0
        for info in self._bootstrap:
            if await self._connect_with_backoff(info):
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

    async def maintain_once(self) -> None:
        """One maintenance round: bootstrap and known peers reconnected, lookups when due."""
        await self.connect_bootstrap()
        for peer_id in self.host.get_connected_peers():
            await self._add_to_routing_table(peer_id)
        for namespace in list(self._namespaces):
            await self._maintain_namespace(namespace)

    async def _maintain_namespace(self, namespace: str) -> None:
        state = self._namespaces.get(namespace)
        if state is None:
            return
        config = self.config
        now = trio.current_time()
        if now >= state.advertise_at:
            advertised = await self.provide(state.cid)
            # counted from the attempt's end: a provide may take query_timeout_s, longer than
            # the pause, and a busy node would otherwise provide again in every round
            state.advertise_at = trio.current_time() + (
                config.advertise_interval_s if advertised else state.lookup_pause
            )
        under_target = len(self.connected_namespace_peers(namespace)) < config.target_peers
        # At target, a lookup only refreshes the list of members to reconnect to.
        pause = state.lookup_pause if under_target else config.advertise_interval_s
        if now >= state.looked_up_at + pause:
            found = await self.find_providers(state.cid, limit=_NAMESPACE_LOOKUP_LIMIT)
            new = [info for info in found if info.peer_id not in state.peers]
            state.peers.update((info.peer_id, info) for info in found)
            # Look again soon while it pays off; back off while it finds nobody new.
            if new:
                state.lookup_pause = config.lookup_interval_s
            else:
                state.lookup_pause = min(state.lookup_pause * 2, config.max_lookup_interval_s)
            state.looked_up_at = trio.current_time()
        connected = self.connected_namespace_peers(namespace)
        candidates = [
            info
            for info in sorted(state.peers.values(), key=self._dial_order)
            if info.peer_id not in connected
        ]

        async def dial(info: PeerInfo) -> None:
            if await self._connect_with_backoff(info):
                connected.add(info.peer_id)

        # the missing connections' worth of dials at once: one after another, a few
        # unreachable members (10 s each) kept a new node alone with its bootstrap for minutes
        while candidates and len(connected) < config.target_peers:
            batch = candidates[: config.target_peers - len(connected)]
            del candidates[: len(batch)]
            async with trio.open_nursery() as dials:
                for info in batch:
                    dials.start_soon(dial, info)

    def _dial_order(self, info: PeerInfo) -> bytes:
        # An order of its own for every node: in the order found, every node would dial the
        # namespace's first members, each of which would then hold a connection to everyone.
        return hashlib.sha256(self.host.get_id().to_bytes() + info.peer_id.to_bytes()).digest()

    async def run_maintenance(self) -> None:
        """Keep bootstrap connections, the routing table and namespace peers healthy; forever."""
        while True:
            self._wake = trio.Event()  # before the round: a wake during it starts the next
            try:
                await self.maintain_once()
            except Exception as exc:  # a transient network failure must not end discovery
                logger.warning("discovery maintenance round failed: %s", exc)
            await trio.sleep(_MIN_ROUND_PAUSE_S)  # connection churn must not spin the loop
            with trio.move_on_after(self.config.maintenance_interval_s):
                await self._wake.wait()


class _WakeOnConnectionChange(INotifee):
    """Runs a maintenance round right after a connection opens or closes, instead of up
    to ``maintenance_interval_s`` later."""

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


async def _no_refresh() -> None:
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
