"""The fixed-point scale shared by Python and the contracts.

Scores, accuracies and contributions cross the chain as signed integers equal to
round(value * SCALE). One constant, so both sides always agree on it.
"""

SCALE: int = 10**6


def to_fixed(value: float) -> int:
    """Quantize a float to the contract's fixed point (round half away from zero)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"cannot quantize non-finite value {value!r}")
    scaled = abs(value) * SCALE
    magnitude = int(scaled + 0.5)
    return magnitude if value >= 0 else -magnitude
