"""Stream and peer helpers shared by the block protocols (the block exchange and bitswap)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

__all__ = ["maybe_await", "peer_info", "read_first_byte", "reset_quietly", "reset_shielded"]

logger = logging.getLogger(__name__)


def peer_info(provider: PeerInfo | str) -> PeerInfo:
    """``provider`` as a PeerInfo; a string must be a full multiaddr ending in /p2p/<peer id>."""
    if isinstance(provider, PeerInfo):
        return provider
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(provider))
    except Exception as exc:
        raise ValueError(
            f"provider {provider!r} is not a full libp2p multiaddr ending in /p2p/<peer id>: {exc}"
        ) from exc


async def maybe_await(value: Any) -> Any:
    """``value``, awaited first when it is awaitable (callbacks may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


async def read_first_byte(stream: INetStream) -> int | None:
    """The next byte, or None when the peer has closed its side (no timeout: callers bound it)."""
    try:
        data = await stream.read(1)
    except StreamEOF:
        return None
    return data[0] if data else None


async def reset_shielded(stream: INetStream) -> None:
    """Reset ``stream`` even while being cancelled, bounded in time."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await reset_quietly(stream)


async def reset_quietly(stream: INetStream) -> None:
    """Reset ``stream``; a connection that is already gone is not an error here."""
    try:
        await stream.reset()
    except Exception as exc:
        logger.debug("resetting a block stream raised %r", exc)
