"""The colluders' side channel: attackers in one process pool their honestly trained
updates, as ALIE and IPM assume (Baruch et al. 2019 estimate the benign mean and std from
the m colluders' own benign updates). Each colluder posts its update and waits, bounded,
for the others of the same round (same base, same attack); all then see the same pool.

In-process only (the bench, `fl-node localnet --in-process`): workers in separate
processes see only their own update, wait `wait_s` and go on with that one.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np

from node.attacks._state import State

COLLUSION_WAIT_S = 120.0
"""How long a colluder waits for the others' updates: inside the localnet's training
phase (180 s), enough for colluders that train at the same time on a loaded machine."""


def fingerprint(state: State) -> bytes:
    """SHA-256 over a state's names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        array = np.ascontiguousarray(state[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.digest()


@dataclass
class _Pool:
    updates: dict[bytes, State] = field(default_factory=dict)  # fingerprint -> update
    waiting: int = 0


class SideChannel:
    """Pools keyed by (attack, base): thread-safe; a pool is dropped once its last
    waiter has left, so a later round (or task) with the same base starts afresh."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pools: dict[tuple[str, bytes], _Pool] = {}

    def pool(
        self, attack: str, base: State, update: State, colluders: int, wait_s: float = COLLUSION_WAIT_S
    ) -> list[State]:
        """Every update posted for (attack, base) once `colluders` are there or `wait_s`
        has passed, ours included, in fingerprint order (the same list for everyone)."""
        key = (attack, fingerprint(base))
        with self._changed:
            pool = self._pools.setdefault(key, _Pool())
            pool.updates[fingerprint(update)] = update
            pool.waiting += 1
            self._changed.notify_all()
            self._changed.wait_for(lambda: len(pool.updates) >= colluders, timeout=wait_s)
            pooled = [pool.updates[f] for f in sorted(pool.updates)]
            pool.waiting -= 1
            if pool.waiting == 0 and self._pools.get(key) is pool:
                del self._pools[key]
            return pooled


SIDE_CHANNEL = SideChannel()
"""The process's side channel: every colluding worker of this process uses it."""
