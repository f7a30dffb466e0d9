"""Small value types shared by events, actions and machines."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ADDRESS_LENGTH = 20
SALT_LENGTH = 32
ACCEPT = 1  # protocol.manifest.WorkerVerdict.ACCEPT


class Role(StrEnum):
    REQUESTER = "requester"
    WORKER = "worker"
    VALIDATOR = "validator"


class Phase(StrEnum):
    """Where the task is, as this node sees it. Within a round the order only moves
    forward: TRAINING < COMMIT < REVEAL < FINALIZING < FINALIZED."""

    IDLE = "idle"  # recruiting, or not started yet
    TRAINING = "training"
    COMMIT = "commit"
    REVEAL = "reveal"
    FINALIZING = "finalizing"  # reveal over; waiting for someone to call finalizeRound
    FINALIZED = "finalized"  # round settled; waiting for the next round to open
    TERMINATED = "terminated"


PHASE_ORDER: dict[Phase, int] = {phase: index for index, phase in enumerate(Phase)}
IN_ROUND: frozenset[Phase] = frozenset(
    {Phase.TRAINING, Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING}
)


class TxKind(StrEnum):
    """The contract calls the machines send: at most one of each kind per round."""

    CREATE_TASK = "createTask"
    JOIN_TASK = "join"  # joinAsWorker / joinAsValidator with the task's deposit
    START_TASK = "start"
    CANCEL_TASK = "cancel"
    SUBMIT_UPDATE = "submitUpdate"
    COMMIT_MANIFEST = "commitManifest"
    REVEAL_MANIFEST = "revealManifest"
    FINALIZE_ROUND = "finalizeRound"
    END_COMMIT_PHASE = "endCommitPhase"  # the requester, with the unseated validators' proofs


class BlobKind(StrEnum):
    """What a fetched blob is, which bounds its size: a peer cannot make us fetch more."""

    MODEL = "model"  # the initial model or a worker's sealed update
    VALIDATION_SET = "validation_set"


class TxStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"


class Job(StrEnum):
    SORTITION = "sortition"
    TRAINING = "training"
    EVALUATION = "evaluation"
    AGGREGATION = "aggregation"
    TASK_DATA = "task_data"
    KEY_RELEASE = "key_release"


@dataclass(frozen=True)
class TaskTerms:
    """What a node must support to work on a task: its model and aggregation rule."""

    model_arch: str
    aggregator: str


@dataclass(frozen=True)
class TaskOffer:
    """A task we might work on, as the chain describes it; `member`: we joined it already;
    `problem`: why this node could not do its work (a model or rule it does not know, data
    it lacks), found before any deposit; None when it can."""

    task: bytes
    terms: TaskTerms
    member: bool = False
    problem: str | None = None


@dataclass(frozen=True)
class Update:
    """A worker's model update: its blob CID and its on-chain sample count. The blob is
    sealed for the requester, the validators and the worker itself; `key_release` (its
    content key sealed for every member, from the worker's KeyRelease) lets any other
    member open it once the round's training phase has closed."""

    worker: bytes
    cid: str
    n_samples: int
    key_release: bytes | None = None


@dataclass(frozen=True)
class GlobalModel:
    """The current global model: the initial model, or the FedAvg of `updates`, the
    accepted updates of round `after_round` (a round with none carries the model over)."""

    initial_cid: str
    after_round: int = 0
    updates: tuple[Update, ...] = ()

    @property
    def blob_cids(self) -> tuple[str, ...]:
        """The blobs a node needs locally to rebuild this model."""
        return tuple(u.cid for u in self.updates) if self.updates else (self.initial_cid,)


@dataclass(frozen=True)
class Manifest:
    """A validator's evaluation of one round, exactly as revealed on chain; `verdicts` are
    protocol.manifest.WorkerVerdict values (REJECT, ACCEPT, UNAVAILABLE)."""

    workers: tuple[bytes, ...]
    scores: tuple[int, ...]
    verdicts: tuple[int, ...]
    global_accuracy: int
    salt: bytes

    @property
    def accepts(self) -> tuple[bool, ...]:
        return tuple(v == ACCEPT for v in self.verdicts)
