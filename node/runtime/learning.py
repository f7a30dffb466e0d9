"""The learning jobs of a node: data loading, training, evaluation, aggregation.

Synchronous functions over local blobs; the driver runs them in a worker thread
(`trio.to_thread.run_sync`) so gossip and the chain keep flowing. Every peer blob goes
through `open_envelope` (authenticated), `decode_state_dict` against the task's model
spec (size-bounded, no pickle) and `check_finite` before it is used.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from node.attacks.spec import parse_attack_spec
from node.attacks.worker import attacked_update
from node.attacks.worker import claimed_samples as attacked_claim
from node.blocks import BlockStore, decode_file_node
from node.blocks.unixfs import is_raw
from node.config import BehaviourConfig, TrainingConfig
from node.datasets import load_validation_set as load_validation_set  # the driver calls learning.*
from node.datasets import load_worker_shard as load_worker_shard
from node.models import build_model, train_config
from protocol import verdict as verdicts
from protocol import work as paid_work
from protocol.aggregation.rule import AggregationRule
from protocol.codec import ModelSpec, check_finite, decode_state_dict, encode_state_dict
from protocol.contribution import leave_one_out
from protocol.data import MAX_DATASET_WIRE_BYTES, Dataset, to_tensors
from protocol.data import decode_dataset as decode_dataset  # the wire codec, for the jobs
from protocol.data import encode_dataset as encode_dataset
from protocol.envelope import envelope_size, open_envelope, seal
from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE
from protocol.limits import MAX_DAG_DEPTH, MAX_RECIPIENTS
from protocol.rewards import RewardPolicy
from protocol.state.records import GlobalModel, Update
from protocol.training import Metrics, TrainProgress, evaluate, train_local

logger = logging.getLogger(__name__)

KEPT_GLOBAL_MODELS = 3

StateDict = dict[str, torch.Tensor]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory in the heap for reuse: a forward pass of
    mnist_cnn over 1,000 samples allocates ~500 MB in blocks too large for the heap, each
    mmapped and unmapped again, and the kernel zeroing those pages on the next pass is ~40%
    of its CPU. The arithmetic is unchanged (scores stay bit for bit); the process keeps its
    peak heap. False where there is no glibc mallopt (nothing changed)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


class BlobError(ProtocolError):
    """A blob in the local store is missing, malformed or not addressed to us."""


# --- blobs ------------------------------------------------------------------------------


def read_blob(store: BlockStore, cid: str, max_size: int, depth: int = 0) -> bytes:
    """The bytes of the UnixFS file `cid` from the local store (every block verified)."""
    data = store.get(cid)
    if is_raw(cid):
        return data
    if depth >= MAX_DAG_DEPTH:
        raise BlobError(f"blob {cid} nests deeper than {MAX_DAG_DEPTH} levels")
    node = decode_file_node(data)
    if node.file_size > max_size:
        raise BlobError(f"blob {cid} is {node.file_size} bytes, over the {max_size}-byte bound")
    return b"".join(read_blob(store, link.cid, max_size, depth + 1) for link in node.links)


def max_update_size(spec: ModelSpec) -> int:
    return envelope_size(spec.max_encoded_size(), MAX_RECIPIENTS)


def max_validation_size() -> int:
    return envelope_size(MAX_DATASET_WIRE_BYTES, MAX_RECIPIENTS)


# --- datasets ---------------------------------------------------------------------------


# --- models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskCrypto:
    """What sealing and opening a task's blobs needs: our key and the associated data."""

    private_key: bytes
    associated_data: bytes  # the task address: a blob cannot be replayed into another task

    def seal(self, plaintext: bytes, recipients: Sequence[bytes]) -> bytes:
        return seal(plaintext, recipients, self.associated_data)

    def open(self, envelope: bytes, max_size: int) -> bytes:
        return open_envelope(envelope, self.private_key, self.associated_data, max_size)


