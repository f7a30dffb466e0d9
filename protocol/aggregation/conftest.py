"""Fixtures shared by the aggregation rules' tests."""

from __future__ import annotations

import pytest
import torch

from protocol.aggregation import StateDict

HONEST_CENTER = 1.0


def make_state(weight: list[float], bias: float, counter: int = 0) -> dict[str, torch.Tensor]:
    return {
        "layer.weight": torch.tensor(weight, dtype=torch.float32),
        "layer.bias": torch.tensor([bias], dtype=torch.float32),
        "bn.num_batches_tracked": torch.tensor(counter, dtype=torch.int64),
    }


@pytest.fixture
def byzantine_states() -> list[StateDict]:
    """Six honest updates near HONEST_CENTER and one huge outlier (index 3)."""
    generator = torch.Generator().manual_seed(7)
    states: list[StateDict] = []
    for _ in range(6):
        noise = torch.randn(4, generator=generator) * 0.01
        states.append(
            {"w": torch.full((4,), HONEST_CENTER) + noise, "b": torch.full((2,), HONEST_CENTER)}
        )
    states.insert(3, {"w": torch.full((4,), 1e6), "b": torch.full((2,), -1e6)})
    return states


def assert_near_honest(state: StateDict, tolerance: float = 0.05) -> None:
    for name, tensor in state.items():
        assert torch.allclose(tensor, torch.full_like(tensor, HONEST_CENTER), atol=tolerance), name
