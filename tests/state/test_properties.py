"""Properties over random event sequences, for every role: handle() never raises, no
transaction is sent twice (kind, round) even across crashes and restores, phases never
move back, Persist comes first, and duplicate events change nothing."""

from __future__ import annotations

import json
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.fixedpoint import SCALE
from protocol.state import Phase, Recruiting, RequesterMachine, ValidatorMachine, WorkerMachine
from protocol.state.actions import Action, Persist, SendTx
from protocol.state.events import (
    AnnouncementReceived,
    BlobFetched,
    EvaluationDone,
    Event,
    FetchFailed,
    JobFailed,
    ManifestCommitted,
    ManifestRevealed,
    MemberJoined,
    MemberLeft,
    PhaseChanged,
    Restarted,
    RoundFinalized,
    SortitionDrawn,
    TaskCreated,
    TaskDataReady,
    TaskTerminated,
    Tick,
    TrainingDone,
    TxConfirmed,
    TxFailed,
    UnseatedProofReceived,
    UpdateSubmitted,
)
from protocol.state.persist import from_dict, to_dict
from protocol.state.phases import RoundMachine
from protocol.state.records import PHASE_ORDER, Job, Role, TxKind

from .helpers import (
    INITIAL_CID,
    REQUESTER,
    SALT,
    TASK,
    VALIDATION_CID,
    VALIDATORS,
    WORKERS,
    announced,
    deadlines,
    opened,
    started,
    submitted,
    update_cid,
)

RECRUITING = Recruiting(1, 1, 2, 1, start_after=0, recruit_deadline=3_500)
PROOF = b"\x09" * 256


def make(role: Role) -> RoundMachine[Any]:
    if role == Role.WORKER:
        return WorkerMachine(WORKERS[0], TASK, finalize_after=50)
    if role == Role.VALIDATOR:
        return ValidatorMachine(VALIDATORS[0], TASK, evaluation_reserve=40)
    return RequesterMachine(REQUESTER, recruiting=RECRUITING, local_blobs=(INITIAL_CID,))


def restore(machine: RoundMachine[Any]) -> RoundMachine[Any]:
    """A crash: only what to_dict wrote survives, through JSON."""
    if isinstance(machine, ValidatorMachine):
        options: dict[str, Any] = {"evaluation_reserve": 40}
    elif isinstance(machine, WorkerMachine):
        options = {"finalize_after": 50}
    else:
        options = {"recruiting": RECRUITING}
    return from_dict(json.loads(json.dumps(to_dict(machine))), **options)


rounds = st.integers(0, 3)
workers = st.sampled_from(WORKERS)
validators = st.sampled_from(VALIDATORS)
members = st.sampled_from(WORKERS + VALIDATORS)
cids = st.sampled_from(
    [update_cid(w, r) for w in WORKERS for r in range(4)] + [INITIAL_CID, VALIDATION_CID, "x"]
)
times = st.one_of(
    st.integers(0, 4_000),
    st.builds(lambda r, i: deadlines(r)[i] + 0, st.integers(1, 3), st.integers(0, 2)),
)
worker_tuples = st.lists(workers, max_size=3, unique=True).map(tuple)