class ModelBook:
    """Builds models from blobs in the local store and keeps the latest global model."""

    def __init__(
        self,
        arch: str,
        store: BlockStore,
        crypto: TaskCrypto,
        rule: AggregationRule | None = None,
    ) -> None:
        self.arch = arch
        self.spec = ModelSpec.of(build_model(arch))
        self.store = store
        self.crypto = crypto
        self.rule = rule or AggregationRule()  # the task's: global models and leave-one-out
        self._lock = threading.Lock()
        self._cached: tuple[tuple[GlobalModel, AggregationRule], StateDict] | None = None
        # the task rule's global models by round, the last few: the WORK policy measures
        # an update against the previous round's global step
        self._by_round: dict[int, StateDict] = {}

    def initial(self, cid: str) -> StateDict:
        """The task's initial model: a plain (public) codec blob."""
        blob = read_blob(self.store, cid, self.spec.max_encoded_size())
        state = decode_state_dict(blob, self.spec)
        check_finite(state)
        return state

    def update(self, cid: str) -> StateDict:
        """A worker's sealed update, opened and checked (raises ProtocolError when bad)."""
        envelope = read_blob(self.store, cid, max_update_size(self.spec))
        state = decode_state_dict(self.crypto.open(envelope, self.spec.max_encoded_size()), self.spec)
        check_finite(state)
        return state

    def global_state(self, model: GlobalModel, rule: AggregationRule | None = None) -> StateDict:
        """The global model `model` describes: its updates combined by `rule` (default: the
        task's), or the initial model."""
        rule = rule or self.rule
        with self._lock:
            if self._cached is not None and self._cached[0] == (model, rule):
                return self._cached[1]
        if not model.updates:
            state = self.initial(model.initial_cid)
        else:
            states = [self.update(u.cid) for u in model.updates]
            state = rule(states, [u.n_samples for u in model.updates])
        if rule == self.rule and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "global model after round %d (%d updates) built in %s: sha256 %s",
                model.after_round, len(model.updates), self.store.root, state_digest(state),
            )
        with self._lock:
            self._cached = ((model, rule), state)
            if rule == self.rule:
                self._by_round[model.after_round] = state
                for stale in sorted(self._by_round)[:-KEPT_GLOBAL_MODELS]:
                    del self._by_round[stale]
        return state

    def before(self, state: StateDict) -> StateDict | None:
        """The global model of the round before the one whose global model is `state` (the
        object `global_state` returned), when this book built both; else None."""
        with self._lock:
            rounds = [r for r, known in self._by_round.items() if known is state]
            if not rounds:
                return None
            earlier = [r for r in self._by_round if r < rounds[0]]
            return self._by_round[max(earlier)] if earlier else None

    def module(self, state: StateDict) -> torch.nn.Module:
        model = build_model(self.arch)
        model.load_state_dict(state)
        return model


def state_digest(state: StateDict) -> str:
    """SHA-256 of a model's encoding: equal for two models only when every tensor is equal
    bit for bit."""
    return hashlib.sha256(encode_state_dict(state)).hexdigest()


class MeasuredModels:
    """`protocol.work.measure` of models on validation sets, by the bits of both: a
    validator measures the aggregate of the updates it accepts, then the same model again
    as the round's global model and as the next round's base; one forward pass serves the
    three. Shared by the job threads."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._by_key: dict[tuple[str, str], paid_work.Measured] = {}
        self._lock = threading.Lock()

    def measure(
        self, book: ModelBook, state: StateDict, images: torch.Tensor, labels: torch.Tensor
    ) -> paid_work.Measured:
        key = (state_digest(state), _data_digest(images, labels))
        with self._lock:
            known = self._by_key.get(key)
        if known is not None:
            return known
        with torch.no_grad():
            measured = paid_work.measure(book.module(state), images, labels)
        with self._lock:
            self._by_key[key] = measured
            for stale in list(self._by_key)[: -self._keep]:
                del self._by_key[stale]
        return measured


def _data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (images, labels):
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def initial_model_blob(arch: str, seed: int) -> bytes:
    return encode_state_dict(build_model(arch, seed=seed).state_dict())


# --- jobs -------------------------------------------------------------------------------


def load_optimizer_code() -> None:
    """Import what torch.optim's first optimizer imports (torch._dynamo: ~1.4 CPU s and
    ~70 MB; 4 s of a worker's first round when five workers paid it at once on two cores,
    `bench.round_profile`) and its first step. Training's imports wait for it when it has
    not finished."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    parameter.grad = torch.zeros(1)
    optimizer.step()


