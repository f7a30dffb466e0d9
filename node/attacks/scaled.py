"""Model replacement (Bagdasaryan et al. 2020): boost the delta so that, averaged with the
others, the attacker's model replaces the global one: base + gamma * (update - base), with
gamma about the number of workers averaged (or n / learning rate of the server)."""

from __future__ import annotations

from node.attacks._state import NewState, State, delta_of, with_delta


def scaled(base: State, update: State, scale: float) -> NewState:
    delta = delta_of(base, update)
    return with_delta(base, {name: scale * d for name, d in delta.items()}, update)
