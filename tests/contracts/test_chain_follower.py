"""The node's one chain follower: logs read once, translated without chain calls for the round
machine, and handed to the status page, which a restarted node fills from the task's history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from node.chain import EventFollower
from node.chain.events import ChainBlock, blocks_of
from node.chain.tracker import CONTRACT_PHASES, TaskTracker, round_phase
from node.chain.types import ChainEvent
from node.chain.types import Phase as ContractPhase
from node.localnet.view import ChainView
from node.runtime.chainside import (
    ChainBatch,
    ChainFollower,
    EventTranslator,
    TaskFacts,
    address_bytes,
)
from node.runtime.driver import NodeStatus
from node.status import TaskWatch
from protocol.state import events as ev
from protocol.state.records import Phase
from tests.contracts.harness import Vote, World, play_round
from tests.localnet.test_results import V, W, recorded_run


def recorded_blocks() -> list[ChainBlock]:
    timestamps = {event.block_number: at for event, at in recorded_run().items}
    return blocks_of([event for event, _ in recorded_run().items], timestamps.__getitem__)


FACTS = {"0xTask": TaskFacts(b"\xc1" * 20, "bafyinitial", (b"\xa1" * 20,), (b"\xb1" * 20,))}


def test_every_contract_phase_has_one_name_in_the_node_vocabulary() -> None:
    assert set(CONTRACT_PHASES) == set(ContractPhase)
    assert len(set(CONTRACT_PHASES.values())) == len(ContractPhase)
    assert round_phase(int(ContractPhase.FINALIZE)) == Phase.FINALIZING
    with pytest.raises(ValueError, match="9"):
        round_phase(9)


def test_the_translator_needs_no_chain() -> None:
    """Recorded logs in, machine events out: the finalized round's accepted workers come from
    its WorkerSettled logs, TaskStarted's members from the facts the follower read."""
    translator = EventTranslator(me=b"\x01" * 20, task="0xTask")
    batch_events = []
    for block in recorded_blocks():
        for log in block.events:
            batch_events += translator.translate(log, FACTS)
    started = [e for e in batch_events if isinstance(e, ev.TaskStarted)]
    assert started == [
        ev.TaskStarted(b"\xc1" * 20, "bafy", "bafyinitial", (b"\xa1" * 20,), (b"\xb1" * 20,))
    ]
    finalized = [e for e in batch_events if isinstance(e, ev.RoundFinalized)]
    everyone = tuple(address_bytes(a) for a in W)
    assert finalized == [
        ev.RoundFinalized(1, everyone, 910_001),
        ev.RoundFinalized(2, everyone[:2], 910_002),  # worker 2 was rejected in round 2
    ]
    changed = [e for e in batch_events if isinstance(e, ev.PhaseChanged)]
    assert [e.phase for e in changed] == [Phase.COMMIT, Phase.COMMIT]
    assert ev.TaskTerminated("round_limit") in batch_events
    joined = [e for e in batch_events if isinstance(e, ev.MemberJoined)]
    assert len(joined) == len(W) + len(V)


def test_a_task_started_log_without_its_facts_is_refused() -> None:
    log = ChainEvent("TaskStarted", "0xTask", {"validationSetCid": "bafy"}, 5, 0, "0x01")
    with pytest.raises(ValueError, match="without its TaskFacts"):
        EventTranslator(me=b"\x01" * 20, task="0xTask").translate(log, {})


def test_logs_of_another_contract_are_not_the_task_s() -> None:
    log = ChainEvent("MemberLeft", "0xOther", {"member": "0x" + "a1" * 20}, 5, 0, "0x01")
    assert EventTranslator(me=b"\x01" * 20, task="0xTask").translate(log, FACTS) == []


def test_the_requester_recognises_its_own_new_task() -> None:
    me = b"\xc1" * 20
    task = "0x" + "77" * 20
    log = ChainEvent("TaskCreated", "0xRegistry", {"task": task, "requester": "0x" + me.hex()},
                     42, 0, "0x01")
    translator = EventTranslator(me=me)
    assert translator.translate(log, {}) == [ev.TaskCreated(bytes.fromhex("77" * 20), me)]
    assert translator.task is not None and translator.task.lower() == task
    assert translator.task_block == 42
    other = EventTranslator(me=b"\x02" * 20)
    other.translate(log, {})
    assert other.task is None  # someone else's task is not followed


def test_ticks_come_between_blocks_and_at_the_head() -> None:
    blocks = recorded_blocks()[:3]
    events = EventTranslator(me=b"\x01" * 20, task="0xTask").events(ChainBatch(tuple(blocks), 999))
    ticks = [e.now for e in events if isinstance(e, ev.Tick)]
    assert ticks == [blocks[0].timestamp, blocks[1].timestamp, 999]


