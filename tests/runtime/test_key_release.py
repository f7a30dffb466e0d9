"""No copying within a round: a worker's update is sealed for the requester, the validators
and itself while training is open, so another worker cannot open it (real X25519 keys,
real envelopes, a real encoded update); once training has closed, its key release opens
it for every member, and only for members, only as that update of that round."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from node.blocks import BlockStore
from node.blocks.unixfs import build_file_dag
from node.models import build_model
from node.runtime import learning
from node.runtime.effects_jobs import ReleasedUpdates
from protocol.cid import cid_of
from protocol.codec import decode_state_dict, encode_state_dict
from protocol.envelope import (
    content_key_of,
    generate_keypair,
    open_envelope,
    open_with_content_key,
    seal,
)
from protocol.errors import EnvelopeError, ProtocolError
from protocol.gossip_rules import (
    TOO_EARLY,
    WRONG_ROLE,
    Accept,
    GossipView,
    Ignore,
    Incoming,
    Member,
    Reject,
    member_roles,
    update_readers,
    validate,
)
from protocol.messages import KeyRelease, encode_message, key_release_context
from protocol.state.records import GlobalModel, Role, Update

ARCH = "mnist_2nn"
TASK = b"\x5f" * 20
ROUND = 3
REQUESTER = b"\x0a" * 20
VALIDATORS = (b"\x0b" * 20, b"\x0c" * 20)
WORKERS = (b"\x01" * 20, b"\x02" * 20, b"\x03" * 20)
OUTSIDER = b"\x0f" * 20


class Party:
    def __init__(self, address: bytes) -> None:
        self.address = address
        self.private, self.public = generate_keypair()


@pytest.fixture(scope="module")
def parties() -> dict[bytes, Party]:
    return {a: Party(a) for a in (REQUESTER, *VALIDATORS, *WORKERS, OUTSIDER)}


def member_keys(parties: dict[bytes, Party]) -> dict[bytes, bytes]:
    return {a: p.public for a, p in parties.items() if a != OUTSIDER}


def roles() -> dict[bytes, Role]:
    return member_roles(WORKERS, VALIDATORS, REQUESTER)


def real_update(seed: int = 1) -> dict[str, torch.Tensor]:
    return build_model(ARCH, seed=seed).state_dict()


def sealed_update(parties: dict[bytes, Party], worker: bytes) -> tuple[bytes, bytes]:
    """(the update's plaintext, its envelope sealed as a worker seals it during training)."""
    plaintext = encode_state_dict(real_update())
    readers = update_readers(member_keys(parties), roles(), worker)
    return plaintext, seal(plaintext, readers, TASK)


def test_during_training_other_workers_cannot_open_an_update(parties: dict[bytes, Party]) -> None:
    plaintext, envelope = sealed_update(parties, WORKERS[0])
    for reader in (REQUESTER, *VALIDATORS, WORKERS[0]):
        assert open_envelope(envelope, parties[reader].private, TASK) == plaintext
    for copycat in (*WORKERS[1:], OUTSIDER):
        with pytest.raises(EnvelopeError, match="not addressed to"):
            open_envelope(envelope, parties[copycat].private, TASK)
        with pytest.raises(EnvelopeError, match="not addressed to"):
            content_key_of(envelope, parties[copycat].private)


def test_the_readers_are_the_worker_the_requester_and_every_validator() -> None:
    keys = {a: a[:1] * 32 for a in (REQUESTER, *VALIDATORS, *WORKERS)}
    readers = update_readers(keys, roles(), WORKERS[1])
    assert sorted(readers) == sorted(keys[a] for a in (REQUESTER, *VALIDATORS, WORKERS[1]))
    # a member whose role is unknown (its membership not loaded yet) is no reader
    assert update_readers(keys, {}, WORKERS[1]) == [keys[WORKERS[1]]]


def released(parties: dict[bytes, Party], envelope: bytes, cid: str) -> bytes:
    """The worker's key release: its content key sealed for every member."""
    content_key = content_key_of(envelope, parties[WORKERS[0]].private)
    context = key_release_context(TASK, ROUND, WORKERS[0], cid)
    return seal(content_key, list(member_keys(parties).values()), context)


def test_after_training_the_key_release_opens_the_update_for_members_only(
    parties: dict[bytes, Party],
) -> None:
    plaintext, envelope = sealed_update(parties, WORKERS[0])
    cid = cid_of(envelope)
    release = released(parties, envelope, cid)
    context = key_release_context(TASK, ROUND, WORKERS[0], cid)
    for member in (*WORKERS[1:], REQUESTER, *VALIDATORS):
        content_key = open_envelope(release, parties[member].private, context, max_size=32)
        assert open_with_content_key(envelope, content_key, TASK) == plaintext
    with pytest.raises(EnvelopeError, match="not addressed to"):
        open_envelope(release, parties[OUTSIDER].private, context)
    # bound to its update: replayed as another CID's, round's or worker's key it fails
    for wrong in (
        key_release_context(TASK, ROUND, WORKERS[0], cid_of(b"another update")),
        key_release_context(TASK, ROUND + 1, WORKERS[0], cid),
        key_release_context(TASK, ROUND, WORKERS[1], cid),
    ):
        with pytest.raises(EnvelopeError, match="fails authentication"):
            open_envelope(release, parties[WORKERS[1]].private, wrong)
    # another envelope's content key opens nothing here
    _, other_envelope = sealed_update(parties, WORKERS[0])
    other_key = content_key_of(other_envelope, parties[WORKERS[0]].private)
    with pytest.raises(EnvelopeError, match="content key is not this envelope's"):
        open_with_content_key(envelope, other_key, TASK)


def put(store: BlockStore, blob: bytes) -> str:
    root, blocks = build_file_dag(blob)
    for block in blocks:
        store.put(block.cid, block.data)
    return root


def test_a_worker_averages_another_workers_update_only_with_its_key_release(
    parties: dict[bytes, Party], tmp_path: Path
) -> None:
    """The node's own model book, with the blobs in a real block store: the other worker's
    update opens only through the released key the global model carries."""
    reader = parties[WORKERS[1]]
    store = BlockStore(tmp_path / "blocks")
    book = ReleasedUpdates(TASK, ARCH, store, learning.TaskCrypto(reader.private, TASK))
    _, envelope = sealed_update(parties, WORKERS[0])
    cid = put(store, envelope)
    update = Update(WORKERS[0], cid, 100)
    with pytest.raises(ProtocolError, match=f"no update of round {ROUND} can be opened"):
        book.global_state(GlobalModel(cid_of(b"initial"), ROUND, (update,)))
    release = released(parties, envelope, cid)
    model = GlobalModel(cid_of(b"initial"), ROUND, (Update(WORKERS[0], cid, 100, release),))
    state = book.global_state(model)
    expected = real_update()
    assert all(torch.equal(state[name], expected[name]) for name in expected)
    # what the update carries is what the block store holds, checked against the spec
    assert decode_state_dict(encode_state_dict(state), book.spec).keys() == expected.keys()


def key_release(worker: bytes = WORKERS[0], round_: int = ROUND) -> KeyRelease:
    return KeyRelease(31337, TASK, round_, worker, cid_of(b"update"), b"\x42" * 300)


MEMBERS = {
    "worker-peer": Member(WORKERS[0], Role.WORKER),
    "validator-peer": Member(VALIDATORS[0], Role.VALIDATOR),
}


def gossip_view(training_over: dict[int, bool] | None) -> GossipView:
    over = None if training_over is None else training_over.__getitem__
    return GossipView(31337, TASK, ROUND, 1, MEMBERS.get, over)  # type: ignore[arg-type]


def judge(message: KeyRelease, view: GossipView, signer: str = "worker-peer") -> object:
    return validate(Incoming(encode_message(message), "models", signer), view)


def test_gossip_lets_a_key_release_through_only_after_its_training_closed() -> None:
    early = judge(key_release(), gossip_view({ROUND: False}))
    assert isinstance(early, Ignore) and early.rule == TOO_EARLY and early.retry
    unknown = judge(key_release(), gossip_view(None))
    assert isinstance(unknown, Ignore) and unknown.rule == TOO_EARLY
    assert isinstance(judge(key_release(), gossip_view({ROUND: True})), Accept)
    # the round before ours is over whatever the callback says
    assert isinstance(judge(key_release(round_=ROUND - 1), gossip_view({})), Accept)


def test_only_workers_release_keys() -> None:
    verdict = judge(key_release(VALIDATORS[0]), gossip_view({ROUND: True}), "validator-peer")
    assert isinstance(verdict, Reject) and verdict.rule == WRONG_ROLE


def test_a_key_release_that_opens_nothing_leaves_only_that_update_out(
    parties: dict[bytes, Party], tmp_path: Path
) -> None:
    """An accepted worker that releases a wrong key (a sabotage of everyone's average) is
    left out of ours; our own update still averages, and training can go on from it."""
    reader = parties[WORKERS[1]]
    store = BlockStore(tmp_path / "blocks")
    book = ReleasedUpdates(TASK, ARCH, store, learning.TaskCrypto(reader.private, TASK))
    _, theirs = sealed_update(parties, WORKERS[0])
    their_cid = put(store, theirs)
    ours = encode_state_dict(real_update(seed=2))
    our_cid = put(store, seal(ours, update_readers(member_keys(parties), roles(), WORKERS[1]), TASK))
    context = key_release_context(TASK, ROUND, WORKERS[0], their_cid)
    wrong_key = seal(bytes(32), [reader.public], context)  # a well-formed release of a wrong key
    model = GlobalModel(
        cid_of(b"initial"),
        ROUND,
        (Update(WORKERS[0], their_cid, 100, wrong_key), Update(WORKERS[1], our_cid, 100)),
    )
    state = book.global_state(model)
    expected = real_update(seed=2)
    assert all(torch.equal(state[name], expected[name]) for name in expected)