@st.composite
def evaluations(draw: st.DrawFn) -> EvaluationDone:
    listed = draw(worker_tuples)
    n = len(listed)
    scores = tuple(draw(st.lists(st.integers(-SCALE, SCALE), min_size=n, max_size=n)))
    accepts = tuple(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    accuracy = draw(st.integers(0, 2 * SCALE))
    salt = draw(st.sampled_from([SALT, b"short"]))
    return EvaluationDone(draw(rounds), listed, scores, accepts, accuracy, salt)


events: st.SearchStrategy[Event] = st.one_of(
    st.builds(started, workers=st.sampled_from([WORKERS, WORKERS[1:]])),
    st.builds(opened, rounds),
    st.builds(PhaseChanged, rounds, st.sampled_from(Phase), times),
    st.builds(submitted, workers, rounds, st.integers(1, 500)),
    st.builds(UpdateSubmitted, rounds, workers, st.binary(min_size=32, max_size=32), st.just(9)),
    st.builds(ManifestCommitted, rounds, validators),
    st.builds(ManifestRevealed, rounds, validators),
    st.builds(RoundFinalized, rounds, worker_tuples, st.integers(0, SCALE)),
    st.builds(TaskTerminated, st.sampled_from(["round limit", ""])),
    st.builds(announced, workers, rounds),
    st.builds(AnnouncementReceived, rounds, workers, cids, st.integers(1, 500)),
    st.builds(BlobFetched, cids),
    st.builds(FetchFailed, cids, st.just("timeout")),
    st.builds(SortitionDrawn, rounds, st.sampled_from([None, PROOF])),
    st.builds(SortitionDrawn, rounds, st.none(), st.sampled_from([None, PROOF])),
    st.builds(UnseatedProofReceived, rounds, validators, st.just(PROOF)),
    st.builds(TrainingDone, rounds, cids, st.integers(1, 500)),
    evaluations(),
    st.builds(TaskCreated, st.just(TASK), st.sampled_from([REQUESTER, WORKERS[1]])),
    st.builds(MemberJoined, members, st.sampled_from(Role)),
    st.builds(MemberLeft, members),
    st.builds(TaskDataReady, st.just(VALIDATION_CID), worker_tuples, st.just(VALIDATORS[:1])),
    st.builds(JobFailed, rounds, st.sampled_from(Job), st.just("boom")),
    st.builds(TxConfirmed, st.sampled_from(TxKind), rounds),
    st.builds(TxFailed, st.sampled_from(TxKind), rounds, st.just("WrongPhase")),
    st.builds(Tick, times),
    st.just(Restarted()),
)


def check_actions(actions: list[Action]) -> None:
    persists = [i for i, a in enumerate(actions) if isinstance(a, Persist)]
    assert persists in ([], [0]), actions


@st.composite
def perturbed_happy_scripts(draw: st.DrawFn) -> list[Event]:
    """A whole task's history, with events dropped, repeated, swapped and random ones
    slipped in: random histories alone seldom get past the first phase."""
    history: list[Event] = []
    for event in happy_script():
        choice = draw(st.sampled_from(["keep"] * 6 + ["drop", "twice", "swap", "insert"]))
        if choice == "insert":
            history.append(draw(events))
        if choice == "swap" and history:
            history.insert(len(history) - 1, event)
        elif choice != "drop":
            history += [event] * (2 if choice == "twice" else 1)
    return history


@pytest.mark.parametrize("role", list(Role))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.one_of(st.lists(events, max_size=80), perturbed_happy_scripts()),
    crash_at=st.integers(0, 80),
)
def test_random_histories_never_raise_nor_send_twice(
    role: Role, sequence: list[Event], crash_at: int
) -> None:
    machine = make(role)
    sent: set[tuple[TxKind, int]] = set()
    position = (machine.view.round, PHASE_ORDER[machine.view.phase])
    for index, event in enumerate(sequence):
        batches = []
        if index == crash_at:
            machine = restore(machine)
            batches.append(machine.handle(Restarted()))
        batches.append(machine.handle(event))
        for batch in batches:
            check_actions(batch)
        actions = [a for batch in batches for a in batch]
        for tx in (a for a in actions if isinstance(a, SendTx)):
            assert (tx.kind, tx.round) not in sent, f"{tx.kind} for round {tx.round} sent twice"
            sent.add((tx.kind, tx.round))
            hypothesis.event(f"sent {tx.kind}")
        now = (machine.view.round, PHASE_ORDER[machine.view.phase])
        assert now >= position, f"moved back from {position} to {now} on {event}"
        position = now
    assert to_dict(restore(machine)) == to_dict(machine)


def happy_script() -> list[Event]:
    """Every role's view of a one-round task, in chain order."""
    w0, w1, _ = WORKERS
    v0 = VALIDATORS[0]
    training_end, commit_end, reveal_end = deadlines(1)
    return [
        Tick(10),
        TaskCreated(TASK, REQUESTER),
        MemberJoined(w0, Role.WORKER),
        MemberJoined(v0, Role.VALIDATOR),
        TaskDataReady(VALIDATION_CID, (w0,), (v0,)),
        TxConfirmed(TxKind.START_TASK, 0),
        started(),
        opened(1),
        BlobFetched(INITIAL_CID),
        BlobFetched(VALIDATION_CID),
        SortitionDrawn(1, PROOF),
        TrainingDone(1, update_cid(w0, 1), 100),
        TxConfirmed(TxKind.SUBMIT_UPDATE, 1),
        submitted(w0, 1),
        announced(w0, 1),
        submitted(w1, 1),
        announced(w1, 1),
        BlobFetched(update_cid(w0, 1)),
        BlobFetched(update_cid(w1, 1)),
        Tick(training_end),
        EvaluationDone(1, (w0, w1), (3, 4), (True, True), 800_000, SALT),
        ManifestCommitted(1, v0),
        Tick(commit_end),
        ManifestRevealed(1, v0),
        Tick(reveal_end),
        RoundFinalized(1, (w0, w1)),
        opened(2),
        TaskTerminated("stopped"),
    ]


@pytest.mark.parametrize("role", list(Role))
def test_a_duplicate_of_any_event_changes_nothing(role: Role) -> None:
    once, twice = make(role), make(role)
    for event in happy_script():
        assert twice.handle(event) == once.handle(event)
        assert twice.handle(event) == [], f"duplicate {event} did something"
    assert to_dict(twice) == to_dict(once)


@pytest.mark.parametrize("role", list(Role))
def test_the_happy_script_reaches_the_end_of_the_task(role: Role) -> None:
    """Guards the two tests above against a script that stalls early."""
    machine = make(role)
    sent = []
    for event in happy_script():
        sent += [(a.kind, a.round) for a in machine.handle(event) if isinstance(a, SendTx)]
    assert machine.view.phase == Phase.TERMINATED
    expected = {
        # the worker (finalize_after=50) finalizes too: 100 s passed since the reveal ended
        Role.WORKER: [(TxKind.SUBMIT_UPDATE, 1), (TxKind.FINALIZE_ROUND, 1)],
        Role.VALIDATOR: [(TxKind.COMMIT_MANIFEST, 1), (TxKind.REVEAL_MANIFEST, 1)],
        Role.REQUESTER: [
            (TxKind.CREATE_TASK, 0),
            (TxKind.START_TASK, 0),
            (TxKind.FINALIZE_ROUND, 1),
        ],
    }[role]
    assert sent == expected
