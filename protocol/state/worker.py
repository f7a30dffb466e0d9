"""The worker: train from the global model, commit the update on chain, announce it, and
once the training phase has closed, release the update's key to every member.

The update is sealed for the requester, all validators and the worker itself, never for
other workers: while training is open another worker could otherwise copy it and submit
it as its own. Once training has closed on chain (no submission is possible any more in
the round) the worker unwraps its update's content key and seals it for every member
(SealKeyRelease -> KeyReleaseSealed), and publishes it (PublishKeyRelease) once in each
later phase of the round, for members that joined the gossip late.

Training ahead: once training has closed and the key of every update submitted in the
round has been released to us, the worker knows the global model the round will make if
it accepts all of them (their FedAvg in submission order, the order of the chain's
accepted list), and trains the next round's update from it (TrainAhead) while the
committee judges the round. When the next round opens and its global model is that very
model (same updates, same order) and the draw takes us, the update trained ahead is
submitted at once (or as soon as its job ends); otherwise it is dropped (its job
cancelled) and the worker trains from the real global model as without it. The update is
sealed like any other and nobody learns its CID before it is submitted.

Sampling (`workers_per_round` below the task's workers): the next round's draw is unknown
until it opens, so nobody trains ahead, and a worker fetches and builds a round's global
model only once a later round draws it (`_aggregation_deferred`): with W workers and K
updates a round, fetches grow with K per drawn worker, not with W x K."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from protocol.errors import ProtocolError
from protocol.sortition import worker_selected
from protocol.state.actions import (
    Action,
    CancelTrainingAhead,
    Log,
    PublishAnnouncement,
    PublishKeyRelease,
    SealKeyRelease,
    StartTraining,
    TrainAhead,
)
from protocol.state.events import (
    AnnouncementReceived,
    EvaluationDone,
    Event,
    JobFailed,
    KeyReleaseSealed,
    SortitionDrawn,
    TrainedAhead,
    TrainingDone,
)
from protocol.state.membership import MEMBER_IGNORED, MEMBERSHIP_DUTIES, MEMBERSHIP_RULES
from protocol.state.phases import (
    AFTER_TRAINING,
    ALL_PHASES,
    WORKER_JOB_EVENTS,
    Duty,
    RoundMachine,
    Rule,
    drop_deferred_aggregation,
    every,
    ignore,
)
from protocol.state.records import GlobalModel, Job, Phase, Role, TxKind, Update


@dataclass
class TrainingAhead:
    """The next round's update, trained from the global model this round is expected to
    make (persisted; carried into the round it is for)."""

    for_round: int
    base: GlobalModel
    running: bool = True  # its job was asked for in this process and has not answered
    cid: str | None = None  # the sealed update, once trained (None and not running: failed)
    n_samples: int = 0


@dataclass
class WorkerState:
    """This round's work (persisted; reset when a round opens)."""

    training_requested: bool = False
    training_failures: int = 0
    update: Update | None = None
    # phases in which we announced the update: once when it lands, once more when the
    # commit phase starts, for validators that joined or restarted since
    announced_in: set[Phase] = field(default_factory=set)
    key_release_requested: bool = False
    key_release_failures: int = 0
    sealed_key: bytes | None = None  # our update's content key, sealed for every member
    released_in: set[Phase] = field(default_factory=set)  # phases we published it in
    sitting_out: bool = False  # the round's draw left us out (said once in the log)
    ahead: TrainingAhead | None = None  # kept when a round opens: it is for that round


