"""An update a worker seals so that one validator cannot open it gets no honest validator
slashed: real MNIST updates (mnist_2nn) sealed in a block store, judged by two validators
X and Y with `judge_round`, their results put through the validator machine.

- Left out of the recipients: the header (the same bytes for everyone) shows it, so X
  and Y both REJECT it.
- X's entry is there but opens nothing (a flipped byte in X's wrapped key, or a wrapped
  key that is not the content's, each sealed in before the content is encrypted, so the
  envelope is one the worker can publish): only X can see that, so X marks it UNAVAILABLE
  and Y judges it as any other.
- X's entry wraps a second key under which the same AES-GCM ciphertext also authenticates
  (`tests.gcm_two_keys`), opening to bytes that are no model: without the envelope's key
  commitment X would see a bad payload and REJECT it alone, against Y's ACCEPT; with it X
  refuses the key and marks the update UNAVAILABLE."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator

import msgpack
import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.blocks import BlockStore
from node.datasets import default_data_root, load_mnist, mnist_available
from node.models import build_model
from node.runtime import learning
from node.runtime.effects_jobs import ReleasedUpdates, RoundJudgement, evaluation_done, judge_round
from protocol import envelope as env
from protocol.codec import ModelSpec, decode_state_dict, encode_state_dict
from protocol.data import Dataset
from protocol.errors import EnvelopeError, ProtocolError
from protocol.manifest import WorkerVerdict
from protocol.rewards import CommitteeMember, Policy, RewardPolicy, settle_round
from protocol.state import ValidatorMachine
from protocol.state.actions import StartEvaluation
from protocol.state.commitments import default_update_commitment
from protocol.state.events import (
    AnnouncementReceived,
    BlobFetched,
    SortitionDrawn,
    Tick,
    UpdateSubmitted,
)
from protocol.state.records import GlobalModel, Update
from tests.gcm_two_keys import sealed_by_hand, two_key_ciphertext
from tests.runtime.test_key_release import put
from tests.state.helpers import (
    INITIAL_CID,
    REQUESTER,
    VALIDATION_CID,
    deadlines,
    feed,
    opened,
    started,
)

DATA_ROOT = default_data_root()
TASK = b"\x6b" * 20
LOG = logging.LoggerAdapter(logging.getLogger("test_unreadable_updates"), {})
OMITS_X, BAD_WRAP_FOR_X, WRONG_KEY_FOR_X, TWO_KEYS_FOR_X, HONEST = (
    bytes([0x40 + i]) * 20 for i in range(5)
)
WORKERS = (OMITS_X, BAD_WRAP_FOR_X, WRONG_KEY_FOR_X, TWO_KEYS_FOR_X, HONEST)
X, Y, Z = b"\x51" * 20, b"\x52" * 20, b"\x53" * 20
VALIDATORS = (X, Y, Z)
SALT = bytes(32)
ETHER = 10**18
POLICY = Policy.for_task(
    worker_reward_per_round=3 * ETHER, validator_reward_per_round=ETHER,
    worker_deposit=ETHER, slash_fraction_bps=1000,
    tolerance=20_000, reward_policy=RewardPolicy.TOPK, top_k=5,
)


def sealed_by_worker(
    plaintext: bytes, recipients: list[bytes], associated_data: bytes, victim: bytes, how: str
) -> bytes:
    """An envelope sealed as `protocol.envelope.seal` does, except the entry for `victim`:
    its wrapped key with one byte flipped ("flip"), a valid wrap of another key ("wrong"),
    or of a second key the content also authenticates under ("two_keys"; the content then
    opens to `plaintext` under the first key but for 16 bytes of small weights). The header,
    that entry included, is the content's associated data, as in any envelope."""
    content_key = AESGCM.generate_key(bit_length=256)
    victim_key = AESGCM.generate_key(bit_length=256) if how in ("wrong", "two_keys") else content_key

    def content(nonce: bytes, aad: bytes) -> bytes:
        if how == "two_keys":
            return two_key_ciphertext(content_key, victim_key, nonce, plaintext, aad, *small_weights(plaintext))
        return AESGCM(content_key).encrypt(nonce, plaintext, aad)

    wraps = [(public, victim_key if public == victim else content_key) for public in recipients]
    return sealed_by_hand(
        len(plaintext), wraps, content_key, associated_data, content,
        spoiled=victim if how == "flip" else None,
    )


