"""Ending the commit phase early under committee sortition: an unseated validator publishes
the proof that shows it unseated; the requester, once every validator of the task has
committed or proved itself unseated, sends endCommitPhase with those proofs, once; every
machine moves to REVEAL on the chain's PhaseEndedEarly (PhaseChanged). The proofs reach a
machine only after the runtime checked them (protocol.sortition.verify_unseated); what the
machine decides is whether they cover every validator that did not commit."""

from __future__ import annotations

import pytest

from protocol.state import Phase, RequesterMachine, TxKind, ValidatorMachine
from protocol.state.actions import PublishCommitteeProof, PublishUnseatedProof, SendTx
from protocol.state.events import (
    Event,
    ManifestCommitted,
    PhaseChanged,
    Restarted,
    SortitionDrawn,
    TaskCreated,
    Tick,
    TxConfirmed,
    TxFailed,
    UnseatedProofReceived,
)
from protocol.state.persist import from_dict, to_dict
from protocol.state.wire import unseated_proof_received, wire_message

from .helpers import (
    INITIAL_CID,
    REQUESTER,
    TASK,
    VALIDATORS,
    WORKERS,
    deadlines,
    feed,
    logs,
    only,
    opened,
    started,
    submitted,
    txs,
)

V0, V1, V2 = VALIDATORS
OUTSIDER = b"\x99" * 20
TRAINING_END, COMMIT_END, REVEAL_END = deadlines(1)


def proof(validator: bytes, round: int = 1) -> bytes:
    return validator[:1] * 255 + bytes([round])


def unseated(validator: bytes, round: int = 1) -> UnseatedProofReceived:
    return UnseatedProofReceived(round, validator, proof(validator, round))


def end(round: int, *validators: bytes) -> SendTx:
    return SendTx(
        TxKind.END_COMMIT_PHASE, round, (round, tuple((v, proof(v, round)) for v in validators))
    )


def requester() -> RequesterMachine:
    """Task started with VALIDATORS, round 1 open (training)."""
    machine = RequesterMachine(REQUESTER, local_blobs=(INITIAL_CID,))
    feed(machine, TaskCreated(TASK, REQUESTER), started(), opened(1))
    return machine


TRAINED = tuple(submitted(w, 1) for w in WORKERS) + (PhaseChanged(1, Phase.COMMIT, 1050),)

