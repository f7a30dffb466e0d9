"""The worker: train from the global model, commit the update on chain, announce it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from protocol.state.actions import Action, Log, PublishAnnouncement, StartTraining
from protocol.state.events import (
    AnnouncementReceived,
    EvaluationDone,
    Event,
    JobFailed,
    SortitionDrawn,
    TrainingDone,
)
from protocol.state.membership import MEMBER_IGNORED, MEMBERSHIP_DUTIES, MEMBERSHIP_RULES
from protocol.state.phases import ALL_PHASES, Duty, RoundMachine, Rule, every, ignore
from protocol.state.records import Job, Phase, Role, TxKind, Update


@dataclass
class WorkerState:
    """This round's work (persisted; reset when a round opens)."""

    training_requested: bool = False
    update: Update | None = None
    # phases in which we announced the update: once when it lands, once more when the
    # commit phase starts, for validators that joined or restarted since
    announced_in: set[Phase] = field(default_factory=set)


class WorkerMachine(RoundMachine[WorkerState]):
    role: ClassVar[Role] = Role.WORKER

    def _fresh_local(self) -> WorkerState:
        return WorkerState()

    def _on_restart(self) -> list[Action]:
        self.local.training_requested = False
        return []

    def _wanted_blobs(self) -> dict[str, tuple[bytes, ...]]:
        return self._base_wanted() if self._is_member() else {}

    def _is_member(self) -> bool:
        return not self.view.workers or self.me in self.view.workers


# --- rules ------------------------------------------------------------------------------


def _training_done(m: WorkerMachine, e: TrainingDone) -> list[Action]:
    if m.local.update is not None or m._tx_status(TxKind.SUBMIT_UPDATE) is not None:
        return []
    if not m._is_member():
        return [Log("warning", f"round {e.round}: we are no worker of this task; update dropped")]
    m.local.update = Update(m.me, e.cid, e.n_samples)
    m.view.have.add(e.cid)
    # our own update counts as announced to us, so we can average it in later
    m._record_announcement(AnnouncementReceived(e.round, m.me, e.cid, e.n_samples))
    return []


def _training_too_late(m: WorkerMachine, e: TrainingDone) -> list[Action]:
    return [Log("warning", f"round {e.round}: training finished after its deadline; not submitted")]


def _job_failed(m: WorkerMachine, e: JobFailed) -> list[Action]:
    if e.job == Job.TRAINING:
        m.local.training_requested = False  # the duty asks again while time is left
    return []


AFTER_TRAINING = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING, Phase.FINALIZED)

WORKER_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    **MEMBERSHIP_RULES,
    (Phase.TRAINING, TrainingDone): _training_done,
    **every(AFTER_TRAINING, TrainingDone, _training_too_late),
    (Phase.TRAINING, JobFailed): _job_failed,
}


# --- duties -----------------------------------------------------------------------------


def start_training(m: WorkerMachine) -> list[Action]:
    local = m.local
    if local.training_requested or local.update is not None or not m._is_member():
        return []
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


WORKER_DUTIES: dict[Phase, tuple[Duty, ...]] = {
    Phase.IDLE: MEMBERSHIP_DUTIES,
    Phase.TRAINING: (start_training, submit_update, announce_update),
    Phase.COMMIT: (announce_update,),
}

WORKER_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **MEMBER_IGNORED,
    **ignore(ALL_PHASES, (SortitionDrawn, EvaluationDone), "a validator's job"),
    **ignore((Phase.IDLE, Phase.TERMINATED), (TrainingDone,), "no round to submit it in"),
}

WorkerMachine.RULES = WORKER_RULES
WorkerMachine.IGNORED = WORKER_IGNORED
WorkerMachine.DUTIES = WORKER_DUTIES