def train_update(
    book: ModelBook,
    base: StateDict,
    shard: Dataset,
    training: TrainingConfig,
    behaviour: BehaviourConfig,
    seed: int,
    progress: Callable[[TrainProgress], None] | None = None,
) -> StateDict:
    """Local training from `base` as the behaviour says: honest, unless a scenario names a
    worker attack (`node.attacks`), which may change the data trained on or what is sent."""

    def train(data: Dataset) -> dict[str, np.ndarray]:
        images, targets = to_tensors(data)
        model = book.module(base)
        train_local(model, images, targets, train_config(training, seed), progress)
        return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}

    attack = parse_attack_spec(behaviour.worker)
    plain = {name: t.detach().numpy() for name, t in base.items()}
    state = attacked_update(attack, plain, shard, train, np.random.default_rng(seed))
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in state.items()}


def claimed_samples(behaviour: BehaviourConfig, true_samples: int) -> int:
    """The sample count a worker reports with its update: its true one unless it inflates it."""
    return attacked_claim(parse_attack_spec(behaviour.worker), true_samples)


@dataclass(frozen=True)
class Evaluation(verdicts.Verdict):
    """A validator's verdict on one round, in manifest order, with what it measured."""

    accuracies: tuple[float | None, ...]  # per worker; None when unusable
    # workers whose update the round cannot judge (`protocol.work.UNDECIDED`): marked
    # UNAVAILABLE, so neither averaged, paid nor slashed
    undecided: frozenset[bytes] = frozenset()

    @classmethod
    def of(
        cls, verdict: verdicts.Verdict, accuracies: Sequence[float | None],
        undecided: frozenset[bytes] = frozenset(),
    ) -> Evaluation:
        return cls(
            workers=verdict.workers,
            scores=verdict.scores,
            accepts=verdict.accepts,
            global_accuracy=verdict.global_accuracy,
            accuracies=tuple(accuracies),
            undecided=undecided,
        )


def evaluate_round(
    book: ModelBook,
    workers: Sequence[bytes],
    candidates: Sequence[Update],
    base: StateDict,
    validation: Dataset,
    qualification_threshold: int,
    reward_policy: RewardPolicy = RewardPolicy.CONTRIBUTION,
    measured_ahead: Mapping[str, Metrics | paid_work.Measured] | None = None,
    measured_models: MeasuredModels | None = None,
) -> Evaluation:
    """Measure every worker's update on the validation set and the aggregate of the
    qualified ones under the task's rule (``book.rule``); under the WORK policy also each
    update's improvement over `base` (`protocol.work`), otherwise the leave-one-out losses
    of the qualified ones. The verdict itself is `protocol.verdict`'s or `protocol.work`'s.
    `measured_ahead`: updates (by CID) measured on this validation set already, as here
    (`paid_work.measure` under the WORK policy, else `evaluate`); `measured_models`: where
    the WORK policy finds and keeps its measures of the base and of the aggregate."""
    images, labels = to_tensors(validation)
    by_worker = {u.worker: u for u in candidates}
    accuracies: list[float | None] = []
    losses: dict[int, float] = {}
    by_class: dict[int, paid_work.Measured] = {}  # WORK: with per-class losses, one pass
    states: dict[int, StateDict] = {}
    for index, worker in enumerate(workers):
        update = by_worker.get(worker)
        if update is None:
            accuracies.append(None)
            continue
        try:
            states[index] = book.update(update.cid)
        except ProtocolError as problem:
            logger.warning("update of 0x%s rejected: %s", worker[:4].hex(), problem)
            accuracies.append(None)
            continue
        module = book.module(states[index])
        found = measured_ahead.get(update.cid) if measured_ahead is not None else None
        if reward_policy == RewardPolicy.WORK:
            if not isinstance(found, paid_work.Measured):
                found = paid_work.measure(module, images, labels)
            by_class[index] = found
            accuracy, losses[index] = by_class[index].accuracy, by_class[index].loss
        else:
            metrics = found if isinstance(found, Metrics) else evaluate(module, images, labels)
            accuracy, losses[index] = metrics.accuracy, metrics.loss
        accuracies.append(accuracy)
    if reward_policy == RewardPolicy.WORK:
        counts = [by_worker[w].n_samples if w in by_worker else 0 for w in workers]
        return _judge_work(
            book, workers, counts, states, accuracies, by_class, base, validation,
            qualification_threshold, measured_models or MeasuredModels(),
        )  # fmt: skip
    rule = book.rule
    qualified = verdicts.qualified_indices(accuracies, qualification_threshold)

    contributions: list[float] = []
    if qualified:
        chosen = [states[i] for i in qualified]
        counts = [by_worker[workers[i]].n_samples for i in qualified]
        # the aggregate of all of them is both leave-one-out's reference and the round's
        # global model: built and measured once (a forward pass over the validation set is
        # most of a validator's CPU), the very same tensors and metrics serving both
        result = rule(chosen, counts)
        measured = evaluate(book.module(result), images, labels)

        def aggregate(part: Sequence[Mapping[str, torch.Tensor]], n: Sequence[int]) -> StateDict:
            return result if part is chosen else rule(part, n)

        def loss(state: Mapping[str, torch.Tensor]) -> float:
            if state is result:
                return measured.loss
            return evaluate(book.module(dict(state)), images, labels).loss

        contributions = leave_one_out(chosen, counts, loss, aggregate, baseline=base)
        global_accuracy = measured.accuracy
    else:
        global_accuracy = evaluate(book.module(base), images, labels).accuracy
    verdict = verdicts.verdict(
        workers, accuracies, qualification_threshold, contributions, global_accuracy
    )
    return Evaluation.of(verdict, accuracies)


