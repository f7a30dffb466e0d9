"""Strikes and bans for peers that misuse this node's block server.

A strike is a misuse that takes a serving slot without giving the server work: a stream
whose request did not arrive in full by its deadline, or a response the peer would not
read. ``strikes_to_ban`` strikes, each within ``ban_s`` of the one before, ban the peer
for ``ban_s`` seconds. The table is bounded: past ``max_peers`` entries the peer struck
longest ago is forgotten first, so an attacker cycling identities can at worst push old,
unbanned strangers out of it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from libp2p.peer.id import ID as PeerID

__all__ = ["PeerStanding"]


@dataclass
class _Record:
    strikes: int = 0
    last_strike: float = -math.inf
    banned_until: float = -math.inf


class PeerStanding:
    """Per-peer strike counts and ban deadlines; times are the caller's clock (seconds)."""

    def __init__(self, strikes_to_ban: int, ban_s: float, max_peers: int = 4096) -> None:
        if strikes_to_ban < 1 or ban_s <= 0 or max_peers < 1:
            raise ValueError(
                f"strikes_to_ban ({strikes_to_ban}) and max_peers ({max_peers}) must be >= 1 "
                f"and ban_s ({ban_s}) > 0"
            )
        self.strikes_to_ban = strikes_to_ban
        self.ban_s = ban_s
        self.max_peers = max_peers
        self._records: OrderedDict[PeerID, _Record] = OrderedDict()

    def strike(self, peer: PeerID, now: float) -> bool:
        """Count one strike against ``peer``; True when this strike bans it."""
        record = self._records.pop(peer, None) or _Record()
        if now - record.last_strike > self.ban_s:  # an old misuse is forgiven
            record.strikes = 0
        record.strikes += 1
        record.last_strike = now
        banned = record.strikes >= self.strikes_to_ban
        if banned:
            record.banned_until = now + self.ban_s
            record.strikes = 0
        self._records[peer] = record  # most recently struck last
        while len(self._records) > self.max_peers:
            self._records.popitem(last=False)
        return banned

    def banned(self, peer: PeerID, now: float) -> bool:
        record = self._records.get(peer)
        return record is not None and now < record.banned_until

    def strikes(self, peer: PeerID) -> int:
        """Strikes counted since ``peer``'s last ban (0 for an unknown peer)."""
        record = self._records.get(peer)
        return record.strikes if record is not None else 0

    def __len__(self) -> int:
        return len(self._records)
