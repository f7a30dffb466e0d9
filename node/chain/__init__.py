"""The chain client: contracts (Registry, Task) over web3, on eth-tester or any JSON-RPC chain."""

from node.chain.client import ChainClient, Deployment
from node.chain.errors import ChainError, ChainRevert
from node.chain.events import EventFollower
from node.chain.types import (
    ChainEvent,
    Participant,
    Phase,
    Receipt,
    RewardPolicy,
    Role,
    RoundInfo,
    RoundResult,
    TaskParams,
    TaskStatus,
    Termination,
)

__all__ = [
    "ChainClient",
    "ChainError",
    "ChainEvent",
    "ChainRevert",
    "Deployment",
    "EventFollower",
    "Participant",
    "Phase",
    "Receipt",
    "RewardPolicy",
    "Role",
    "RoundInfo",
    "RoundResult",
    "TaskParams",
    "TaskStatus",
    "Termination",
]
