"""EventFollower: a restarted follower resumes from its cursor file and misses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.chain import ChainError, EventFollower
from tests.contracts.harness import Vote, World, play_round


def names(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.name for e in events]


def test_follow_commit_restart(any_world: World, tmp_path: Path) -> None:
    world = any_world
    cursor = tmp_path / "state" / "events.json"
    start_block = world.w3.eth.block_number + 1
    follower = EventFollower(world.w3, cursor)
    follower.follow(world.deployment.registry, from_block=start_block)
    task, created = world.requester.create_task(world.params())
    first = follower.poll()
    assert names(first) == ["TaskCreated"]  # the registry's own events only
    assert first[0].args["task"].lower() == task.lower()
    assert first[0].block_number == created.block_number
    follower.follow(task, from_block=created.block_number)
    # A follower added mid-way reads its contract from the given block in the next poll.
    assert names(follower.poll()) == ["TaskInitialized"]
    follower.commit()
    assert not list(cursor.parent.glob("*.tmp"))

    world.workers[0].join_as_worker(task)
    world.validators[0].join_as_validator(task)
    # A crash before commit: the restarted follower gets these events again (at least once).
    crashed = EventFollower(world.w3, cursor)
    assert names(crashed.poll()) == ["MemberJoined", "MemberJoined"]
    restarted = EventFollower(world.w3, cursor)
    assert restarted.followed == follower.followed
    events = restarted.poll()
    assert names(events) == ["MemberJoined", "MemberJoined"]
    assert [e.args["member"].lower() for e in events] == [
        world.workers[0].address.lower(),
        world.validators[0].address.lower(),
    ]
    restarted.commit()
    assert restarted.poll() == []

    world.requester.start(task, "bafkreival")
    play_round(world, task, 1, [world.workers[0]], [(world.validators[0], Vote((1,), (True,), 7))])
    later = EventFollower(world.w3, cursor).poll()
    assert names(later)[:3] == ["TaskStarted", "RoundStarted", "UpdateSubmitted"]
    assert "ManifestRevealed" in names(later) and "RoundFinalized" in names(later)
    blocks = [(e.block_number, e.log_index) for e in later]
    assert blocks == sorted(blocks)


def test_cursor_errors_name_the_file_and_the_fix(world: World, tmp_path: Path) -> None:
    cursor = tmp_path / "events.json"
    cursor.write_text("{not json")
    with pytest.raises(ChainError, match="unreadable.*delete it"):
        EventFollower(world.w3, cursor)
    cursor.write_text(json.dumps({"version": 1, "chain_id": 1, "next_block": {}}))
    with pytest.raises(ChainError, match="belongs to chain 1"):
        EventFollower(world.w3, cursor)


def test_small_block_spans_still_cover_everything(world: World, tmp_path: Path) -> None:
    follower = EventFollower(world.w3, tmp_path / "c.json", max_block_span=2)
    follower.follow(world.deployment.registry)
    registrations = [e for e in follower.poll() if e.name == "ParticipantRegistered"]
    assert len(registrations) == len(world.workers) + len(world.validators) + 1
