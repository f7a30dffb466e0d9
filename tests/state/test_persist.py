"""persist.to_dict / from_dict: exact round trips mid-round, clear errors on damage."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from protocol.errors import ProtocolError
from protocol.state import RequesterMachine, ValidatorMachine, WorkerMachine
from protocol.state.events import (
    BlobFetched,
    EvaluationDone,
    Event,
    SortitionDrawn,
    Tick,
    TrainingDone,
)
from protocol.state.persist import PersistError, from_dict, to_dict
from protocol.state.phases import RoundMachine

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
    feed,
    opened,
    started,
    submitted,
    update_cid,
)

W0, W1, _ = WORKERS
MID_ROUND: list[Event] = [
    started(),
    opened(1),
    BlobFetched(INITIAL_CID),
    BlobFetched(VALIDATION_CID),
    submitted(W1, 1),
    announced(W1, 1),
    announced(W0, 2),  # early: kept for round 2
    TrainingDone(1, update_cid(W0, 1), 70),
    SortitionDrawn(1, b"\x01" * 256),
    BlobFetched(update_cid(W1, 1)),
    Tick(deadlines(1)[0] + 5),
    EvaluationDone(1, (W1,), (-12,), (False,), 10, SALT),
]
AFTER: list[Event] = [Tick(deadlines(1)[1]), submitted(W0, 1), Tick(deadlines(1)[2]), opened(2)]


def machines() -> list[RoundMachine[Any]]:
    return [
        WorkerMachine(W0, TASK),
        ValidatorMachine(VALIDATORS[0], TASK),
        RequesterMachine(REQUESTER, task=TASK, local_blobs=(INITIAL_CID,)),
    ]


@pytest.mark.parametrize("machine", machines(), ids=lambda m: m.role.value)
def test_a_machine_restored_mid_round_is_the_same_machine(machine: RoundMachine[Any]) -> None:
    feed(machine, *MID_ROUND)
    data = to_dict(machine)
    restored = from_dict(json.loads(json.dumps(data)))
    assert type(restored) is type(machine)
    assert (restored.me, restored.now) == (machine.me, machine.now)
    assert restored.view == machine.view
    assert restored.local == machine.local
    assert to_dict(restored) == data
    # and it goes on exactly as the original would have
    assert feed(restored, *AFTER) == feed(machine, *AFTER)


def damaged(mutate: Any) -> dict[str, Any]:
    machine = WorkerMachine(W0, TASK)
    feed(machine, *MID_ROUND)
    data = copy.deepcopy(to_dict(machine))
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "format version 2, expected 8"),
        (lambda d: d.pop("view"), "lacks 'view'"),
        (lambda d: d.update(role="banker"), "'banker' is not a valid Role"),
        (lambda d: d["view"].update(round="1"), "view.round: expected int, got str"),
        (lambda d: d["view"].update(round=True), "view.round: expected an int, got a bool"),
        (lambda d: d["view"].update(task="aa" * 20), "view.task: bytes must be 0x-prefixed"),
        (lambda d: d["view"].update(task="0xzz"), "view.task: '0xzz'... is not hex"),
        (lambda d: d["view"].update(phase="lunch"), "view.phase: 'lunch' is not a Phase"),
        (lambda d: d["view"].pop("seed"), "view: missing fields ['seed']"),
        (lambda d: d["local"].update(extra=1), "local: missing fields [], unknown ['extra']"),
        (lambda d: d["view"].update(have="cid"), "view.have: expected list, got str"),
    ],
)
def test_damaged_state_is_refused_with_the_field_named(mutate: Any, message: str) -> None:
    with pytest.raises(PersistError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(damaged(mutate))


def test_a_non_dict_is_refused() -> None:
    with pytest.raises(ProtocolError, match="format version 'list'"):
        from_dict([])  # type: ignore[arg-type]
