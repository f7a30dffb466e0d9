"""Shared checks and helpers for the aggregation rules (not part of the public API)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from protocol.errors import ModelValidationError, ProtocolError
from protocol.limits import MAX_SAMPLES_PER_WORKER

StateDict = Mapping[str, torch.Tensor]

# Integer tensors (e.g. BatchNorm's num_batches_tracked) are aggregated like floats in
# float64 and rounded back to their dtype; float64 holds every integer below 2**53 exactly.
# Bool and complex tensors have no sensible average and are refused.
_INTEGER_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


class AggregationError(ProtocolError):
    """The updates or the parameters given to an aggregation rule are unusable."""


def check_states(states: Sequence[StateDict]) -> list[str]:
    """Validate that states are non-empty, share names, shapes and dtypes, and are finite.

    Returns the tensor names, sorted.
    """
    if len(states) == 0:
        raise AggregationError("no updates to aggregate")
    reference = states[0]
    names = sorted(reference)
    for index, state in enumerate(states):
        if sorted(state) != names:
            missing = sorted(set(names) - set(state))
            extra = sorted(set(state) - set(names))
            raise AggregationError(
                f"update {index} has different tensors than update 0 "
                f"(missing {missing}, extra {extra}); all updates must share one architecture"
            )
        for name in names:
            tensor, expected = state[name], reference[name]
            if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
                raise AggregationError(
                    f"update {index} tensor {name!r} is {tensor.dtype}{tuple(tensor.shape)}, "
                    f"update 0 has {expected.dtype}{tuple(expected.shape)}"
                )
            if tensor.dtype == torch.bool or tensor.is_complex():
                raise AggregationError(
                    f"tensor {name!r} has dtype {tensor.dtype}, which cannot be averaged"
                )
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelValidationError(
                    f"update {index} tensor {name!r} contains NaN or infinity; "
                    "drop the update before aggregating"
                )
    return names


def check_weights(n_samples: Sequence[int], n_states: int) -> torch.Tensor:
    """Sample counts as float64 weights summing to 1. Each count must be within
    0..MAX_SAMPLES_PER_WORKER (the contract's bound): larger ones would not convert to float
    exactly, or at all, and no honest worker claims them."""
    if len(n_samples) != n_states:
        raise AggregationError(f"{n_states} updates but {len(n_samples)} sample counts")
    for index, count in enumerate(n_samples):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise AggregationError(
                f"sample count {index} must be a non-negative int, got {count!r}"
            )
        if count > MAX_SAMPLES_PER_WORKER:
            raise AggregationError(
                f"sample count {index} is {count}, above MAX_SAMPLES_PER_WORKER = "
                f"{MAX_SAMPLES_PER_WORKER} (protocol.limits); the chain refuses such claims"
            )
    total = sum(n_samples)
    if total == 0:
        raise AggregationError("all sample counts are zero; nothing to weight the updates by")
    return torch.tensor(n_samples, dtype=torch.float64) / total


def check_byzantine(f: int, n: int, minimum_n: int, rule: str, requirement: str) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise AggregationError(f"{rule}: f (Byzantine updates tolerated) must be an int >= 0, got {f!r}")
    if n < minimum_n:
        raise AggregationError(
            f"{rule} with f={f} needs {requirement} updates, got n={n}; "
            "collect more updates or lower f"
        )


# Rules that need all updates' values of a coordinate at once (median, trimmed mean,
# Krum distances) work on slices of at most this many values (n updates x chunk
# coordinates, float64), so memory stays bounded however many updates arrive.
STACK_BUDGET = 1 << 22


def chunks(states: Sequence[StateDict], name: str) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (coordinate slice, float64 stack [n, len(slice)]) over the flattened tensor."""
    numel = states[0][name].numel()
    step = max(1, STACK_BUDGET // len(states))
    flat = [state[name].detach().reshape(-1) for state in states]
    for begin in range(0, max(numel, 1), step):
        window = slice(begin, min(begin + step, numel))
        yield window, torch.stack([t[window].to(torch.float64) for t in flat])


def restore_dtype(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dtype in _INTEGER_DTYPES:
        value = torch.round(value)
    return value.reshape(like.shape).to(like.dtype).contiguous()


def per_tensor(
    states: Sequence[StateDict], reduce: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Apply reduce (float64 [n, k] -> [k], per coordinate) to every tensor, in its dtype."""
    names = check_states(states)
    result = {}
    for name in names:
        out = torch.empty(states[0][name].numel(), dtype=torch.float64)
        for window, stack in chunks(states, name):
            out[window] = reduce(stack)
        result[name] = restore_dtype(out, states[0][name])
    return result
