"""node.status: the page's document from chain events, and the tiny HTTP server on a real
socket (GET only, bounded request head, bounded time)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from node import status
from node.chain.tracker import TaskTracker
from node.config import parse_listen
from node.runtime.driver import NodeStatus
from tests.localnet.test_results import ETHER, V, W, _checksum, recorded_run

NODE = NodeStatus(name="requester", role="requester", address="0xC1", task="0xTask", round=2,
                  phase="terminated", accuracy_by_round={1: 0.9, 2: 0.95}, done=True)


def fed_tracker() -> TaskTracker:
    tracker = TaskTracker()
    for event, timestamp in recorded_run().items:
        tracker.feed(event, timestamp)
    return tracker


def test_the_document_has_rounds_members_rewards_and_slashes() -> None:
    doc = status.status_document(NODE, fed_tracker(), None)
    assert doc["node"]["accuracy_by_round"] == {"1": 0.9, "2": 0.95}
    assert doc["task"]["status"] == "terminated"
    assert doc["task"]["termination"] == "round_limit" and doc["task"]["escrow_left_wei"] == "0"
    first, second = doc["rounds"]
    assert [first["round"], second["round"]] == [1, 2]
    assert second["phase"] == "finalized" and second["consensus_accuracy"] == 0.910002
    assert second["rejected"] == [_checksum(W[2])]
    assert second["slashes"] == {_checksum(W[2]): str(ETHER // 2)}
    members = {m["address"]: m for m in doc["members"]}
    assert set(members) == {_checksum(a) for a in W + V}
    assert members[_checksum(W[0])]["earned_wei"] == str(2 * ETHER + ETHER // 4)
    assert members[_checksum(W[0])]["withdrawn_wei"] == str(ETHER)
    assert members[_checksum(W[2])]["slashed_wei"] == str(ETHER // 2)
    assert members[_checksum(V[0])]["role"] == "validator"
    assert members[_checksum(V[0])]["earned_wei"] == str(ETHER)
    # Each member's own stake (a validator's weighs its seats) or deposit, as it joined.
    assert members[_checksum(V[0])]["stake_wei"] == str(2 * ETHER)
    assert members[_checksum(W[0])]["stake_wei"] == str(ETHER)
    assert doc["node"]["stake_wei"] is None  # the requester is no member
    json.dumps(doc)  # JSON-ready as it is


def test_a_validator_node_sees_its_own_stake() -> None:
    validator = NodeStatus(name="validator-0", role="validator", address=V[0].lower(), task="0xTask")
    doc = status.status_document(validator, fed_tracker(), None)
    assert doc["node"]["stake_wei"] == str(2 * ETHER)
    assert "n.stake_wei" in status.PAGE and "m.stake_wei" in status.PAGE


def test_before_any_task_the_document_says_so() -> None:
    doc = status.status_document(NodeStatus("w", "worker", "0x1"), TaskTracker(), None)
    assert doc["task"] is None and doc["rounds"] == [] and doc["members"] == []


def document() -> dict[str, Any]:
    return {"hello": "page"}


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x", 200),
        (b"GET /status.json?t=1 HTTP/1.0", 200),
        (b"HEAD /status.json HTTP/1.1", 200),
        (b"POST /status.json HTTP/1.1", 405),
        (b"GET /secret HTTP/1.1", 404),
        (b"GET / HTTP/2", 505),
        (b"\xff\xfe", 400),
        (b"GET /", 400),
    ],
)
def test_responses(head: bytes, code: int) -> None:
    reply = status.respond(head, document)
    assert reply.startswith(f"HTTP/1.1 {code} ".encode())
    if head.startswith(b"HEAD"):
        assert reply.endswith(b"\r\n\r\n")


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8080", "localhost:", ":80", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="is not host:port"):
            parse_listen(bad)


async def exchange(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def test_the_server_on_a_real_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "REQUEST_TIMEOUT_S", 0.3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(status.serve_status, "127.0.0.1", 0, document)
        reply = await exchange(port, b"GET /status.json HTTP/1.1\r\nHost: me\r\n\r\n")
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ") and b"application/json" in head
        assert json.loads(body) == {"hello": "page"}
        page = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
        assert b"status.json" in page and b"<html" in page
        # a head that never ends is cut off by size, a silent client by time
        flood = await exchange(port, b"GET / HTTP/1.1\r\nX: " + b"a" * (2 * status.MAX_REQUEST_BYTES))
        assert flood.startswith(b"HTTP/1.1 431 ")
        silent = await exchange(port, b"GET / HTTP/1.1\r\n")
        assert silent.startswith(b"HTTP/1.1 408 ")
        nursery.cancel_scope.cancel()
