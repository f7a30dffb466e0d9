"""The requester: create the task, start it once recruited (with the validation set
sealed for the members), end a commit phase once every validator has committed or proved
itself unseated, finalize rounds nobody finalized, keep the final model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from protocol.state.actions import Action, Log, PrepareTaskData, SaveFinalModel
from protocol.state.commitments import UpdateCommitment, default_update_commitment
from protocol.state.events import (
    EvaluationDone,
    Event,
    FinalModelSaved,
    KeyReleaseSealed,
    MemberJoined,
    MemberLeft,
    SortitionDrawn,
    TaskCreated,
    TaskDataReady,
    TasksOffered,
    TrainingDone,
    UnseatedProofReceived,
)
from protocol.state.phases import (
    ALL_PHASES,
    COMMON_IGNORED,
    MAX_WORKERS,
    OPEN_PHASES,
    Duty,
    RoundMachine,
    Rule,
    every,
    ignore,
    short,
)
from protocol.state.records import Phase, Role, TaskTerms, TxKind, TxStatus


@dataclass
class RequesterState:
    """Recruiting and the end of the task (persisted; kept across rounds)."""

    members: dict[bytes, Role] = field(default_factory=dict)
    data_requested: bool = False
    validation_cid: str | None = None
    final_saved: bool = False  # the final model is on disk
    # validators' proofs (checked by the runtime) that they are not seated in this round
    # or the next; the first per validator and round
    unseated: list[UnseatedProofReceived] = field(default_factory=list)


@dataclass(frozen=True)
class Recruiting:
    """When to start: once the minimums joined and either the maximums joined or
    `start_after` (a timestamp) passed; cancel at `recruit_deadline` if not started."""

    min_workers: int = 1
    min_validators: int = 1
    max_workers: int = MAX_WORKERS
    max_validators: int = MAX_WORKERS
    start_after: int = 0
    recruit_deadline: int | None = None


class RequesterMachine(RoundMachine[RequesterState]):
    role: ClassVar[Role] = Role.REQUESTER
    EARLY_EVENTS: ClassVar[tuple[type[Event], ...]] = (UnseatedProofReceived,)

    def __init__(
        self,
        me: bytes,
        *,
        recruiting: Recruiting = Recruiting(),
        local_blobs: Iterable[str] = (),
        task: bytes | None = None,
        terms: TaskTerms | None = None,
        update_commitment: UpdateCommitment = default_update_commitment,
        finalize_after: int | None = 0,
    ) -> None:
        """`local_blobs`: CIDs already in our block store (the initial model); `task`:
        given when resuming a task created earlier; `terms`: the model and rule of the
        task we create."""
        super().__init__(
            me, task, terms=terms, update_commitment=update_commitment,
            finalize_after=finalize_after,
        )
        self.recruiting = recruiting
        self.view.have.update(local_blobs)

    def _fresh_local(self) -> RequesterState:
        return RequesterState()

    def _new_round(self) -> None:
        """Only the unseated proofs are per round: keep the new round's (and the next's)."""
        self.local.unseated = [e for e in self.local.unseated if e.round >= self.view.round]

    def _on_restart(self) -> list[Action]:
        self.local.data_requested = self.local.validation_cid is not None
        return []

    def _done_with_task(self) -> bool:
        return self.local.final_saved

    def _members(self, role: Role) -> tuple[bytes, ...]:
        return tuple(a for a, r in self.local.members.items() if r == role)

    def _started(self) -> bool:
        return self.view.global_model is not None


# --- rules ------------------------------------------------------------------------------


def _task_created(m: RequesterMachine, e: TaskCreated) -> list[Action]:
    if m.view.task is not None or e.requester != m.me:
        return []
    m.view.task = e.task
    return [Log("info", f"task created at 0x{e.task.hex()}; recruiting")]


def _member_joined(m: RequesterMachine, e: MemberJoined) -> list[Action]:
    if e.role == Role.REQUESTER or m.local.members.get(e.member) == e.role:
        return []
    if len(m.local.members) >= 2 * MAX_WORKERS:
        return []
    m.local.members[e.member] = e.role
    return _members_changed(m)


def _member_left(m: RequesterMachine, e: MemberLeft) -> list[Action]:
    if m.local.members.pop(e.member, None) is None:
        return []
    return _members_changed(m)


def _members_changed(m: RequesterMachine) -> list[Action]:
    """The validation set is sealed for the members: prepare it again for the new ones,
    unless the start is already on its way."""
    local = m.local
    if not local.data_requested or m._tx_status(TxKind.START_TASK) is not None:
        return []
    local.data_requested, local.validation_cid = False, None
    return [Log("info", "members changed; sealing the validation set again")]


def _task_data_ready(m: RequesterMachine, e: TaskDataReady) -> list[Action]:
    local = m.local
    if not local.data_requested or local.validation_cid is not None:
        return []
    if (e.workers, e.validators) != (m._members(Role.WORKER), m._members(Role.VALIDATOR)):
        return []  # sealed for members who have changed since
    local.validation_cid = e.validation_cid
    m.view.have.add(e.validation_cid)
    return []


def _unseated_proof_received(m: RequesterMachine, e: UnseatedProofReceived) -> list[Action]:
    view, local = m.view, m.local
    if e.round < view.round or (view.validators and e.validator not in view.validators):
        return []
    if len(local.unseated) >= 2 * MAX_WORKERS:  # two rounds' validators
        return []
    if any((p.round, p.validator) == (e.round, e.validator) for p in local.unseated):
        return []
    local.unseated.append(e)
    return [Log("debug", f"round {e.round}: {short(e.validator)} proved it is not seated")]


def _final_model_saved(m: RequesterMachine, e: FinalModelSaved) -> list[Action]:
    m.local.final_saved = True
    return []


REQUESTER_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    (Phase.TERMINATED, FinalModelSaved): _final_model_saved,
    (Phase.IDLE, TaskCreated): _task_created,
    (Phase.IDLE, MemberJoined): _member_joined,
    (Phase.IDLE, MemberLeft): _member_left,
    (Phase.IDLE, TaskDataReady): _task_data_ready,
    **every((Phase.IDLE, *OPEN_PHASES), UnseatedProofReceived, _unseated_proof_received),
}


# --- duties -----------------------------------------------------------------------------


def create_task(m: RequesterMachine) -> list[Action]:
    if m.view.task is not None:
        return []
    return m._send(TxKind.CREATE_TASK)


def prepare_task_data(m: RequesterMachine) -> list[Action]:
    local, rules = m.local, m.recruiting
    if m.view.task is None or m._started() or local.data_requested:
        return []
    if m._tx_status(TxKind.CANCEL_TASK) is not None:
        return []
    workers, validators = m._members(Role.WORKER), m._members(Role.VALIDATOR)
    if len(workers) < rules.min_workers or len(validators) < rules.min_validators:
        return []
    full = len(workers) >= rules.max_workers and len(validators) >= rules.max_validators
    if not full and m.now < rules.start_after:
        return []
    local.data_requested = True
    return [PrepareTaskData(workers, validators)]


def start_task(m: RequesterMachine) -> list[Action]:
    cid = m.local.validation_cid
    if cid is None or m._started():
        return []
    return m._send(TxKind.START_TASK, cid)


def cancel_task(m: RequesterMachine) -> list[Action]:
    deadline = m.recruiting.recruit_deadline
    if deadline is None or m.now < deadline or m.view.task is None or m._started():
        return []
    if m._tx_status(TxKind.START_TASK) not in (None, TxStatus.FAILED):
        return []  # a start is on its way
    return m._send(TxKind.CANCEL_TASK)


def end_commit_phase(m: RequesterMachine) -> list[Action]:
    """Once every validator of the task has committed (on chain) or proved itself unseated
    for the round, end the commit phase now rather than at its deadline: the chain cannot
    tell an unseated validator from a silent one, so it waits for those proofs. Sent once;
    when every validator committed, the last commit ended the phase already."""
    view = m.view
    if not view.validators or m._tx_status(TxKind.END_COMMIT_PHASE) is not None:
        return []
    missing = [v for v in view.validators if v not in view.committed]
    if not missing:
        return []
    proofs = {e.validator: e.vrf_proof for e in m.local.unseated if e.round == view.round}
    if any(v not in proofs for v in missing):
        return []
    unseated = tuple(sorted((v, proofs[v]) for v in missing))  # the contract's order
    actions = m._send(TxKind.END_COMMIT_PHASE, view.round, unseated)
    names = ", ".join(short(v) for v, _ in unseated)
    return actions + [
        Log(
            "info",
            f"round {view.round}: {len(view.committed)} committed and {len(unseated)} proved "
            f"unseated ({names}); ending the commit phase",
        )
    ]


def save_final_model(m: RequesterMachine) -> list[Action]:
    model = m.view.global_model
    if model is None or m.view.aggregation is not None or m.local.final_saved:
        return []
    if m.session.saving_final_model:
        return []
    m.session.saving_final_model = True
    return [SaveFinalModel(model)]


REQUESTER_DUTIES: dict[Phase, tuple[Duty, ...]] = {
    Phase.IDLE: (create_task, prepare_task_data, start_task, cancel_task),
    Phase.COMMIT: (end_commit_phase,),
    Phase.TERMINATED: (save_final_model,),
}

REQUESTER_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **COMMON_IGNORED,
    **ignore(ALL_PHASES, (TasksOffered,), "the requester creates its task"),
    **ignore(
        (*OPEN_PHASES, Phase.TERMINATED),
        (TaskCreated, MemberJoined, MemberLeft, TaskDataReady),
        "recruiting is over",
    ),
    **ignore((Phase.TERMINATED,), (UnseatedProofReceived,), "the task is over"),
    **ignore(
        ALL_PHASES,
        (SortitionDrawn, TrainingDone, KeyReleaseSealed, EvaluationDone),
        "a worker's or validator's job",
    ),
    **ignore((Phase.IDLE, *OPEN_PHASES), (FinalModelSaved,), "saved once the task is over"),
}

RequesterMachine.RULES = REQUESTER_RULES
RequesterMachine.IGNORED = REQUESTER_IGNORED
RequesterMachine.DUTIES = REQUESTER_DUTIES