def _judge_work(
    book: ModelBook,
    workers: Sequence[bytes],
    counts: Sequence[int],
    states: Mapping[int, StateDict],
    accuracies: Sequence[float | None],
    measured: Mapping[int, paid_work.Measured],
    base: StateDict,
    validation: Dataset,
    qualification_threshold: int,
    measured_models: MeasuredModels,
) -> Evaluation:
    """The WORK policy's verdict (`protocol.work.judge`): each usable update's delta from
    `base`, its validation gains (a step of it, measured only when `judge` asks: a round
    without agreeing updates; the whole of it, from `measured`), its per-class loss rises over the base,
    and the previous round's global step; the accuracy of the aggregate of those that
    show work."""
    images, labels = to_tensors(validation)
    at_base = measured_models.measure(book, base, images, labels)
    base_loss = at_base.loss

    def gain(index: int) -> int | None:
        if index not in states:
            return None
        stepped = book.module(paid_work.stepped(states[index], base))
        return paid_work.improvement(base_loss, evaluate(stepped, images, labels).loss)

    deltas = [
        verdicts.flat_delta(states[i], base) if i in states else None for i in range(len(workers))
    ]
    previous = book.before(base)
    previous_step = None if previous is None else verdicts.flat_delta(base, previous)
    whole = [
        paid_work.improvement(base_loss, measured[i].loss if i in measured else None)
        for i in range(len(workers))
    ]
    harms = [
        paid_work.class_harm(at_base, measured[i]) if i in measured else None
        for i in range(len(workers))
    ]
    judgements = paid_work.judge(
        deltas, gain, previous_step, whole_gains=whole, harms=harms, claims=counts
    )
    for worker, judgement in zip(workers, judgements, strict=True):
        if judgement.problem is not None and judgement is not paid_work.UNUSABLE:
            logger.info("update of 0x%s shows no work: %s", worker[:4].hex(), judgement.problem)
        elif judgement.undecided:
            logger.info(
                "update of 0x%s: %s; marked unavailable, neither averaged, paid nor slashed",
                worker[:4].hex(), judgement.doubt or "no update of the round shows work measurably",
            )
        elif judgement.shows_work:
            logger.info("update of 0x%s shows work: quality %d", worker[:4].hex(), judgement.quality)
    working = paid_work.working_indices(accuracies, judgements, qualification_threshold)
    result = book.rule([states[i] for i in working], [counts[i] for i in working]) if working else base
    verdict = paid_work.work_verdict(
        workers, accuracies, judgements, qualification_threshold,
        measured_models.measure(book, result, images, labels).accuracy,
    )  # fmt: skip
    undecided = frozenset(w for w, j in zip(workers, judgements, strict=True) if j.undecided)
    return Evaluation.of(verdict, accuracies, undecided)


def lie_about(evaluation: Evaluation) -> Evaluation:
    """The lying validator of the scenarios: scores turned upside down, accepts flipped."""
    return Evaluation(
        workers=evaluation.workers,
        scores=tuple(SCALE // 10 - s for s in evaluation.scores),
        accepts=tuple(not a for a in evaluation.accepts),
        global_accuracy=evaluation.global_accuracy,
        accuracies=evaluation.accuracies,
    )
