"""Following contract events from a persisted cursor, so a restarted node misses nothing.

The cursor records, per followed contract address, the next block to read. ``poll()`` returns
the decoded events of every followed address from there up to the chain head (minus
``confirmations``), sorted by (block, log index), and remembers how far it read; ``commit()``
writes that position to disk atomically (temporary file, fsync, rename). Delivery is
at-least-once: events handled but not committed before a crash come again after restart,
so consumers must be idempotent.

`blocks_of` groups decoded events by block with the block's timestamp: a `ChainBlock` is what
every consumer of the node's one follower (the round machine, the status page) receives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3

from node.chain.artifacts import decode_log
from node.chain.errors import ChainError
from node.chain.types import ChainEvent

CURSOR_VERSION = 1


class EventFollower:
    def __init__(
        self,
        w3: Web3,
        cursor_path: Path | str,
        *,
        confirmations: int = 0,
        max_block_span: int = 2_000,
    ) -> None:
        self.w3 = w3
        self.cursor_path = Path(cursor_path)
        self.confirmations = confirmations
        self.max_block_span = max_block_span
        self.chain_id: int = w3.eth.chain_id
        self._next_block: dict[str, int] = {}
        self._pending: dict[str, int] | None = None
        self._load()

    # ------------------------------------------------------------------ cursor file

    def _load(self) -> None:
        if not self.cursor_path.exists():
            return
        try:
            raw = json.loads(self.cursor_path.read_text(encoding="utf-8"))
            if raw.get("version") != CURSOR_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {CURSOR_VERSION}")
            chain_id = int(raw["chain_id"])
            next_block: dict[str, int] = {
                to_checksum_address(a): int(b) for a, b in raw["next_block"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ChainError(
                f"event cursor {self.cursor_path} is unreadable ({exc}); delete it to re-read "
                "events from each contract's start block"
            ) from exc
        if chain_id != self.chain_id:
            raise ChainError(
                f"event cursor {self.cursor_path} belongs to chain {chain_id}, connected to "
                f"{self.chain_id}; use another data directory or delete the cursor"
            )
        self._next_block = next_block

    def commit(self) -> None:
        """Persist the position reached by the last poll() (atomic: tmp + fsync + rename)."""
        if self._pending is not None:
            self._next_block = self._pending
            self._pending = None
        payload = json.dumps(
            {"version": CURSOR_VERSION, "chain_id": self.chain_id, "next_block": self._next_block},
            sort_keys=True,
        )
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.cursor_path)

    # ------------------------------------------------------------------ following

    def follow(self, address: str, from_block: int = 0) -> None:
        """Follow `address` from `from_block` (its deployment block, say); a no-op if the
        cursor already follows it, so restarts resume where they were."""
        address = to_checksum_address(address)
        if address not in self._next_block:
            self._next_block[address] = from_block
            if self._pending is not None:
                self._pending.setdefault(address, from_block)

    @property
    def followed(self) -> dict[str, int]:
        return dict(self._next_block)

    def positions(self) -> dict[str, int]:
        """Per followed address, the next block poll() reads (the last poll's end, committed
        or not)."""
        return dict(self._pending if self._pending is not None else self._next_block)

    def poll(self) -> list[ChainEvent]:
        """Events since the committed (or last polled) position, oldest first."""
        head = int(self.w3.eth.block_number) - self.confirmations
        position = self.positions()
        events: list[ChainEvent] = []
        for start in sorted(set(position.values())):
            addresses = [a for a, b in position.items() if b == start]
            events.extend(self.read(addresses, start, head))
        for address in position:
            position[address] = max(position[address], head + 1)
        self._pending = position
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return events

    def read(self, addresses: list[str], from_block: int, to_block: int) -> list[ChainEvent]:
        """The decoded events of `addresses` in blocks [from_block, to_block], in spans of at
        most `max_block_span` blocks (RPC providers cap a query's range); the cursor is not
        touched."""
        events: list[ChainEvent] = []
        block = from_block
        while block <= to_block:
            end = min(to_block, block + self.max_block_span - 1)
            events.extend(self._get_logs(addresses, block, end))
            block = end + 1
        return events

    def block_timestamp(self, block: int) -> int:
        """A block's timestamp (logs carry only its number)."""
        return int(self.w3.eth.get_block(block)["timestamp"])

    def _get_logs(self, addresses: list[str], from_block: int, to_block: int) -> list[ChainEvent]:
        logs: list[Any] = self.w3.eth.get_logs(
            {"address": addresses, "fromBlock": from_block, "toBlock": to_block}  # type: ignore[typeddict-item]
        )
        found = []
        for log in logs:
            decoded = decode_log([bytes(t) for t in log["topics"]], bytes(log["data"]))
            if decoded is None:
                continue
            name, args = decoded
            found.append(
                ChainEvent(
                    name=name,
                    address=to_checksum_address(log["address"]),
                    args=args,
                    block_number=int(log["blockNumber"]),
                    log_index=int(log["logIndex"]),
                    tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                )
            )
        return found


@dataclass(frozen=True)
class ChainBlock:
    """One block's decoded events of the followed contracts, oldest first, with the block's
    timestamp (deadlines pass on block time, and logs carry block numbers only)."""

    number: int
    timestamp: int
    events: tuple[ChainEvent, ...]


def blocks_of(events: Iterable[ChainEvent], timestamp: Callable[[int], int]) -> list[ChainBlock]:
    """`events` (in chain order) grouped by block; `timestamp(n)` is read once per block."""
    grouped: dict[int, list[ChainEvent]] = {}
    for event in events:
        grouped.setdefault(event.block_number, []).append(event)
    return [ChainBlock(n, timestamp(n), tuple(found)) for n, found in grouped.items()]
