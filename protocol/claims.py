"""A worker's claimed sample count, bounded by the round's other claims.

Nobody can check how many samples a worker trained on: `submitUpdate(..., nSamples)` is its
word. Whatever gives weight in proportion to data (FedAvg's average, the `work` reward
policy's pay) therefore uses the claim clipped to the lower median of the claims of the
updates it weighs together: min(claim, lower_median(claims)). A worker that inflates its
claim gets at most the weight of the round's median claim, which is the weight an honest
worker with that much data gets; the median moves only if more than half of the weighed
updates inflate together. What this cannot stop: a worker whose true data is below the
median may claim up to the median undetected, and an honest worker with more data than the
median is weighed as the median (the price of not trusting claims).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.rewards import lower_median


def clipped_claims(claims: Sequence[int]) -> list[int]:
    """Each claim clipped to the lower median of all of them (RewardMath._payWork's cap)."""
    if not claims:
        return []
    cap = lower_median(claims)
    return [min(claim, cap) for claim in claims]
