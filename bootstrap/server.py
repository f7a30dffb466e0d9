"""The bootstrap peer: a Kademlia DHT server that other peers dial first.

It holds no task role. Peers learn the network from its routing table and put their task
rendezvous and content provider records on it (node.discovery), which is how they find
each other.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import TextIO

import trio

from bootstrap.config import BootstrapConfig
from node.discovery import BOOTSTRAP_DISCOVERY, open_discovery
from node.host import host_multiaddrs, open_host

__all__ = ["run_bootstrap"]

logger = logging.getLogger(__name__)


async def run_bootstrap(
    config: BootstrapConfig,
    out: TextIO = sys.stdout,
    stop: trio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set), printing our full multiaddrs first."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_host(config.host) as host:
            async with open_discovery(host, BOOTSTRAP_DISCOVERY):
                for addr in host_multiaddrs(host):
                    print(addr, file=out, flush=True)
                logger.info("bootstrap peer %s running", host.get_id())
                async with trio.open_nursery() as nursery:
                    if stop is not None:

                        async def stop_on_event() -> None:
                            await stop.wait()
                            nursery.cancel_scope.cancel()

                        nursery.start_soon(stop_on_event)
                    async for signum in signals:
                        logger.info("received %s, stopping", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        break