def test_one_read_feeds_the_machine_and_the_page(world: World, tmp_path: Path) -> None:
    """A worker's follower on a real (embedded) chain: TaskStarted carries the task's members
    and the round's accepted workers match the contract's round result; the page's consumer
    gets the very blocks the machine's events came from. A restarted node's page then reads
    the task's history before its cursor and shows the same."""
    task = world.started_task(n_workers=2, n_validators=1)
    play = play_round(
        world, task, 1, world.workers[:2],
        [(world.validators[0], Vote((900_000, 100_000), (True, False), 910_000))],
    )  # fmt: skip
    worker = world.workers[0]
    cursor_file = tmp_path / "cursor.json"
    me = address_bytes(worker.address)
    follower = ChainFollower(worker, EventFollower(world.w3, cursor_file), me)
    follower.task = task
    follower.cursor.follow(task, 0)
    handed: list[ChainBlock] = []
    follower.subscribe(handed.extend)
    events = follower.poll()

    workers, validators = worker.members(task)
    [started] = [e for e in events if isinstance(e, ev.TaskStarted)]
    assert started.workers == tuple(address_bytes(w) for w in workers)
    assert started.validators == tuple(address_bytes(v) for v in validators)
    assert started.requester == address_bytes(world.requester.address)
    assert started.initial_model_cid == worker.task_params(task).initial_model_cid
    [finalized] = [e for e in events if isinstance(e, ev.RoundFinalized)]
    accepted = [w for w, ok in zip(play.result.workers, play.result.accepted, strict=True) if ok]
    assert finalized.accepted == tuple(address_bytes(w) for w in accepted)
    assert len(accepted) == 1
    tracker = TaskTracker()
    for block in handed:
        for log in block.events:
            tracker.feed(log, block.timestamp)
    assert tracker.rounds[1].accepted == accepted
    follower.cursor.commit()

    # a restart: the cursor resumes past the task's history; the page must still show it
    restarted = ChainFollower(worker, EventFollower(world.w3, cursor_file), me)
    restarted.task = task
    node = NodeStatus("worker0", "worker", worker.address, task=task)
    watch = TaskWatch(node, worker, restarted.history)
    restarted.subscribe(watch.feed)
    assert [type(e) for e in restarted.poll()] == [ev.Tick]  # nothing new for the machine
    document = watch.document()
    assert document["task"]["status"] == "running"
    assert document["task"]["escrow_left_wei"] == str(worker.escrow(task))
    assert document["task"]["params"]["rounds"] == worker.task_params(task).rounds
    [first, second] = document["rounds"]
    assert first["phase"] == "finalized" and first["accepted"] == accepted
    assert second["phase"] == "training"
    assert {m["address"] for m in document["members"]} == {*workers, *validators}


def test_the_localnet_view_reads_the_same_blocks(world: World, tmp_path: Path) -> None:
    """The launcher's live table: ChainView finds the registry's task, follows it and prints
    one row per finalized round, with the phase of the round in progress in the node's
    vocabulary."""
    task = world.started_task(n_workers=2, n_validators=1)
    play_round(
        world, task, 1, world.workers[:2],
        [(world.validators[0], Vote((900_000, 100_000), (True, False), 910_000))],
    )  # fmt: skip
    said: list[str] = []
    view = ChainView(
        world.w3, world.outsider, [], evaluator=lambda: pytest.fail("no evaluation asked for"),
        cursor_path=tmp_path / "view.json", say=said.append,
    )  # fmt: skip
    [record] = view.poll()
    assert view.task == task and record.round == 1 and len(record.accepted) == 1
    assert view.boundaries[1].finalized
    assert any(line.lstrip().startswith("1 ") for line in said)  # the round's table row
    assert view.round_gas(record) > 0
    view.show_status({"workers": 2, "validators": 1}, [])
    assert said[-1].strip().startswith("round 2 training:")
    assert view.poll() == []


def test_a_failing_consumer_does_not_stop_the_machine(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = world.started_task(n_workers=1, n_validators=1)
    worker = world.workers[0]
    me = address_bytes(worker.address)
    follower = ChainFollower(worker, EventFollower(world.w3, tmp_path / "cursor.json"), me)
    follower.task = task
    follower.cursor.follow(task, 0)

    def broken(blocks: Sequence[ChainBlock]) -> None:
        raise RuntimeError("the page broke")

    handed: list[ChainBlock] = []
    follower.subscribe(broken)
    follower.subscribe(handed.extend)
    events = follower.poll()
    assert any(isinstance(e, ev.TaskStarted) for e in events)
    assert [log.name for block in handed for log in block.events][-2:] == [
        "TaskStarted", "RoundStarted"
    ]
    assert "the page broke" in caplog.text