def small_weights(plaintext: bytes) -> tuple[range, Callable[[int, bytes], bool]]:
    """For `two_key_ciphertext`: the blocks that lie within the largest tensor's float32
    data, and a check that the new block leaves the weights it touches finite and under 0.1,
    so the update stays a good model."""
    weights = max((data for _, _, _, data in msgpack.unpackb(plaintext)["tensors"]), key=len)
    start = plaintext.find(weights)

    def fits(index: int, block: bytes) -> bool:
        offset = index * 16 - start
        changed = bytearray(weights)
        changed[offset : offset + 16] = block
        touched = np.frombuffer(bytes(changed), "<f4")[offset // 4 : (offset + 19) // 4]
        return bool(np.all(np.isfinite(touched)) and np.all(np.abs(touched) < 0.1))

    return range(-(-start // 16), (start + len(weights)) // 16), fits


@dataclasses.dataclass
class Round:
    store: BlockStore
    keys: dict[bytes, tuple[bytes, bytes]]  # member -> (private, public)
    updates: tuple[Update, ...]
    base: GlobalModel
    validation: Dataset
    judged: dict[bytes, RoundJudgement] = dataclasses.field(default_factory=dict)

    def judged_by(self, validator: bytes) -> RoundJudgement:
        """`validator`'s judgement, with the task's readers (requester, X, Y, Z) as its own."""
        if validator not in self.judged:
            self.judged[validator] = self._judge(validator)
        return self.judged[validator]

    def _judge(self, validator: bytes) -> RoundJudgement:
        book = ReleasedUpdates(
            TASK, "mnist_2nn", self.store, learning.TaskCrypto(self.keys[validator][0], TASK)
        )
        action = StartEvaluation(1, WORKERS, self.updates, "unused", self.base)
        readers = [self.keys[m][1] for m in (REQUESTER, *VALIDATORS)]
        return judge_round(
            book, action, self.validation, 0, RewardPolicy.TOPK, LOG, None, readers
        )

    def verdicts(self, validator: bytes, judged: RoundJudgement) -> tuple[WorkerVerdict, ...]:
        """The verdicts `validator`'s machine puts in its manifest for `judged`."""
        machine = ValidatorMachine(validator, TASK)
        feed(machine, started(WORKERS, VALIDATORS), opened(1), SortitionDrawn(1, b"\x07" * 256))
        feed(machine, BlobFetched(VALIDATION_CID), BlobFetched(INITIAL_CID))  # the machine's
        for update in self.updates:
            commitment = default_update_commitment(update.cid, update.worker)
            feed(
                machine,
                UpdateSubmitted(1, update.worker, commitment, update.n_samples),
                AnnouncementReceived(1, update.worker, update.cid, update.n_samples),
                BlobFetched(update.cid),
            )
        machine.handle(Tick(deadlines(1)[0]))
        assert machine.local.evaluation_requested
        feed(machine, evaluation_done(1, judged, SALT))
        assert machine.local.manifest is not None
        return tuple(WorkerVerdict(v) for v in machine.local.manifest.verdicts)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Round]:
    if not mnist_available(DATA_ROOT):
        pytest.skip(f"MNIST not found at {DATA_ROOT} (set FL_NODE_DATA_ROOT)")
    test = load_mnist(DATA_ROOT, "test")
    validation = Dataset(test.images[:200], test.labels[:200], test.spec)
    keys = {m: env.generate_keypair() for m in (REQUESTER, *VALIDATORS, *WORKERS)}
    base = build_model("mnist_2nn", seed=0).state_dict()
    generator = torch.Generator().manual_seed(5)
    with BlockStore(tmp_path_factory.mktemp("unreadable") / "blocks") as store:
        initial = put(store, encode_state_dict(base))
        updates = []
        for worker in WORKERS:
            state = {
                name: t + 0.05 * t.std() * torch.randn(t.shape, generator=generator)
                for name, t in base.items()
            }
            plain = encode_state_dict(state)
            honest = [keys[m][1] for m in (REQUESTER, *VALIDATORS, worker)]  # update_readers
            if worker == OMITS_X:
                blob = env.seal(plain, [k for k in honest if k != keys[X][1]], TASK)
            elif worker == HONEST:
                blob = env.seal(plain, honest, TASK)
            else:
                how = {BAD_WRAP_FOR_X: "flip", WRONG_KEY_FOR_X: "wrong"}.get(worker, "two_keys")
                blob = sealed_by_worker(plain, honest, TASK, keys[X][1], how)
            updates.append(Update(worker, put(store, blob), 100))
        yield Round(store, keys, tuple(updates), GlobalModel(initial), validation)


def test_an_update_not_addressed_to_x_is_rejected_by_x_and_y_alike(sealed: Round) -> None:
    at_x, at_y = sealed.judged_by(X), sealed.judged_by(Y)
    for judged in (at_x, at_y):
        assert judged.accuracies[0] is None and not judged.accepts[0]
        assert OMITS_X not in judged.unopenable
    assert sealed.verdicts(X, at_x)[0] == sealed.verdicts(Y, at_y)[0] == WorkerVerdict.REJECT


def test_an_update_whose_key_for_x_opens_nothing_is_unavailable_at_x_only(sealed: Round) -> None:
    at_x, at_y = sealed.judged_by(X), sealed.judged_by(Y)
    assert at_x.unopenable == {BAD_WRAP_FOR_X, WRONG_KEY_FOR_X, TWO_KEYS_FOR_X}
    assert at_y.unopenable == frozenset()
    x_verdicts, y_verdicts = sealed.verdicts(X, at_x), sealed.verdicts(Y, at_y)
    assert x_verdicts[1:4] == (WorkerVerdict.UNAVAILABLE,) * 3
    # Y opens and measures them as it does the honest update, and accepts all four
    assert all(a is not None for a in at_y.accuracies[1:])
    assert y_verdicts[1:] == (WorkerVerdict.ACCEPT,) * 4
    # X's judgement of the honest update is unchanged by the others'
    assert at_x.accuracies[4] == at_y.accuracies[4] is not None
    assert x_verdicts[4] == WorkerVerdict.ACCEPT


def test_the_second_key_opens_the_content_to_no_model_and_the_commitment_refuses_it(
    sealed: Round,
) -> None:
    """The attack is real: AES-GCM alone accepts X's key and hands X bytes that are not
    the model Y scored (without the commitment X would REJECT it alone). The envelope
    refuses that key before decrypting."""
    blob = learning.read_blob(sealed.store, sealed.updates[3].cid, 1 << 24)
    parsed = env._parse(blob, env.MAX_PLAINTEXT_SIZE)
    private = X25519PrivateKey.from_private_bytes(sealed.keys[X][0])
    shared = private.exchange(X25519PublicKey.from_public_bytes(parsed.ephemeral_public))
    wrap = AESGCM(env._wrapping_key(shared, parsed.ephemeral_public, sealed.keys[X][1]))
    second = wrap.decrypt(env._WRAP_NONCE, parsed.entries[sealed.keys[X][1]], parsed.ephemeral_public)
    at_x = AESGCM(second).decrypt(parsed.content_nonce, parsed.ciphertext, parsed.header + TASK)
    at_y = env.open_envelope(blob, sealed.keys[Y][0], TASK)
    assert at_x != at_y and len(at_x) == len(at_y)
    with pytest.raises(ProtocolError):
        decode_state_dict(at_x, ModelSpec.of(build_model("mnist_2nn")))
    with pytest.raises(EnvelopeError, match="not the key its header commits to"):
        env.open_envelope(blob, sealed.keys[X][0], TASK)
    with pytest.raises(EnvelopeError, match="does not match the key commitment"):
        env.open_with_content_key(blob, second, TASK)


def test_without_readers_an_update_not_addressed_to_us_is_unopenable(sealed: Round) -> None:
    """No address check (`readers` None, as a bench calls it): X cannot open the update
    left out for it, and nothing shows the others see that too, so it is unopenable to X
    like any other failure to open it."""
    crypto = learning.TaskCrypto(sealed.keys[X][0], TASK)
    book = ReleasedUpdates(TASK, "mnist_2nn", sealed.store, crypto)
    action = StartEvaluation(1, WORKERS[:1], sealed.updates[:1], "unused", sealed.base)
    judged = judge_round(book, action, sealed.validation, 0, RewardPolicy.TOPK, LOG)
    assert judged.accuracies == (None,) and judged.unopenable == {OMITS_X}


def test_settled_the_validator_that_could_not_open_is_not_slashed(sealed: Round) -> None:
    """The three manifests settled (`protocol.rewards.settle_round`, the contract's
    reference): X's UNAVAILABLE contradicts no majority, so X is not slashed; had X
    REJECTED the updates it could not open, against Y's and Z's ACCEPT, it would be."""
    members = []
    for validator in VALIDATORS:
        judged = sealed.judged_by(validator)
        verdicts = sealed.verdicts(validator, judged)
        members.append(CommitteeMember(True, judged.scores, verdicts, 950_000, ETHER))
    settled = settle_round(POLICY, [ETHER] * len(WORKERS), members)
    assert settled.rejected == (True, False, False, False, False)  # left out for X
    assert settled.accepted == (False, True, True, True, True)
    assert settled.validator_slashes == (0, 0, 0)
    assert settled.agreed == (True, True, True)

    rejecting = dataclasses.replace(
        members[0],
        verdicts=tuple(
            WorkerVerdict.REJECT if v == WorkerVerdict.UNAVAILABLE else v
            for v in members[0].verdicts
        ),
    )
    slashed = settle_round(POLICY, [ETHER] * len(WORKERS), [rejecting, *members[1:]])
    assert slashed.validator_slashes[0] > 0 and not slashed.agreed[0]


@pytest.mark.parametrize("with_readers", [True, False])
def test_an_envelope_whose_header_does_not_parse_is_rejected_not_unavailable(
    sealed: Round, with_readers: bool
) -> None:
    """Every validator reads the same malformed header: a fault all can see, so REJECT."""
    honest = sealed.updates[4]
    blob = b"XXXX" + learning.read_blob(sealed.store, honest.cid, 1 << 24)[4:]  # bad magic
    garbled = Update(HONEST, put(sealed.store, blob), 100)
    crypto = learning.TaskCrypto(sealed.keys[X][0], TASK)
    book = ReleasedUpdates(TASK, "mnist_2nn", sealed.store, crypto)
    action = StartEvaluation(1, (HONEST,), (garbled,), "unused", sealed.base)
    readers = [sealed.keys[m][1] for m in (REQUESTER, *VALIDATORS)] if with_readers else None
    judged = judge_round(
        book, action, sealed.validation, 0, RewardPolicy.TOPK, LOG, None, readers
    )
    assert judged.accuracies == (None,) and judged.accepts == (False,)
    assert judged.unopenable == frozenset()


def test_an_update_the_round_cannot_judge_is_unavailable_neither_paid_nor_slashed(
    sealed: Round,
) -> None:
    """`protocol.work.UNDECIDED` (no update shows work measurably): every validator
    computes it alike and marks the update UNAVAILABLE, so settlement neither averages,
    pays nor slashes it, and no validator is slashed over it."""
    members = []
    for validator in VALIDATORS:
        judged = dataclasses.replace(sealed.judged_by(validator), undecided=frozenset({HONEST}))
        assert HONEST in evaluation_done(1, judged, SALT).unopenable
        verdicts = sealed.verdicts(validator, judged)
        assert verdicts[4] == WorkerVerdict.UNAVAILABLE
        members.append(CommitteeMember(True, judged.scores, verdicts, 950_000, ETHER))
    settled = settle_round(POLICY, [ETHER] * len(WORKERS), members)
    assert not settled.accepted[4] and not settled.rejected[4]
    assert settled.worker_slashes[4] == 0 and settled.worker_payouts[4] == 0
    assert settled.validator_slashes == (0, 0, 0)
