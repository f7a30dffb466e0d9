"""Actions: what a machine asks the node runtime to do, as frozen dataclasses.

The runtime executes the actions of one `handle()` call in order. `Persist` always comes
first, so the state that records "sent" is on disk before anything is sent. Jobs
(`DrawSortition`, `StartTraining`, `SealKeyRelease`, `StartEvaluation`, `Aggregate`,
`PrepareTaskData`)
may run in a worker thread but must run in the order they were emitted; each answers with
its event (`SortitionDrawn`, `TrainingDone`, ...) or `JobFailed`. `MeasureUpdate` is the
exception: it prepares a later job's work and answers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.state.records import BlobKind, GlobalModel, Manifest, TaskTerms, TxKind, Update


@dataclass(frozen=True)
class Action:
    """Base class of all actions."""


@dataclass(frozen=True)
class SendTx(Action):
    """Call the task contract. `args` are the call's arguments in ABI order, e.g.
    `submitUpdate(round, commitment, nSamples)`; END_COMMIT_PHASE has (round, ((validator,
    proof), ...)) in ascending address order; CREATE_TASK has none: the runtime takes
    the task parameters and escrow from its config; JOIN_TASK has (task, role): join that
    task in that role with its deposit."""

    kind: TxKind
    round: int
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Publish(Action):
    """Base of the gossip publications; `wire.wire_message` makes the gossip message."""

    round: int


@dataclass(frozen=True)
class PublishAnnouncement(Publish):
    cid: str
    n_samples: int


@dataclass(frozen=True)
class PublishKeyRelease(Publish):
    """Our update's content key, sealed for every member: only once training has closed."""

    cid: str
    sealed_key: bytes


@dataclass(frozen=True)
class PublishCommitteeProof(Publish):
    vrf_proof: bytes


@dataclass(frozen=True)
class PublishUnseatedProof(Publish):
    """Our VRF proof showing we are not on the round's committee."""

    vrf_proof: bytes


@dataclass(frozen=True)
class PublishScores(Publish):
    manifest: Manifest


@dataclass(frozen=True)
class Fetch(Action):
    """Fetch a blob into the local block store; `providers` are chain addresses likely
    to hold it (a hint next to the DHT's provider records); `kind` bounds its size."""

    cid: str
    providers: tuple[bytes, ...] = ()
    kind: BlobKind = BlobKind.MODEL


@dataclass(frozen=True)
class DrawSortition(Action):
    """Compute our VRF draw for the round (answer: SortitionDrawn)."""

    round: int
    seed: bytes


@dataclass(frozen=True)
class StartTraining(Action):
    """Train locally from `base`, store the sealed update (answer: TrainingDone)."""

    round: int
    base: GlobalModel


@dataclass(frozen=True)
class TrainAhead(Action):
    """Train for round `for_round` before it opens, from `base`: the global model the
    current round makes if it accepts every update submitted in it. Store the sealed
    update but announce nothing (answer: TrainedAhead, whatever happened)."""

    for_round: int
    base: GlobalModel


@dataclass(frozen=True)
class CancelTrainingAhead(Action):
    """Stop the TrainAhead job for `for_round` if it has not finished: its base turned
    out not to be the round's (answer: that job's TrainedAhead, with a problem)."""

    for_round: int


@dataclass(frozen=True)
class SealKeyRelease(Action):
    """Unwrap the content key of our update `cid` (we are one of its recipients) and seal
    it for every member of the task (answer: KeyReleaseSealed)."""

    round: int
    cid: str


@dataclass(frozen=True)
class StartEvaluation(Action):
    """Evaluate `candidates` on the validation set (answer: EvaluationDone). The manifest
    must list `workers` (every worker that submitted, in on-chain order, as the contract
    checks); a worker without a candidate update (its blob could not be had) is rejected."""

    round: int
    workers: tuple[bytes, ...]
    candidates: tuple[Update, ...]
    validation_cid: str
    base: GlobalModel


@dataclass(frozen=True)
class MeasureUpdate(Action):
    """Validator, while the round's updates arrive: open the fetched update `cid` and
    measure it on the validation set `validation_cid` ahead of the round's evaluation
    (StartEvaluation), which then finds it measured. Nothing waits on it (no answer) and
    it takes only CPU the others leave idle. It measures what the evaluation would (the
    same blob, validation set and batches), so the scores do not depend on when it ran."""

    round: int
    cid: str
    validation_cid: str


@dataclass(frozen=True)
class Aggregate(Action):
    """Combine the accepted updates of `round` into the next global model (`model`) by
    the task's aggregation rule `rule`; measure its accuracy on the validation set
    `measure_on` when we hold it (None: we do not)."""

    round: int
    updates: tuple[Update, ...]
    model: GlobalModel
    rule: str
    measure_on: str | None = None


@dataclass(frozen=True)
class PrepareTaskData(Action):
    """Requester: seal the validation set for these members (answer: TaskDataReady)."""

    workers: tuple[bytes, ...]
    validators: tuple[bytes, ...]


@dataclass(frozen=True)
class SaveFinalModel(Action):
    model: GlobalModel


@dataclass(frozen=True)
class FindTask(Action):
    """Offer us the tasks we could join (answer: TasksOffered): the configured one, or
    the registry's open ones; `again`: a search came up empty, wait a poll first."""

    again: bool = False


@dataclass(frozen=True)
class FollowTask(Action):
    """Work on `task` from now on: follow its chain logs, join its gossip and discovery
    namespace, open its blobs with these terms."""

    task: bytes
    terms: TaskTerms


@dataclass(frozen=True)
class LoadMembers(Action):
    """Read the task's members from the chain: their peer ids (who may gossip, who holds
    blobs), encryption keys (who may read ours) and VRF keys (committee seats)."""


@dataclass(frozen=True)
class Withdraw(Action):
    """Take out what the task owes us (rewards, refunds, the deposit); the requester also
    takes back the escrow no round paid out (`reclaim_escrow`)."""

    reclaim_escrow: bool = False


@dataclass(frozen=True)
class Stop(Action):
    """The task is over for us (or cannot go on: `failed`, with the reason): stop."""

    reason: str
    failed: bool = False


@dataclass(frozen=True)
class Persist(Action):
    """Write `persist.to_dict(machine)` now (atomically), before the actions after it."""


@dataclass(frozen=True)
class Log(Action):
    level: str  # "debug" | "info" | "warning" | "error"
    text: str
