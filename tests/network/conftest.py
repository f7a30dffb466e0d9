"""Shared fixtures for the network tests: real hosts on 127.0.0.1, closed at teardown."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from node.discovery import BOOTSTRAP_DISCOVERY, Discovery, DiscoveryConfig, open_discovery
from node.gossip import GossipConfig, GossipNode, open_pubsub
from node.host import HostConfig, host_multiaddrs, open_host

ECHO_PROTOCOL = TProtocol("/fl-test/echo/1.0.0")
# Every wait in these tests is a hang guard, never a timing assertion.
HANG_GUARD_S = 60.0


async def echo_handler(stream: INetStream) -> None:
    with trio.move_on_after(HANG_GUARD_S):
        data = await stream.read(1024)
        await stream.write(data)
    await stream.close()


async def echo_roundtrip(client: IHost, server: IHost, payload: bytes = b"ping") -> bytes:
    """Open an echo stream from client to server and return what came back."""
    with trio.fail_after(HANG_GUARD_S):
        stream = await client.new_stream(server.get_id(), [ECHO_PROTOCOL])
        await stream.write(payload)
        reply = await stream.read(len(payload))
        await stream.close()
    return bytes(reply)


async def wait_until(predicate: object, what: str, timeout: float = HANG_GUARD_S) -> None:
    """Poll ``predicate()`` until true; fail naming ``what`` if the hang guard fires."""
    assert callable(predicate)
    with trio.move_on_after(timeout) as scope:
        while not predicate():
            await trio.sleep(0.05)
    if scope.cancelled_caught:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Peer:
    host: IHost
    discovery: Discovery | None = None
    gossip: GossipNode | None = None


class Network:
    """Builds hosts (with discovery and gossip when asked) inside one exit stack."""

    def __init__(self, stack: AsyncExitStack, key_dir: Path) -> None:
        self.stack = stack
        self.key_dir = key_dir
        self.count = 0

    async def host(self, echo: bool = True) -> IHost:
        self.count += 1
        config = HostConfig(key_path=self.key_dir / f"peer{self.count}.key")
        host = await self.stack.enter_async_context(open_host(config))
        if echo:
            host.set_stream_handler(ECHO_PROTOCOL, echo_handler)
        return host

    async def bootstrap(self, config: DiscoveryConfig = BOOTSTRAP_DISCOVERY) -> tuple[Peer, str]:
        host = await self.host()
        discovery = await self.stack.enter_async_context(open_discovery(host, config))
        return Peer(host, discovery), host_multiaddrs(host)[0]

    async def peer(
        self,
        bootstrap_addr: str,
        namespaces: tuple[str, ...] = (),
        gossip: GossipConfig | None = None,
        discovery: DiscoveryConfig | None = None,
    ) -> Peer:
        host = await self.host()
        config = discovery or DiscoveryConfig(bootstrap_addrs=(bootstrap_addr,))
        found = await self.stack.enter_async_context(open_discovery(host, config, namespaces))
        node = await self.stack.enter_async_context(open_pubsub(host, gossip or GossipConfig()))
        return Peer(host, found, node)


@asynccontextmanager
async def open_network(key_dir: Path) -> AsyncIterator[Network]:
    """Hosts built through the Network live until the block exits.

    A context manager, not a fixture: pytest-trio runs fixtures in their own tasks, and a
    host's nurseries must be entered and exited by the same task.
    """
    async with AsyncExitStack() as stack:
        yield Network(stack, key_dir)


def soak_cycles() -> int:
    return int(os.environ.get("FL_SOAK_CYCLES", "300"))
