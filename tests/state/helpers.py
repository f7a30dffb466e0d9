"""Shared vocabulary for the state-machine tests: parties, CIDs, a round's timeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from protocol.cid import cid_of
from protocol.manifest import update_commitment
from protocol.state.actions import Action, Aggregate, Log, SendTx
from protocol.state.events import (
    AnnouncementReceived,
    Event,
    RoundOpened,
    TaskStarted,
    UpdateSubmitted,
)
from protocol.state.phases import DEFAULT_AGGREGATOR, RoundMachine
from protocol.state.records import GlobalModel, Update

REQUESTER = bytes.fromhex("01" * 20)
TASK = bytes.fromhex("aa" * 20)
WORKERS = tuple(bytes([0x10 + i]) * 20 for i in range(3))
VALIDATORS = tuple(bytes([0x20 + i]) * 20 for i in range(3))
INITIAL_CID = cid_of(b"initial model")
VALIDATION_CID = cid_of(b"validation set")
SALT = bytes(range(32))
SEED = b"\x5e" * 32

T0 = 1_000  # round r opens at T0 * r; each phase lasts 100 s


def update_cid(worker: bytes, round: int) -> str:
    return cid_of(b"update" + worker + round.to_bytes(4, "big"))


def deadlines(round: int) -> tuple[int, int, int]:
    start = T0 * round
    return start + 100, start + 200, start + 300


def started(
    workers: tuple[bytes, ...] = WORKERS, validators: tuple[bytes, ...] = VALIDATORS
) -> TaskStarted:
    return TaskStarted(REQUESTER, VALIDATION_CID, INITIAL_CID, workers, validators)


def opened(round: int) -> RoundOpened:
    return RoundOpened(round, *deadlines(round), SEED + bytes([round]))


def submitted(worker: bytes, round: int, n_samples: int = 100) -> UpdateSubmitted:
    return UpdateSubmitted(
        round, worker, update_commitment(update_cid(worker, round), worker), n_samples
    )


def announced(worker: bytes, round: int, n_samples: int = 100) -> AnnouncementReceived:
    return AnnouncementReceived(round, worker, update_cid(worker, round), n_samples)


def feed(machine: RoundMachine[Any], *events: Event) -> list[Action]:
    """Every action the events produce, in order."""
    actions: list[Action] = []
    for event in events:
        actions += machine.handle(event)
    return actions


A = TypeVar("A", bound=Action)


def only(actions: Iterable[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def txs(actions: Iterable[Action]) -> list[SendTx]:
    return only(actions, SendTx)


def logs(actions: Iterable[Action], level: str | None = None) -> list[str]:
    return [a.text for a in only(actions, Log) if level is None or a.level == level]


def aggregated(
    round: int, updates: tuple[Update, ...], measure_on: str | None = None
) -> Aggregate:
    """The Aggregate a machine with no task terms asks for after `round`."""
    return Aggregate(
        round, updates, GlobalModel(INITIAL_CID, round, updates), DEFAULT_AGGREGATOR, measure_on
    )