class WorkerMachine(RoundMachine[WorkerState]):
    role: ClassVar[Role] = Role.WORKER

    def __init__(
        self, me: bytes, task: bytes | None = None, *, train_ahead: bool = True, **options: Any
    ) -> None:
        """`train_ahead`: train the next round's update while the committee judges this
        round's (see the module's docstring)."""
        super().__init__(me, task, **options)
        self.train_ahead = train_ahead

    def _fresh_local(self) -> WorkerState:
        return WorkerState()

    def _new_round(self) -> None:
        ahead = self.local.ahead
        super()._new_round()
        self.local.ahead = ahead  # the new round's first duty uses it or drops it

    def _done_with_task(self) -> bool:
        """Our last round's update is on chain: not before its key is released (or that
        failed for good), or the others would average without it."""
        local = self.local
        if local.update is None or not self._landed(TxKind.SUBMIT_UPDATE):
            return True
        return bool(local.released_in) or local.key_release_failures >= MAX_KEY_RELEASE_ATTEMPTS

    def _on_restart(self) -> list[Action]:
        self.local.training_requested = False
        self.local.key_release_requested = False
        ahead = self.local.ahead
        if ahead is not None and ahead.running:  # its job died with the process
            self.local.ahead = None  # asked for again while it can still pay off
        return []

    def _wanted_blobs(self) -> dict[str, tuple[bytes, ...]]:
        if not self._is_member():
            return {}
        # a pending aggregation makes the model to start from: the older one is not needed
        wanted = self._base_wanted() if self._needs_base() and not self.view.aggregation else {}
        if self._may_train_ahead() and self.view.phase in AFTER_TRAINING:
            # every submitted update, to train ahead from their average
            for update in self.view.updates.values():
                if update.worker != self.me:
                    wanted[update.cid] = (update.worker,)
        return wanted

    def _may_train_ahead(self) -> bool:
        view = self.view
        if self._sampled():  # the next round's draw is unknown: most of that work is wasted
            return False
        return self.train_ahead and not (view.rounds and view.round >= view.rounds)

    def _sampled(self) -> bool:
        """Whether each round draws only some of the task's workers."""
        view = self.view
        return 0 < view.workers_per_round < len(view.workers)

    def _needs_base(self) -> bool:
        """Whether we need the global model now: always when every worker trains in every
        round; under sampling only in the training phase of a round that drew us."""
        if not self._sampled():
            return True
        return self.view.phase == Phase.TRAINING and self._drawn()

    def _expected_base(self) -> GlobalModel | None:
        """The global model this round makes if it accepts every submitted update (what
        `_round_finalized` and `aggregate_when_fetched` would build), once each of them is
        here and readable; None before."""
        view = self.view
        if view.global_model is None or not view.submissions:
            return None
        updates = []
        for worker in view.submissions:  # chain order: the order of its accepted list
            update = view.updates.get(worker)
            if update is None:
                return None
            update = self._released(update)
            if update.cid not in view.have or not self._readable(update):
                return None
            updates.append(update)
        return GlobalModel(view.global_model.initial_cid, view.round, tuple(updates))

    def _drop_ahead(self, why: str) -> list[Action]:
        ahead = self.local.ahead
        if ahead is None:
            return []
        self.local.ahead = None
        if self.local.update is None:  # we may have been waiting for its job
            self.local.training_requested = False
        actions: list[Action] = [
            Log("info", f"round {self.view.round}: update trained ahead for round "
                f"{ahead.for_round} dropped: {why}")
        ]
        if ahead.running:
            actions.append(CancelTrainingAhead(ahead.for_round))
        return actions


    def _is_member(self) -> bool:
        return not self.view.workers or self.me in self.view.workers

    def _drawn(self) -> bool:
        """Whether the round's seed puts us among its workers (always, without
        workers_per_round): the contract refuses a submission from anyone else."""
        view = self.view
        if not view.workers_per_round:
            return True
        try:
            return worker_selected(view.seed, self.me, view.workers_per_round, len(view.workers))
        except ProtocolError:
            return False  # a seed that is no bytes32 selects nobody (the chain's is one)


def same_updates(a: GlobalModel, b: GlobalModel) -> bool:
    """Whether two global models are the same average: the same updates (worker, blob,
    sample count) in the same order after the same round (key releases aside: they only
    say how to open a blob)."""

    def parts(model: GlobalModel) -> tuple[object, ...]:
        return (
            model.initial_cid,
            model.after_round,
            tuple((u.worker, u.cid, u.n_samples) for u in model.updates),
        )

    return parts(a) == parts(b)


# --- rules ------------------------------------------------------------------------------


def _training_done(m: WorkerMachine, e: TrainingDone) -> list[Action]:
    if m.local.update is not None or m._tx_status(TxKind.SUBMIT_UPDATE) is not None:
        return []
    if not m._is_member():
        return [Log("warning", f"round {e.round}: we are no worker of this task; update dropped")]
    if not m._drawn():
        return [Log("warning", f"round {e.round}: not drawn to train this round; update dropped")]
    m.local.update = Update(m.me, e.cid, e.n_samples)
    m.view.have.add(e.cid)
    # our own update counts as announced to us, so we can average it in later
    m._record_announcement(AnnouncementReceived(e.round, m.me, e.cid, e.n_samples))
    return []


def _training_too_late(m: WorkerMachine, e: TrainingDone) -> list[Action]:
    return [Log("warning", f"round {e.round}: training finished after its deadline; not submitted")]


