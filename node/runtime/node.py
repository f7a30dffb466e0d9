"""One whole node: keys, chain client, libp2p host, discovery, gossip, block store and
exchange around a round Driver; `run_node` runs it until its task is over or it is stopped."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from web3 import Web3

from node.blocks import BlockExchange, BlockStore, ExchangeLimits
from node.blocks.bitswap import Bitswap
from node.chain import ChainClient, EventFollower
from node.config import NodeConfig
from node.discovery import Discovery, DiscoveryConfig, open_discovery
from node.gossip import open_pubsub
from node.host import HostConfig, open_host
from node.runtime.chainside import ChainAccess, ChainFollower
from node.runtime.driver import BLOCKS_DIR, CURSOR_FILE, NodeStatus, start_driver
from node.runtime.keys import load_or_create_keys
from node.status import TaskWatch, run_status_page

logger = logging.getLogger("fl_node.runtime")

# A provider silent for seconds is dropped, not after a minute: another member holds the
# blob too (validators fetched every update), and a round has deadlines. The per-request
# limit stays at its default: under training load one 512 KiB request can take > 12 s.
EXCHANGE_LIMITS = ExchangeLimits(read_timeout_s=4.0)
LINGER_S = 30.0  # after its task, a node serves its blobs this long for peers finishing


class NodeConfigError(ValueError):
    """The node cannot start with this config (the text says what to change)."""


def connect_chain(config: NodeConfig) -> Web3:
    """A web3 connection to `[chain] rpc_url` (the embedded chain needs an injected w3)."""
    if config.chain.embedded:
        raise NodeConfigError(
            f"{config.path}: [chain] rpc_url = \"embedded\" works only inside one process "
            "(fl-node localnet --in-process); give a JSON-RPC URL such as http://127.0.0.1:8545"
        )
    url = config.chain.rpc_url
    provider = (
        Web3.WebsocketProvider(url) if url.startswith("ws")  # type: ignore[attr-defined]
        else Web3.HTTPProvider(url)
    )
    w3 = Web3(provider)
    if not w3.is_connected():
        raise NodeConfigError(f"{config.path}: [chain] rpc_url {url} does not answer; is the chain up?")
    return w3


async def run_node(
    config: NodeConfig,
    *,
    w3: Web3 | None = None,
    chain_lock: threading.Lock | None = None,
    name: str | None = None,
    status_out: list[NodeStatus] | None = None,
    linger: Callable[[], Awaitable[None]] | None = None,
) -> NodeStatus:
    """Run one node until its task is over for it; returns what it did.

    `w3` and `chain_lock` let several nodes share one embedded chain in a process;
    `status_out` receives the live status object as soon as the node exists; `linger`
    is awaited after the task is over, while the node still serves its blobs to peers
    that are finishing (the last round's updates).
    """
    data_dir = config.node.data_dir
    keys = load_or_create_keys(data_dir, config.network.key_file, config.chain.private_key_file)
    w3 = w3 if w3 is not None else connect_chain(config)
    client = ChainClient(
        w3, keys.chain_key, registry=config.chain.registry,
        validator_stake=config.node.stake_wei or None,
    )
    chain = ChainAccess(client, chain_lock)
    host_config = HostConfig(key_path=config.network.key_file, listen_addrs=config.network.listen)
    discovery_config = DiscoveryConfig(
        bootstrap_addrs=config.network.bootstrap, maintenance_interval_s=1.0
    )
    with BlockStore(Path(data_dir) / BLOCKS_DIR) as store:
        async with open_host(host_config) as host:
            async with open_discovery(host, discovery_config) as discovery:
                await discovery.connect_bootstrap()
                async with open_pubsub(host) as gossip_node:
                    exchange = BlockExchange(
                        host, store, find_providers=discovery.find_providers,
                        provide=_provide(discovery), limits=EXCHANGE_LIMITS,
                    )
                    # IPFS peers (Kubo, Helia) fetch the same blocks over bitswap
                    async with exchange, Bitswap(host, store):
                        status = NodeStatus(
                            name or f"{config.role}@{keys.address[:10]}", config.role, keys.address
                        )
                        if status_out is not None:
                            status_out.append(status)
                        cursor = EventFollower(client.w3, Path(data_dir) / CURSOR_FILE)
                        follower = ChainFollower(client, cursor, keys.address_bytes)
                        async with trio.open_nursery() as page:
                            if config.node.status_listen:
                                watch = TaskWatch(status, client, follower.history)
                                follower.subscribe(watch.feed)
                                page.start_soon(run_status_page, config.node.status_listen, watch)
                            driver, first = await start_driver(
                                config, keys, chain, follower, store, exchange, discovery,
                                gossip_node, status,
                            )
                            await driver.run(first)
                            await (linger or _linger_default)()
                            page.cancel_scope.cancel()
                        return status


async def _linger_default() -> None:
    await trio.sleep(LINGER_S)


def _provide(discovery: Discovery) -> Callable[[str], Awaitable[None]]:
    async def provide(cid: str) -> None:
        await discovery.provide(cid)

    return provide


async def run_node_until_signal(config: NodeConfig) -> NodeStatus | None:
    """`fl-node run`: the node, stopped cleanly on SIGINT/SIGTERM (its state is on disk)."""
    result: list[NodeStatus] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def node() -> None:
                result.append(await run_node(config))
                nursery.cancel_scope.cancel()

            nursery.start_soon(node)
            async for signum in signals:
                logger.info("received %s; stopping (state is saved)", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    return result[0] if result else None
