"""Events: everything a round state machine learns, as frozen dataclasses.

The node runtime turns chain logs, gossip messages, fetch results, finished jobs and
transaction receipts into these and feeds them to `machine.handle(event)`. Time only
enters through `Tick`; randomness (salts) only through `EvaluationDone`.

Addresses are 20-byte `bytes`; scores and accuracies are fixed-point ints
(`protocol.fixedpoint.SCALE`).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.state.records import GlobalModel, Job, Phase, Role, TaskOffer, TxKind


@dataclass(frozen=True)
class Event:
    """Base class of all events."""


# --- chain observations -------------------------------------------------------------


@dataclass(frozen=True)
class TasksOffered(Event):
    """The tasks we could join, in the order to try them (answer to FindTask);
    `configured`: the node was told to work on this one task, so it cannot take another."""

    offers: tuple[TaskOffer, ...]
    configured: bool = False


@dataclass(frozen=True)
class TaskCreated(Event):
    """The registry created a task for `requester` at address `task`."""

    task: bytes
    requester: bytes


@dataclass(frozen=True)
class MemberJoined(Event):
    member: bytes
    role: Role


@dataclass(frozen=True)
class MemberLeft(Event):
    member: bytes


@dataclass(frozen=True)
class TaskStarted(Event):
    """`workers_per_round`: the task's Params.workersPerRound (0: every worker, every round);
    `committee_size`: its Params.committeeSize, the expected seats of a round (0: not known)."""

    requester: bytes
    validation_cid: str
    initial_model_cid: str
    workers: tuple[bytes, ...]
    validators: tuple[bytes, ...]
    workers_per_round: int = 0
    rounds: int = 0  # Params.rounds (0: not known)
    committee_size: int = 0


@dataclass(frozen=True)
class RoundOpened(Event):
    """A round started (the contract's RoundStarted); a phase is open while
    `now < its deadline`."""

    round: int
    training_deadline: int
    commit_deadline: int
    reveal_deadline: int
    seed: bytes


@dataclass(frozen=True)
class PhaseChanged(Event):
    """The chain ended a phase early: `round` entered `phase` (COMMIT, REVEAL or
    FINALIZING) at timestamp `at` (the Task contract's PhaseEndedEarly). The later
    deadlines shift with it, as the contract computes them."""

    round: int
    phase: Phase
    at: int


@dataclass(frozen=True)
class UpdateSubmitted(Event):
    round: int
    worker: bytes
    commitment: bytes
    n_samples: int


@dataclass(frozen=True)
class ManifestCommitted(Event):
    round: int
    validator: bytes


@dataclass(frozen=True)
class ManifestRevealed(Event):
    round: int
    validator: bytes


@dataclass(frozen=True)
class RoundFinalized(Event):
    round: int
    accepted: tuple[bytes, ...]
    global_accuracy: int = 0


@dataclass(frozen=True)
class TaskTerminated(Event):
    reason: str = ""


# --- gossip ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnouncementReceived(Event):
    """A validated ModelAnnouncement from the models topic (signer == worker)."""

    round: int
    worker: bytes
    cid: str
    n_samples: int


@dataclass(frozen=True)
class UnseatedProofReceived(Event):
    """A validated UnseatedProof from the committee topic: the runtime checked that
    `vrf_proof` is `validator`'s VRF proof for `round` and shows it not seated, under the
    round's seed and stake snapshot (protocol.sortition.verify_unseated, the check
    Task.endCommitPhase makes)."""

    round: int
    validator: bytes
    vrf_proof: bytes


@dataclass(frozen=True)
class KeyReleaseReceived(Event):
    """A validated KeyRelease from the models topic (signer == worker; its round's training
    phase had closed): the content key of `worker`'s update `cid`, sealed for members."""

    round: int
    worker: bytes
    cid: str
    sealed_key: bytes


# --- block fetches --------------------------------------------------------------------


@dataclass(frozen=True)
class BlobFetched(Event):
    cid: str


@dataclass(frozen=True)
class FetchFailed(Event):
    cid: str
    reason: str


# --- jobs the runtime ran for us ------------------------------------------------------


@dataclass(frozen=True)
class SortitionDrawn(Event):
    """Our VRF draw for `round`: the proof when selected, None when not; `unseated_proof`:
    the proof when it shows us not selected (what lets the commit phase end early)."""

    round: int
    vrf_proof: bytes | None
    unseated_proof: bytes | None = None


@dataclass(frozen=True)
class TrainingDone(Event):
    """Local training finished; the encrypted update is stored locally under `cid`."""

    round: int
    cid: str
    n_samples: int


@dataclass(frozen=True)
class TrainedAhead(Event):
    """Answer to TrainAhead: the sealed update trained for `for_round` from `base`, stored
    locally under `cid`; or `cid` None and the `problem` (the job failed or was cancelled).
    It names no `round`: it usually comes back before the round it is for has opened."""

    for_round: int
    base: GlobalModel
    cid: str | None
    n_samples: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class KeyReleaseSealed(Event):
    """Our update's content key, sealed for every member of the task (as asked by
    SealKeyRelease)."""

    round: int
    cid: str
    sealed_key: bytes


@dataclass(frozen=True)
class EvaluationDone(Event):
    """The manifest of our evaluation; `salt` is 32 fresh random bytes from the runtime.
    `unopenable`: workers marked UNAVAILABLE though we fetched their update: one we could
    not open for a reason only we can see (its wrapped key for us fails authentication or is
    not the committed key), or one the round cannot judge (`protocol.work.UNDECIDED`)."""

    round: int
    workers: tuple[bytes, ...]
    scores: tuple[int, ...]
    accepts: tuple[bool, ...]
    global_accuracy: int
    salt: bytes
    unopenable: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class TaskDataReady(Event):
    """Requester: the validation set is sealed for these members (as asked by
    PrepareTaskData) and stored under `validation_cid`."""

    validation_cid: str
    workers: tuple[bytes, ...]
    validators: tuple[bytes, ...]


@dataclass(frozen=True)
class TaskFollowed(Event):
    """The runtime follows `task` (as asked by FollowTask); `problem`: why this node cannot
    work on it after all (a model or rule it no longer knows since it joined), or None."""

    task: bytes
    problem: str | None = None


@dataclass(frozen=True)
class FinalModelSaved(Event):
    """Requester: the final model (as asked by SaveFinalModel) is on disk."""


@dataclass(frozen=True)
class JobFailed(Event):
    round: int
    job: Job
    reason: str


# --- transactions ---------------------------------------------------------------------


@dataclass(frozen=True)
class TxConfirmed(Event):
    kind: TxKind
    round: int


@dataclass(frozen=True)
class TxFailed(Event):
    """A transaction reverted or could not be sent; `error_name` is the contract's error
    name (e.g. "WrongPhase") or the client's. `permanent`: no retry, now or later, can make
    it succeed (the sender cannot pay, or the contract refuses its own inputs); `reason`
    says why and what to change."""

    kind: TxKind
    round: int
    error_name: str
    permanent: bool = False
    reason: str = ""


# --- time and process life ------------------------------------------------------------


@dataclass(frozen=True)
class Tick(Event):
    """The time the contract compares deadlines with: the latest block's timestamp."""

    now: int


@dataclass(frozen=True)
class Restarted(Event):
    """The process restarted from persisted state: jobs and fetches in flight were lost."""