MAX_TRAINING_ATTEMPTS = 3


def _job_failed(m: WorkerMachine, e: JobFailed) -> list[Action]:
    if e.job != Job.TRAINING:
        return []
    m.local.training_failures += 1
    if m.local.training_failures >= MAX_TRAINING_ATTEMPTS:  # failing the same way again
        return [Log("error", f"round {e.round}: giving up training this round: {e.reason}")]
    m.local.training_requested = False  # the duty asks again while time is left
    return []


MAX_KEY_RELEASE_ATTEMPTS = 3


def _key_release_failed(m: WorkerMachine, e: JobFailed) -> list[Action]:
    if e.job != Job.KEY_RELEASE:
        return []
    m.local.key_release_failures += 1
    if m.local.key_release_failures >= MAX_KEY_RELEASE_ATTEMPTS:  # e.g. a blob we cannot open
        return [Log("error", f"round {e.round}: giving up releasing our update's key: {e.reason}")]
    m.local.key_release_requested = False  # asked again by the duty
    return []


def _key_release_sealed(m: WorkerMachine, e: KeyReleaseSealed) -> list[Action]:
    if e.round < m.view.round:
        # our earlier round's key, sealed after the next round opened (a lagging chain view
        # can see a round end and the next open in one batch): released as it comes, or
        # the others would average that round without our update
        return [PublishKeyRelease(e.round, e.cid, e.sealed_key)]
    update = m.local.update
    if m.local.sealed_key is not None or update is None or update.cid != e.cid:
        return []
    m.local.sealed_key = e.sealed_key
    return []

def _trained_ahead(m: WorkerMachine, e: TrainedAhead) -> list[Action]:
    ahead = m.local.ahead
    if ahead is None or not ahead.running or ahead.for_round != e.for_round or ahead.base != e.base:
        return []  # a job we dropped (cancelled) or that a restart forgot
    ahead.running = False
    if e.cid is None:
        return [Log("warning", f"training ahead for round {e.for_round} failed: {e.problem}")]
    ahead.cid, ahead.n_samples = e.cid, e.n_samples
    return []


WORKER_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    **MEMBERSHIP_RULES,
    (Phase.TRAINING, TrainingDone): _training_done,
    **every(AFTER_TRAINING, TrainingDone, _training_too_late),
    (Phase.TRAINING, JobFailed): _job_failed,
    # a task that ends while our key is being sealed (its last round's phases can all end
    # early) still gets the release
    **every((*AFTER_TRAINING, Phase.TERMINATED), JobFailed, _key_release_failed),
    **every((Phase.TRAINING, *AFTER_TRAINING, Phase.TERMINATED), KeyReleaseSealed, _key_release_sealed),
    **every(ALL_PHASES, TrainedAhead, _trained_ahead),
}


# --- duties -----------------------------------------------------------------------------


def use_training_ahead(m: WorkerMachine) -> list[Action]:
    """The round's first duty: the update trained ahead for it is ours to submit when the
    round's global model is the one it was trained from and the draw takes us."""
    local, view, ahead = m.local, m.view, m.local.ahead
    if ahead is None:
        return []
    if ahead.for_round != view.round:
        return m._drop_ahead(f"round {ahead.for_round} never opened here")
    if not m._is_member() or not m._drawn():
        return m._drop_ahead("not drawn to train this round")
    if local.update is not None or m._tx_status(TxKind.SUBMIT_UPDATE) is not None:
        return m._drop_ahead("an update is submitted already")
    if not m._base_ready() or view.global_model is None:
        return []  # the round's global model is still being made
    if not same_updates(ahead.base, view.global_model):
        return m._drop_ahead(
            f"round {view.round - 1} accepted other updates than the "
            f"{len(ahead.base.updates)} it was trained from"
        )
    if ahead.cid is None:
        if not ahead.running:
            return m._drop_ahead("its job failed")
        local.training_requested = True  # that job trains from this very model
        return []
    local.ahead = None
    local.update = Update(m.me, ahead.cid, ahead.n_samples)
    view.have.add(ahead.cid)
    m._record_announcement(AnnouncementReceived(view.round, m.me, ahead.cid, ahead.n_samples))
    return [Log("info", f"round {view.round}: the update trained ahead is from this round's "
                "global model; submitting it")]


