"""The base a worker trains ahead from is, bit for bit, the global model it builds once
the round is settled: the machine names the same updates in the same order, and the
runtime's model book (ReleasedUpdates: real sealed blobs, one opened with its worker's
released key) averages them to the same tensors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from node.blocks import BlockStore
from node.runtime import learning
from node.runtime.effects_jobs import ReleasedUpdates
from protocol.codec import encode_state_dict
from protocol.envelope import content_key_of, generate_keypair, seal
from protocol.manifest import update_commitment
from protocol.messages import key_release_context
from protocol.models import build_model
from protocol.state import TxKind, WorkerMachine
from protocol.state.actions import Aggregate, TrainAhead
from protocol.state.events import (
    AnnouncementReceived,
    BlobFetched,
    KeyReleaseReceived,
    KeyReleaseSealed,
    RoundFinalized,
    Tick,
    TrainingDone,
    TxConfirmed,
    UpdateSubmitted,
)
from tests.node.test_learning import put
from tests.state.helpers import TASK, deadlines, feed, only, opened, started

MODEL = "mnist_2nn"


def test_the_base_trained_ahead_from_is_the_global_model_bit_for_bit(tmp_path: Path) -> None:
    me_private, me_public = generate_keypair()
    workers = [generate_keypair() for _ in range(3)]  # ours first
    workers[0] = (me_private, me_public)
    addresses = [bytes([0x10 + i]) * 20 for i in range(3)]
    me = addresses[0]
    ad = TASK  # TaskCrypto's associated data: the task address
    torch.manual_seed(0)
    initial = build_model(MODEL, seed=1).state_dict()
    with BlockStore(tmp_path / "blocks") as store:
        initial_cid = put(store, encode_state_dict(initial))
        cids, keys = [], []
        for private, public in workers:
            state = {name: t + 0.01 * torch.randn_like(t) for name, t in initial.items()}
            # sealed for its own worker only: we open the others' with their released keys
            envelope = seal(encode_state_dict(state), [public], ad)
            cids.append(put(store, envelope))
            keys.append(content_key_of(envelope, private, len(envelope)))

        worker = WorkerMachine(me, TASK)
        feed(worker, replace(started(workers=tuple(addresses)), initial_model_cid=initial_cid))
        feed(worker, opened(1), BlobFetched(initial_cid), TrainingDone(1, cids[0], 300))
        feed(worker, TxConfirmed(TxKind.SUBMIT_UPDATE, 1))
        samples = (300, 200, 500)
        for address, cid, n in zip(addresses, cids, samples, strict=True):
            commitment = update_commitment(cid, address)
            feed(worker, UpdateSubmitted(1, address, commitment, n))
            if address != me:
                feed(worker, AnnouncementReceived(1, address, cid, n))
        feed(worker, Tick(deadlines(1)[0]), KeyReleaseSealed(1, cids[0], b"ours"))
        actions = []
        for address, cid, key in list(zip(addresses, cids, keys, strict=True))[1:]:
            sealed_key = seal(key, [me_public], key_release_context(TASK, 1, address, cid))
            actions += feed(worker, BlobFetched(cid), KeyReleaseReceived(1, address, cid, sealed_key))
        (ahead,) = only(actions, TrainAhead)
        (aggregate,) = only(feed(worker, RoundFinalized(1, tuple(addresses))), Aggregate)
        assert ahead.base == aggregate.model  # the same updates, in the same order

        def book() -> ReleasedUpdates:  # a fresh one each time: nothing cached between
            return ReleasedUpdates(TASK, MODEL, store, learning.TaskCrypto(me_private, ad))

        expected = book().global_state(ahead.base)
        settled = book().global_state(aggregate.model)
        assert [u.n_samples for u in aggregate.model.updates] == list(samples)
        assert expected.keys() == settled.keys()
        for name in expected:
            assert torch.equal(expected[name], settled[name]), name
            assert not torch.equal(expected[name], initial[name])  # a real average was taken
