"""Sign flipping: submit the honest update's delta reversed, base - scale * (update - base)."""

from __future__ import annotations

from node.attacks._state import NewState, State, delta_of, with_delta


def sign_flip(base: State, update: State, scale: float = 1.0) -> NewState:
    delta = delta_of(base, update)
    return with_delta(base, {name: -scale * d for name, d in delta.items()}, update)