def train_ahead(m: WorkerMachine) -> list[Action]:
    """Once every update submitted in the round can be opened here, train the next
    round's update from their average while the committee judges them."""
    local, view = m.local, m.view
    actions: list[Action] = []
    if local.ahead is not None and local.ahead.for_round <= view.round:
        actions += m._drop_ahead(
            f"round {local.ahead.for_round}'s training closed before it was used"
        )
    if local.ahead is not None or not m._is_member() or not m._may_train_ahead():
        return actions
    base = m._expected_base()
    if base is None:
        return actions
    local.ahead = TrainingAhead(view.round + 1, base)
    return actions + [
        Log("info", f"round {view.round}: training round {view.round + 1}'s update ahead, "
            f"from the average of the {len(base.updates)} submitted updates"),
        TrainAhead(view.round + 1, base),
    ]


def drop_training_ahead(m: WorkerMachine) -> list[Action]:
    return m._drop_ahead("the task is over")


def start_training(m: WorkerMachine) -> list[Action]:
    local = m.local
    if local.training_requested or local.update is not None or not m._is_member():
        return []
    if not m._drawn():
        if local.sitting_out:
            return []
        local.sitting_out = True
        return [Log("info", f"round {m.view.round}: not drawn to train; sitting this round out")]
    base = m.view.global_model
    if m._tx_status(TxKind.SUBMIT_UPDATE) is not None or base is None or not m._base_ready():
        return []
    local.training_requested = True
    return [StartTraining(m.view.round, base)]


def submit_update(m: WorkerMachine) -> list[Action]:
    update = m.local.update
    if update is None:
        return []
    if m._tx_status(TxKind.SUBMIT_UPDATE) is not None:
        return []
    commitment = m._update_commitment(update.cid, m.me)
    if commitment is None:
        m.local.update = None
        return [Log("error", f"round {m.view.round}: update {update.cid!r} has no commitment")]
    return m._send(TxKind.SUBMIT_UPDATE, m.view.round, commitment, update.n_samples)


def announce_update(m: WorkerMachine) -> list[Action]:
    update, phase = m.local.update, m.view.phase
    if update is None or not m._landed(TxKind.SUBMIT_UPDATE) or phase in m.local.announced_in:
        return []
    m.local.announced_in.add(phase)
    return [PublishAnnouncement(m.view.round, update.cid, update.n_samples)]


def seal_key_release(m: WorkerMachine) -> list[Action]:
    """Training has closed (this duty runs in the later phases only) and our update is
    on chain: have its content key sealed for every member."""
    local, update = m.local, m.local.update
    if update is None or local.key_release_requested or local.sealed_key is not None:
        return []
    if not m._landed(TxKind.SUBMIT_UPDATE):
        return []
    local.key_release_requested = True
    return [SealKeyRelease(m.view.round, update.cid)]


def release_key(m: WorkerMachine) -> list[Action]:
    local, update, phase = m.local, m.local.update, m.view.phase
    if update is None or local.sealed_key is None or phase in local.released_in:
        return []
    local.released_in.add(phase)
    return [PublishKeyRelease(m.view.round, update.cid, local.sealed_key)]


RELEASE_DUTIES = (seal_key_release, release_key)

WORKER_DUTIES: dict[Phase, tuple[Duty, ...]] = {
    Phase.IDLE: MEMBERSHIP_DUTIES,
    Phase.TRAINING: (use_training_ahead, start_training, submit_update, announce_update),
    # our key release first: the others train ahead once they have every key
    Phase.COMMIT: (announce_update, *RELEASE_DUTIES, train_ahead),
    Phase.REVEAL: (*RELEASE_DUTIES, train_ahead),
    Phase.FINALIZING: (*RELEASE_DUTIES, train_ahead),
    Phase.FINALIZED: (*RELEASE_DUTIES, train_ahead),
    Phase.TERMINATED: (*RELEASE_DUTIES, drop_training_ahead, drop_deferred_aggregation),
}

WORKER_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **{pair: why for pair, why in MEMBER_IGNORED.items() if pair[1] not in WORKER_JOB_EVENTS},
    **ignore(ALL_PHASES, (SortitionDrawn, EvaluationDone), "a validator's job"),
    **ignore((Phase.IDLE, Phase.TERMINATED), (TrainingDone,), "no round to submit it in"),
    **ignore(
        (Phase.IDLE,),
        (KeyReleaseSealed,),
        "a key release is only asked for after training closed, in a round",
    ),
}

WorkerMachine.RULES = WORKER_RULES
WorkerMachine.IGNORED = WORKER_IGNORED
WorkerMachine.DUTIES = WORKER_DUTIES
