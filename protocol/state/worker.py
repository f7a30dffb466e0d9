"""The worker: train from the global model, commit the update on chain, announce it, and
once the training phase has closed, release the update's key to every member.

The update is sealed for the requester, all validators and the worker itself, never for
other workers: while training is open another worker could otherwise copy it and submit
it as its own. Once training has closed on chain (no submission is possible any more in
the round) the worker unwraps its update's content key and seals it for every member
(SealKeyRelease -> KeyReleaseSealed), and publishes it (PublishKeyRelease) once in each
later phase of the round, for members that joined the gossip late."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from protocol.errors import ProtocolError
from protocol.sortition import worker_selected
from protocol.state.actions import (
    Action,
    Log,
    PublishAnnouncement,
    PublishKeyRelease,
    SealKeyRelease,
    StartTraining,
)
from protocol.state.events import (
    AnnouncementReceived,
    EvaluationDone,
    Event,
    JobFailed,
    KeyReleaseSealed,
    SortitionDrawn,
    TrainingDone,
)
from protocol.state.membership import MEMBER_IGNORED, MEMBERSHIP_DUTIES, MEMBERSHIP_RULES
from protocol.state.phases import (
    AFTER_TRAINING,
    ALL_PHASES,
    Duty,
    RoundMachine,
    Rule,
    every,
    ignore,
)
from protocol.state.records import Job, Phase, Role, TxKind, Update


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


class WorkerMachine(RoundMachine[WorkerState]):
    role: ClassVar[Role] = Role.WORKER

    def _fresh_local(self) -> WorkerState:
        return WorkerState()

    def _on_restart(self) -> list[Action]:
        self.local.training_requested = False
        self.local.key_release_requested = False
        return []

    def _wanted_blobs(self) -> dict[str, tuple[bytes, ...]]:
        return self._base_wanted() if self._is_member() else {}

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
    update = m.local.update
    if m.local.sealed_key is not None or update is None or update.cid != e.cid:
        return []
    m.local.sealed_key = e.sealed_key
    return []

WORKER_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    **MEMBERSHIP_RULES,
    (Phase.TRAINING, TrainingDone): _training_done,
    **every(AFTER_TRAINING, TrainingDone, _training_too_late),
    (Phase.TRAINING, JobFailed): _job_failed,
    **every(AFTER_TRAINING, JobFailed, _key_release_failed),
    **every(AFTER_TRAINING, KeyReleaseSealed, _key_release_sealed),
}


# --- duties -----------------------------------------------------------------------------


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
    Phase.TRAINING: (start_training, submit_update, announce_update),
    Phase.COMMIT: (announce_update, *RELEASE_DUTIES),
    Phase.REVEAL: RELEASE_DUTIES,
    Phase.FINALIZING: RELEASE_DUTIES,
    Phase.FINALIZED: RELEASE_DUTIES,
}

WORKER_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **MEMBER_IGNORED,
    **ignore(ALL_PHASES, (SortitionDrawn, EvaluationDone), "a validator's job"),
    **ignore((Phase.IDLE, Phase.TERMINATED), (TrainingDone,), "no round to submit it in"),
    **ignore(
        (Phase.IDLE, Phase.TRAINING, Phase.TERMINATED),
        (KeyReleaseSealed,),
        "a key release is only asked for after training closed, within a round",
    ),
}

WorkerMachine.RULES = WORKER_RULES
WorkerMachine.IGNORED = WORKER_IGNORED
WorkerMachine.DUTIES = WORKER_DUTIES
