"""Copycat: another worker's update submitted as one's own (re-sealed and signed by the
copier). The pure part is the copy; obtaining the victim's update during the training
phase is the runtime's part (see `node.attacks`)."""

from __future__ import annotations

import numpy as np

from node.attacks._state import NewState, State, check_like


def copycat(base: State, victim_update: State) -> NewState:
    check_like(base, victim_update, "the copied update")
    return {name: np.array(victim_update[name], copy=True) for name in base}