# (name, events after round 1 opened, the endCommitPhase sent over all of them)
SCENARIOS: list[tuple[str, tuple[Event, ...], list[SendTx]]] = [
    (
        "one seated member committed, the two others proved unseated",
        (*TRAINED, ManifestCommitted(1, V0), unseated(V2), unseated(V1)),
        [end(1, V1, V2)],  # ascending address order, as the contract wants
    ),
    (
        "the proofs came during training: sent as soon as the commit phase has them",
        (unseated(V1), unseated(V2), *TRAINED, ManifestCommitted(1, V0)),
        [end(1, V1, V2)],
    ),
    (
        "nobody seated: every validator proved unseated",
        (unseated(V0), unseated(V1), unseated(V2), *TRAINED),
        [end(1, V0, V1, V2)],
    ),
    (
        "one validator neither committed nor proved unseated (seated and slow, or silent)",
        (*TRAINED, ManifestCommitted(1, V0), unseated(V1)),
        [],
    ),
    (
        "a proof of a non-member does not stand for a missing validator",
        (*TRAINED, ManifestCommitted(1, V0), unseated(V1), unseated(OUTSIDER)),
        [],
    ),
    (
        "every validator committed: the last commit ended the phase on chain",
        (*TRAINED, *(ManifestCommitted(1, v) for v in VALIDATORS)),
        [],
    ),
    (
        "covered only once the last seated member's commit lands",
        (*TRAINED, unseated(V1), ManifestCommitted(1, V0), unseated(V1), ManifestCommitted(1, V2)),
        [end(1, V1)],
    ),
    (
        "training still open on chain: nothing is sent before the commit phase",
        (ManifestCommitted(1, V0), unseated(V1), unseated(V2)),  # a commit proves COMMIT
        [end(1, V1, V2)],
    ),
    (
        "still training: proofs alone do not end a phase that has not begun",
        (unseated(V0), unseated(V1), unseated(V2), Tick(TRAINING_END - 1)),
        [],
    ),
    (
        "the commit deadline passed first: the clock moved us to reveal, nothing to send",
        (*TRAINED, ManifestCommitted(1, V0), Tick(COMMIT_END), unseated(V1), unseated(V2)),
        [],
    ),
    (
        "a proof for another round does not count for this one",
        (*TRAINED, ManifestCommitted(1, V0), unseated(V1), unseated(V2, round=2)),
        [],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_the_requester_ends_the_commit_phase_when_commits_and_proofs_cover_the_validators(
    events: tuple[Event, ...], expected: list[SendTx]
) -> None:
    machine = requester()
    sent = only(feed(machine, *events), SendTx)
    assert [tx for tx in sent if tx.kind == TxKind.END_COMMIT_PHASE] == expected


def test_sent_once_whatever_follows_and_a_failure_is_not_resent() -> None:
    machine = requester()
    actions = feed(machine, *TRAINED, ManifestCommitted(1, V0), unseated(V1), unseated(V2))
    assert txs(actions) == [end(1, V1, V2)]
    assert any("ending the commit phase" in line for line in logs(actions, "info"))
    failed = TxFailed(TxKind.END_COMMIT_PHASE, 1, "Selected")
    again = feed(machine, unseated(V1), Tick(TRAINING_END + 1), failed)
    assert not txs(again)
    assert not txs(feed(machine, Tick(TRAINING_END + 2), unseated(V2)))
    assert machine.view.phase == Phase.COMMIT  # nothing but the chain ends the phase


def test_the_chains_early_end_moves_every_machine_to_reveal_and_shifts_the_deadlines() -> None:
    machine = requester()
    feed(machine, *TRAINED, ManifestCommitted(1, V0), unseated(V1), unseated(V2))
    actions = machine.handle(PhaseChanged(1, Phase.REVEAL, 1060))
    assert machine.view.phase == Phase.REVEAL
    assert (machine.view.commit_deadline, machine.view.reveal_deadline) == (1060, 1160)
    assert "round 1: commit -> reveal (the previous phase ended early at 1060)" in logs(actions)
    machine.handle(TxConfirmed(TxKind.END_COMMIT_PHASE, 1))
    assert not txs(machine.handle(Tick(1070)))  # V0 still has to reveal


def test_proofs_for_the_next_round_are_kept_until_it_opens_and_the_old_ones_dropped() -> None:
    machine = requester()
    # round 2's proofs arrive while we are still in round 1 (their senders saw it open first)
    feed(machine, *TRAINED, ManifestCommitted(1, V0), unseated(V1, 2), unseated(V2, 2))
    assert not txs(machine.handle(Tick(TRAINING_END + 1)))  # round 1 has none of its own
    feed(machine, opened(2))
    assert {(p.round, p.validator) for p in machine.local.unseated} == {(2, V1), (2, V2)}
    commit_phase = tuple(submitted(w, 2) for w in WORKERS) + (PhaseChanged(2, Phase.COMMIT, 2050),)
    actions = feed(machine, *commit_phase, ManifestCommitted(2, V0))
    assert txs(actions) == [end(2, V1, V2)]
    # a round further ahead than the next is not taken
    feed(machine, unseated(V1, 4))
    assert all(p.round == 2 for p in machine.local.unseated)


def test_the_proofs_survive_a_restart() -> None:
    machine = requester()
    feed(machine, *TRAINED, ManifestCommitted(1, V0), unseated(V1))
    restored = from_dict(to_dict(machine))
    assert isinstance(restored, RequesterMachine)
    assert restored.local.unseated == [unseated(V1)]
    feed(restored, Restarted())
    assert txs(restored.handle(unseated(V2))) == [end(1, V1, V2)]


def test_an_unseated_validator_publishes_its_proof_as_drawn_and_as_the_commit_phase_opens() -> None:
    validator = ValidatorMachine(V1, TASK)
    feed(validator, started(), opened(1))
    actions = validator.handle(SortitionDrawn(1, None, unseated_proof=proof(V1)))
    assert only(actions, PublishUnseatedProof) == [PublishUnseatedProof(1, proof(V1))]
    assert not only(actions, PublishCommitteeProof)
    restored = from_dict(to_dict(validator))
    assert not only(feed(restored, Restarted(), Tick(TRAINING_END - 1)), PublishUnseatedProof)
    again = feed(restored, PhaseChanged(1, Phase.COMMIT, TRAINING_END - 1))
    assert only(again, PublishUnseatedProof) == [PublishUnseatedProof(1, proof(V1))]
    later = feed(restored, Restarted(), Tick(TRAINING_END + 5), Tick(COMMIT_END))
    assert not only(later, PublishUnseatedProof)
    # what the requester gets from it, through the gossip message
    message = wire_message(only(actions, PublishUnseatedProof)[0], 1, TASK, V1)
    assert unseated_proof_received(message) == unseated(V1)  # type: ignore[arg-type]


def test_a_validator_whose_draw_shows_nothing_publishes_nothing() -> None:
    """No stake snapshot for the round yet (or a proof that fails our own check): neither
    seated nor provably unseated, so nothing is claimed."""
    validator = ValidatorMachine(V1, TASK)
    feed(validator, started(), opened(1))
    actions = feed(validator, SortitionDrawn(1, None), PhaseChanged(1, Phase.COMMIT, 1050))
    assert not only(actions, PublishUnseatedProof) and not only(actions, PublishCommitteeProof)


def test_a_seated_validator_publishes_its_seat_not_an_unseated_claim() -> None:
    validator = ValidatorMachine(V0, TASK)
    feed(validator, started(), opened(1))
    actions = validator.handle(SortitionDrawn(1, proof(V0)))
    assert only(actions, PublishCommitteeProof) == [PublishCommitteeProof(1, proof(V0))]
    assert not only(actions, PublishUnseatedProof)


def test_workers_and_validators_ignore_unseated_proofs() -> None:
    validator = ValidatorMachine(V0, TASK)
    feed(validator, started(), opened(1))
    assert feed(validator, unseated(V1), unseated(V2)) == []
