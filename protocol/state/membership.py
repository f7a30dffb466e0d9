"""How a worker or validator comes to work on a task: it asks for offers (the configured
task, or the registry's open ones), skips tasks whose terms it cannot meet before
depositing anything, resumes a task it is a member of already, and otherwise joins the
first one that takes it. A configured task that cannot be had stops the node."""

from __future__ import annotations

from protocol.state.actions import Action, FindTask, Log, SendTx
from protocol.state.events import (
    EvaluationDone,
    Event,
    FinalModelSaved,
    MemberJoined,
    MemberLeft,
    SortitionDrawn,
    TaskCreated,
    TaskDataReady,
    TasksOffered,
    TrainingDone,
    TxConfirmed,
    TxFailed,
    UnseatedProofReceived,
)
from protocol.state.phases import (
    ALL_PHASES,
    COMMON_IGNORED,
    OPEN_PHASES,
    Duty,
    RoundMachine,
    Rule,
    ignore,
)
from protocol.state.records import Phase, TaskOffer, TxKind


def _tasks_offered(m: RoundMachine, e: TasksOffered) -> list[Action]:
    session = m.session
    if not session.finding or m.view.task is not None:
        return []
    session.finding = False
    session.offers, session.configured = e.offers, e.configured
    return _try_next_offer(m)


def _try_next_offer(m: RoundMachine) -> list[Action]:
    session = m.session
    actions: list[Action] = []
    while session.offers:
        offer, session.offers = session.offers[0], session.offers[1:]
        if offer.task in session.refused:
            continue
        problem = offer.problem
        if problem is not None:  # before the deposit: we could never do the work
            if session.configured:
                return [*actions, *m._stop(f"task 0x{offer.task.hex()}: {problem}")]
            session.refused.add(offer.task)
            actions.append(Log("warning", f"skipping task 0x{offer.task.hex()}: {problem}"))
            continue
        if offer.member:
            return [*actions, *_work_on(m, offer, "resuming")]
        session.joining = offer
        return [*actions, SendTx(TxKind.JOIN_TASK, 0, (offer.task, m.role))]
    if session.configured:
        return [*actions, *m._stop("the configured task was not offered")]
    if session.searches == 0:
        actions.append(Log("info", "no open task on the registry takes us yet; waiting for one"))
    session.searches += 1
    return actions


def _work_on(m: RoundMachine, offer: TaskOffer, how: str) -> list[Action]:
    m.session.joining, m.session.offers = None, ()
    m.view.task, m.view.terms = offer.task, offer.terms
    return [Log("info", f"{how} task 0x{offer.task.hex()} as {m.role}")]


def _join_confirmed(m: RoundMachine, e: TxConfirmed) -> list[Action]:
    offer = m.session.joining
    if e.kind != TxKind.JOIN_TASK or offer is None:
        return []
    return _work_on(m, offer, "joined")


def _join_failed(m: RoundMachine, e: TxFailed) -> list[Action]:
    offer = m.session.joining
    if e.kind != TxKind.JOIN_TASK or offer is None:
        return []
    m.session.joining = None
    refusal = f"task 0x{offer.task.hex()} did not take us: {e.error_name}"
    if m.session.configured:
        return m._stop(refusal)
    # full, closed, started meanwhile: the next one
    return [Log("info", refusal), *_try_next_offer(m)]


def find_task(m: RoundMachine) -> list[Action]:
    session = m.session
    if m.view.task is not None or session.finding or session.joining or session.offers:
        return []
    session.finding = True
    return [FindTask(again=session.searches > 0)]


MEMBERSHIP_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    (Phase.IDLE, TasksOffered): _tasks_offered,
    (Phase.IDLE, TxConfirmed): _join_confirmed,
    (Phase.IDLE, TxFailed): _join_failed,
}
MEMBERSHIP_DUTIES: tuple[Duty, ...] = (find_task,)

MEMBER_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **COMMON_IGNORED,
    **ignore(
        (*OPEN_PHASES, Phase.TERMINATED), (TasksOffered,), "we work on a task already"
    ),
    **ignore(
        ALL_PHASES,
        (TaskCreated, MemberJoined, MemberLeft, TaskDataReady, FinalModelSaved),
        "the requester's",
    ),
    **ignore(
        ALL_PHASES,
        (UnseatedProofReceived,),
        "the requester ends the commit phase with the unseated validators' proofs",
    ),
}
ROUND_JOBS = (SortitionDrawn, TrainingDone, EvaluationDone)
