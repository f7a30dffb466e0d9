"""Publish actions become valid gossip messages; received announcements become events."""

from __future__ import annotations

import pytest

from protocol.messages import (
    CommitteeProof,
    EvaluationScores,
    ModelAnnouncement,
    decode_message,
    encode_message,
)
from protocol.state import Manifest
from protocol.state.actions import (
    Publish,
    PublishAnnouncement,
    PublishCommitteeProof,
    PublishScores,
)
from protocol.state.events import AnnouncementReceived
from protocol.state.wire import announcement_received, wire_message

from .helpers import SALT, TASK, VALIDATORS, WORKERS, update_cid

CHAIN_ID = 31337


def test_each_publication_makes_the_matching_message_that_survives_the_wire() -> None:
    me = WORKERS[0]
    manifest = Manifest(WORKERS[:2], (5, -7), (True, False), 880_000, SALT)
    cases: list[tuple[Publish, type]] = [
        (PublishAnnouncement(3, update_cid(me, 3), 640), ModelAnnouncement),
        (PublishCommitteeProof(3, b"\x05" * 256), CommitteeProof),
        (PublishScores(3, manifest), EvaluationScores),
    ]
    for publish, kind in cases:
        message = wire_message(publish, CHAIN_ID, TASK, me)
        assert isinstance(message, kind)
        assert (message.chain_id, message.task, message.round) == (CHAIN_ID, TASK, 3)
        assert decode_message(encode_message(message)) == message
    scores = wire_message(cases[2][0], CHAIN_ID, TASK, VALIDATORS[0])
    assert isinstance(scores, EvaluationScores)
    assert (scores.workers, scores.scores, scores.accepts, scores.salt) == (
        manifest.workers,
        manifest.scores,
        manifest.accepts,
        SALT,
    )


def test_a_publication_without_a_message_is_refused() -> None:
    with pytest.raises(TypeError, match="no gossip message for Publish"):
        wire_message(Publish(1), CHAIN_ID, TASK, WORKERS[0])


def test_a_received_announcement_becomes_its_event() -> None:
    message = ModelAnnouncement(CHAIN_ID, TASK, 2, WORKERS[1], update_cid(WORKERS[1], 2), 77)
    assert announcement_received(message) == AnnouncementReceived(
        2, WORKERS[1], update_cid(WORKERS[1], 2), 77
    )
