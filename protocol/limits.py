"""Every protocol limit, in one place.

The chain's limits are the contracts' constants (Registry, Task); tests/contracts/test_limits.py
reads them from the deployed contracts and checks they equal these values. The derived bounds
below them are what a value read from the chain can be at most, given those constants: every
integer a contract event or view returns is checked against them (node/chain/bounds.py)
before it reaches numpy, torch or fixed-width code.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- the contracts' constants

BPS: int = 10_000  # Registry.BPS, Task.BPS: slash fractions are in basis points
MAX_ABS_SCORE: int = 10**30  # Task.MAX_ABS_SCORE: |score| in a manifest, fixed point
MAX_ACCURACY: int = 2**128  # Task.MAX_ACCURACY: a manifest's global accuracy, fixed point
MAX_CID_LENGTH: int = 256  # Task.MAX_CID_LENGTH: the validation set's CID
MAX_PEER_ID_LENGTH: int = 128  # Registry.MAX_PEER_ID_LENGTH
MAX_MEMBERS: int = 256  # Registry.MAX_MEMBERS: workers (and validators) of one task
MAX_ROUNDS: int = 10_000  # Registry.MAX_ROUNDS
MAX_AMOUNT: int = 2**112  # Registry.MAX_AMOUNT: a reward per round, a deposit or a stake
MAX_STAKE: int = 2**112  # Task.MAX_STAKE: the most one validator stakes (the least: validatorStake)
MAX_STRING_LENGTH: int = 256  # Registry.MAX_STRING_LENGTH: model arch, aggregator, CIDs
# Registry.MAX_SAMPLES_PER_WORKER: the largest maxSamplesPerWorker a task may set. 256
# workers of 2**40 samples sum below 2**53, so float64 weights of a round are exact.
MAX_SAMPLES_PER_WORKER: int = 2**40

# ---------------------------------------------------------------- derived from the constants

# Payouts, slashes, escrow and balances: rounds * (W + V) <= 10_000 * 2**113 < 2**127.
MAX_WEI: int = 2**128
MAX_UINT64: int = 2**64 - 1  # timestamps, durations, fixed-point task parameters
MAX_UINT32: int = 2**32 - 1
MAX_UINT16: int = 2**16 - 1

# ---------------------------------------------------------------- the network

MAX_WORKERS: int = MAX_MEMBERS  # per-worker tables in messages and the round state
MAX_MESSAGE_SIZE: int = 64 * 1024  # one gossip message
MAX_VRF_PROOF_SIZE: int = 1024
MAX_RECIPIENTS: int = 1024  # distinct recipients of one envelope
# The largest block anyone may send us (bitswap's convention is 2 MiB; we never make blocks
# over 256 KiB + a node header, so 1 MiB leaves room for other importers).
MAX_BLOCK_SIZE: int = 1024 * 1024
# UnixFS levels above the leaves that a node follows when fetching or reading a blob: 3
# already address 174**3 x 256 KiB = 1.4 TB.
MAX_DAG_DEPTH: int = 8


@dataclass(frozen=True)
class IntRange:
    """An inclusive range of integers that one named value must fall in."""

    low: int
    high: int

    def contains(self, value: int) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"[{self.low}, {self.high}]"


# Ranges of the values the contracts hand out, by what they are.
ROUND = IntRange(0, MAX_ROUNDS)
WEI = IntRange(0, MAX_WEI)
SAMPLES = IntRange(1, MAX_SAMPLES_PER_WORKER)
SCORE = IntRange(-MAX_ABS_SCORE, MAX_ABS_SCORE)
ACCURACY = IntRange(0, MAX_ACCURACY)
TIMESTAMP = IntRange(0, MAX_UINT64)
COUNT = IntRange(0, MAX_MEMBERS)  # members, submissions, commits, reveals of a task
