"""JobEffects: the machine's jobs (sortition, training, a worker's key release, evaluation,
aggregation, the requester's validation set and final model), each in a worker thread so
gossip and the chain keep flowing; the driver runs them one at a time, in the order they
were asked.

A worker seals its update for the requester, the validators and itself only; the key
release (`SealKeyRelease`) unwraps the update's content key from that envelope and seals it
for every member, and `ReleasedUpdates` opens other workers' updates with such keys."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
import trio

from node.attacks.validator import committed_columns
from node.blocks import BlockExchange, BlockStore
from node.chain import TaskParams
from node.config import NodeConfig
from node.models import data_problem
from node.runtime import learning, timing
from node.runtime.background import LowPriorityThread
from node.runtime.chainside import ChainAccess, address_bytes, checksum
from node.runtime.effects import NodeStatus
from node.runtime.effects_chain import task_problem
from node.runtime.keys import NodeKeys
from protocol import verdict as verdicts
from protocol import work as paid_work
from protocol.aggregation.rule import AggregationRule
from protocol.codec import check_finite, decode_state_dict, encode_state_dict
from protocol.data import Dataset
from protocol.envelope import (
    content_key_of,
    missing_recipients,
    open_envelope,
    open_with_content_key,
    seal,
)
from protocol.errors import DatasetError, EnvelopeError, ProtocolError, VRFError
from protocol.fixedpoint import SCALE
from protocol.messages import key_release_context
from protocol.rewards import RewardPolicy
from protocol.sortition import (
    RegisteredKey,
    committee_proof,
    verify_committee_member,
    verify_unseated,
)
from protocol.state import events as ev
from protocol.state.actions import (
    Action,
    Aggregate,
    CancelTrainingAhead,
    DrawSortition,
    MeasureUpdate,
    PrepareTaskData,
    SaveFinalModel,
    SealKeyRelease,
    StartEvaluation,
    StartTraining,
    TrainAhead,
)
from protocol.state.records import GlobalModel, Job, TaskTerms, Update
from protocol.training import Metrics, evaluate

T = TypeVar("T")

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0
JOB_OF = {
    DrawSortition: Job.SORTITION,
    StartTraining: Job.TRAINING,
    SealKeyRelease: Job.KEY_RELEASE,
    StartEvaluation: Job.EVALUATION,
    Aggregate: Job.AGGREGATION,
    PrepareTaskData: Job.TASK_DATA,
}


CONTENT_KEY_SIZE = 32


class TrainingCancelled(Exception):
    """The machine dropped the update being trained ahead (CancelTrainingAhead)."""


class ReleasedUpdates(learning.ModelBook):
    """A model book that also opens updates we are no recipient of, with the content keys
    their workers released (`Update.key_release`) once the round's training had closed.

    The released keys of a global model's updates are learnt from the model itself (every
    action that names a model carries them), so they survive a restart with the machine."""

    def __init__(self, task: bytes, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task
        self._released: dict[str, tuple[bytes, bytes]] = {}  # cid -> (context, sealed key)
        # One build at a time: a second caller (the evaluation, while the background job
        # builds the same base) waits for the first and takes its cached result.
        self._building = threading.RLock()
        # Updates opened by the last evaluation, kept until the round's global model is
        # built from them (`keep_opened`, `drop_opened`): one round's updates at most.
        self._opened: dict[str, learning.StateDict] | None = None

    def keep_opened(self, opened: Mapping[str, learning.StateDict] | None = None) -> None:
        """From now on keep each update opened, so the copy check, the evaluation and the
        round's global model open it once; `opened`: updates opened already."""
        self._opened = dict(opened or {})

    def drop_opened(self) -> None:
        self._opened = None

    def global_state(self, model: GlobalModel, rule: AggregationRule | None = None) -> learning.StateDict:
        with self._building:
            return self._global_state(model, rule)

    def _global_state(self, model: GlobalModel, rule: AggregationRule | None) -> learning.StateDict:
        for update in model.updates:
            if update.key_release is not None:
                context = key_release_context(
                    self.task, model.after_round, update.worker, update.cid
                )
                self._released[update.cid] = (context, update.key_release)
        try:
            return super().global_state(model, rule)
        except ProtocolError:
            if not model.updates:
                raise
        # A worker whose update was accepted can still release a key that opens nothing
        # (to us, or to everyone): average without it rather than never train again.
        usable = []
        for update in model.updates:
            try:
                self.update(update.cid)
                usable.append(update)
            except ProtocolError as problem:
                logger.warning(
                    "round %d: the update of 0x%s cannot be opened (%s); left out of our "
                    "average", model.after_round, update.worker[:4].hex(), problem,
                )
        if not usable:
            raise ProtocolError(f"no update of round {model.after_round} can be opened")
        return super().global_state(dataclasses.replace(model, updates=tuple(usable)), rule)

    def update(self, cid: str) -> learning.StateDict:
        opened = self._opened
        if opened is not None and cid in opened:
            return opened[cid]
        state = self._open(cid)
        if opened is not None:
            opened[cid] = state
        return state

    def _open(self, cid: str) -> learning.StateDict:
        released = self._released.get(cid)
        if released is None:  # one we are a recipient of
            return super().update(cid)
        context, sealed_key = released
        content_key = open_envelope(
            sealed_key, self.crypto.private_key, context, max_size=CONTENT_KEY_SIZE
        )
        envelope = learning.read_blob(self.store, cid, learning.max_update_size(self.spec))
        plaintext = open_with_content_key(
            envelope, content_key, self.crypto.associated_data, self.spec.max_encoded_size()
        )
        state = decode_state_dict(plaintext, self.spec)
        check_finite(state)
        return state


def copied_updates(
    book: learning.ModelBook,
    workers: Sequence[bytes],
    candidates: Sequence[Update],
    base: learning.StateDict,
) -> dict[bytes, bytes]:
    """The candidates that copy an update submitted earlier on chain (`workers` is the
    on-chain order): copier -> the worker it copied (`protocol.verdict.near_duplicates`).
    An update that cannot be opened copies nothing; evaluation rejects it anyway."""
    by_worker = {u.worker: u for u in candidates}
    deltas: list[torch.Tensor | None] = []
    for worker in workers:
        update = by_worker.get(worker)
        try:
            state = None if update is None else book.update(update.cid)
        except ProtocolError:
            state = None
        deltas.append(None if state is None else verdicts.flat_delta(state, base))
    return {
        workers[copy]: workers[original]
        for copy, original in verdicts.near_duplicates(deltas).items()
    }


@dataclass
class MeasuredAhead:
    """The updates of one round opened and measured before its evaluation started
    (MeasureUpdate), for the evaluation to take. Written by the background thread, read by
    the evaluation's: each entry is set once, whole."""

    round: int = 0
    evaluating: bool = False  # the round's evaluation started: measure nothing more
    opened: dict[str, learning.StateDict] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Metrics | paid_work.Measured] = dataclasses.field(default_factory=dict)

    def of_round(self, round: int) -> MeasuredAhead:
        """This, moved on to `round` (what an earlier round measured is dropped)."""
        if round != self.round:
            self.round, self.evaluating = round, False
            self.opened, self.metrics = {}, {}
        return self


def measure_ahead(
    book: ReleasedUpdates,
    cid: str,
    validation: Dataset,
    reward_policy: RewardPolicy,
    ahead: MeasuredAhead,
) -> None:
    """Open the update `cid` and measure it on `validation` as `learning.evaluate_round`
    does under `reward_policy`, into `ahead` (not the WORK policy's step of it from the
    base: only a round without agreeing updates measures that); nothing once the round's
    evaluation started, even in the middle of the pass (it measures what is left itself),
    nor for an update that does not open (the evaluation rejects it and says why)."""
    if ahead.evaluating:
        return
    try:
        state = book.update(cid)
    except ProtocolError:
        return
    images, labels = learning.to_tensors(validation)
    measure = paid_work.measure if reward_policy == RewardPolicy.WORK else evaluate
    try:
        with torch.no_grad():
            metrics = measure(_UntilEvaluating(book.module(state), ahead), images, labels)
    except _EvaluationStarted:
        return
    ahead.opened[cid] = state
    ahead.metrics[cid] = metrics


class _EvaluationStarted(Exception):
    """The round's evaluation started while an update was being measured ahead."""


class _UntilEvaluating(torch.nn.Module):
    """An update's model that stops a measure ahead between two batches once the round's
    evaluation has started: the evaluation measures that update itself then, and the
    rest of the pass would be done twice. The batches it does run are the model's own."""

    def __init__(self, model: torch.nn.Module, ahead: MeasuredAhead) -> None:
        super().__init__()
        self.model = model
        self.ahead = ahead

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.ahead.evaluating:
            raise _EvaluationStarted
        result: torch.Tensor = self.model(images)
        return result


@dataclass(frozen=True)
class RoundJudgement(learning.Evaluation):
    """A validator's evaluation of a round, and the workers whose update it fetched but
    could not open for a reason only it can see (scored as unusable; the machine marks
    them UNAVAILABLE, `EvaluationDone.unopenable`)."""

    unopenable: frozenset[bytes] = frozenset()


def unreadable_updates(
    book: ReleasedUpdates,
    candidates: Sequence[Update],
    readers: Sequence[bytes] | None,
    round: int,
    log: logging.LoggerAdapter[logging.Logger],
) -> tuple[set[bytes], set[bytes]]:
    """(misaddressed, unopenable) workers among `candidates`, checked in this order.

    Misaddressed: its envelope's header, the same bytes for every validator, does not list
    every one of `readers` (the requester's and the validators' keys, which every honest
    worker seals for: `protocol.envelope.missing_recipients`). Every validator that fetched
    it sees that alike, so all of them reject it: a validator left out, which cannot open
    it, then agrees with the others instead of being alone to reject it.

    Unopenable: addressed to us, but it does not open with our key (the wrapped key for us
    fails authentication, or unwraps a key that is not the content's). Nobody else can
    check our entry, so we cannot show the worker wrong: we mark it UNAVAILABLE, neither
    paid nor slashed on our word, as an update we could not fetch. A ciphertext tampered
    for everyone is then UNAVAILABLE at every validator: unpaid, as a withheld update.

    Neither: a header that does not parse or a payload that opens but is bad (shapes,
    non-finite values, size) is the same for every validator, and the evaluation rejects
    it. `readers` None: no address check, so an update not addressed to us is unopenable
    (benches and tests that seal for one key)."""
    misaddressed: set[bytes] = set()
    unopenable: set[bytes] = set()
    max_plaintext = book.spec.max_encoded_size()
    for update in candidates:
        try:
            envelope = learning.read_blob(book.store, update.cid, learning.max_update_size(book.spec))
            # the header is parsed even without readers: one that does not parse is not ours
            missing = missing_recipients(envelope, readers or (), max_plaintext)
        except ProtocolError:
            continue  # the evaluation fails to open it the same way, and rejects it
        if missing:
            misaddressed.add(update.worker)
            log.warning(
                "round %d: the update of 0x%s is not addressed to %d of the task's %d readers "
                "(X25519 keys %s); rejected", round, update.worker[:4].hex(), len(missing),
                len(set(readers or ())), ", ".join(key[:4].hex() for key in missing),
            )
            continue
        try:
            book.update(update.cid)
        except EnvelopeError as problem:
            unopenable.add(update.worker)
            log.warning(
                "round %d: the update of 0x%s does not open with our key (%s); marked "
                "unavailable", round, update.worker[:4].hex(), problem,
            )
        except ProtocolError:
            pass  # opens, but a bad payload: the evaluation rejects it, as everyone does
    return misaddressed, unopenable


def evaluation_done(round: int, judged: RoundJudgement, salt: bytes) -> ev.EvaluationDone:
    """What the machine is told of a round's judgement: the manifest's columns, and the
    updates it marks UNAVAILABLE (in manifest order): those only we could not open, and
    those the round cannot judge (`protocol.work.UNDECIDED`)."""
    unavailable = judged.unopenable | judged.undecided
    return ev.EvaluationDone(
        round, judged.workers, judged.scores, judged.accepts, judged.global_accuracy, salt,
        tuple(w for w in judged.workers if w in unavailable),
    )


def judge_round(
    book: ReleasedUpdates,
    action: StartEvaluation,
    validation: Dataset,
    qualification_threshold: int,
    reward_policy: RewardPolicy,
    log: logging.LoggerAdapter[logging.Logger],
    ahead: MeasuredAhead | None = None,
    readers: Sequence[bytes] | None = None,
    measured_models: learning.MeasuredModels | None = None,
) -> RoundJudgement:
    """A validator's evaluation of a round: the address check (`unreadable_updates`,
    against `readers`), the copy check, then every update measured
    (`learning.evaluate_round`); each update is opened once and kept for the round's
    global model. `ahead`: the round's updates opened and measured already;
    `measured_models`: models measured on this validation set (the WORK policy's base and
    aggregate), kept from round to round."""
    book.keep_opened(ahead.opened if ahead is not None else None)
    with torch.no_grad():  # measuring only: no autograd graph for the forward passes
        with timing.span(log, "base", action.round):
            base = book.global_state(action.base)
        with timing.span(log, "open", action.round, updates=len(action.candidates)):
            misaddressed, unopenable = unreadable_updates(
                book, action.candidates, readers, action.round, log
            )
            # judged as updates that could not be used: scored 0 and not accepted
            readable = [
                u for u in action.candidates if u.worker not in misaddressed | unopenable
            ]
            copies = copied_updates(book, action.workers, readable, base)
        for copy, original in copies.items():
            log.warning(
                "round %d: the update of 0x%s copies that of 0x%s, submitted earlier; "
                "rejected", action.round, copy[:4].hex(), original[:4].hex(),
            )
        # a copy is judged as an update that could not be used: rejected, scored 0
        candidates = [u for u in readable if u.worker not in copies]
        with timing.span(log, "score", action.round):
            evaluation = learning.evaluate_round(
                book, action.workers, candidates, base, validation, qualification_threshold,
                reward_policy, measured_ahead=ahead.metrics if ahead is not None else None,
                measured_models=measured_models,
            )
    return RoundJudgement(
        **{f.name: getattr(evaluation, f.name) for f in dataclasses.fields(evaluation)},
        unopenable=frozenset(unopenable),
    )


def _aggregated(updates: Sequence[Update]) -> tuple[tuple[str, int], ...]:
    """What an aggregate is built from, in order (a key release changes nothing in it)."""
    return tuple((u.cid, u.n_samples) for u in updates)


@dataclass(frozen=True)
class TaskWork:
    """What the jobs of the followed task need: its address, parameters and model book."""

    task: str
    params: TaskParams
    book: ReleasedUpdates


class LearningJobs:
    """JobEffects with torch on this machine's CPU."""

    def __init__(
        self,
        config: NodeConfig,
        keys: NodeKeys,
        chain: ChainAccess,
        store: BlockStore,
        exchange: BlockExchange,
        recipients: Callable[[], Awaitable[list[bytes]]],
        status: NodeStatus,
        log: logging.LoggerAdapter[logging.Logger],
        members: Callable[[], Awaitable[list[bytes]]] | None = None,
        copied_update: Callable[[int], Awaitable[str]] | None = None,
    ) -> None:
        """`recipients`: X25519 keys of who may read our update while training is open
        (the requester, the validators, us); `members`: of every member of the task, who
        may read a released key (default: `recipients`); `copied_update`: the copycat
        scenario's source, another worker's update CID of a round."""
        self.config = config
        self.keys = keys
        self.me = keys.address_bytes
        self.chain = chain
        self.client = chain.client
        self.store = store
        self.exchange = exchange
        self.recipients = recipients
        self.members = members or recipients
        self.copied_update = copied_update
        self.status = status
        self.log = log
        self.work: TaskWork | None = None  # None until FollowTask
        self.background = LowPriorityThread()
        # Training ahead runs at the node's own priority, not the background's: it becomes
        # the round's training when the round opens, and at nice +10 on a loaded machine it
        # lost the cores to other users' work (bench.round_profile: the localnet's share
        # fell from 1.8 to 1.45 of 2 cores, its rounds took longer than without it). A thread
        # of its own all the same: waiting on it can be cancelled when the node stops.
        self.ahead_thread = LowPriorityThread(by=0, name="fl-node-ahead")
        self._cancel_ahead: dict[int, threading.Event] = {}  # for_round -> set to stop it
        # the accepted updates of our last evaluation and the accuracy it measured for
        # their aggregate: the round's global model when the chain agrees with us
        self._judged: tuple[tuple[tuple[str, int], ...], float] | None = None
        self.shard: Dataset | None = None
        self.validation: Dataset | None = None
        self.measured_ahead = MeasuredAhead()
        self.measured_models = learning.MeasuredModels()

    async def follow(self, task: bytes, terms: TaskTerms) -> str | None:
        address = checksum(task)
        params = await self.chain.run(self.client.task_params, address)
        problem = task_problem(
            terms.model_arch, terms.aggregator, params.model_spec_hash, self.config.trusted_models
        )
        if problem is not None:  # e.g. a model this node stopped trusting since it joined
            return problem
        crypto = learning.TaskCrypto(self.keys.encryption_private, task)
        rule = AggregationRule.parse(terms.aggregator)
        book = ReleasedUpdates(task, terms.model_arch, self.store, crypto, rule)
        self.work = TaskWork(address, params, book)
        if self.config.role == "worker":
            # now, while the task recruits, rather than once its first round has opened;
            # a failure is the training job's to report
            try:
                await self._shard(0)
            except (DatasetError, OSError) as problem:
                self.log.warning("loading our training data failed: %s", problem)
        return None

    def _work(self) -> TaskWork:
        if self.work is None:
            raise RuntimeError("a job came before the machine followed a task")
        return self.work

    def aside(self, action: Action) -> bool:
        """Whether `action` runs beside the other jobs: a validator's or the requester's own
        copy of the round's global model (at a lower priority), which nothing waits on
        before the next commit phase (a worker trains from its copy: it waits); and
        cancelling training ahead, which must not wait behind the job it stops; and
        measuring an update ahead of the evaluation (at the lower priority too)."""
        if isinstance(action, CancelTrainingAhead | MeasureUpdate):
            return True
        return isinstance(action, Aggregate) and self.config.role != "worker"

    def stop(self) -> None:
        """Stop any training ahead: the node is shutting down."""
        for cancel in list(self._cancel_ahead.values()):
            cancel.set()

    async def run(self, action: Action) -> ev.Event | None:
        handlers: dict[type, Callable[[Any], Awaitable[ev.Event | None]]] = {
            DrawSortition: self._draw_sortition,
            StartTraining: self._train,
            TrainAhead: self._train_ahead,
            CancelTrainingAhead: self._cancel_training_ahead,
            SealKeyRelease: self._seal_key_release,
            StartEvaluation: self._evaluate,
            MeasureUpdate: self._measure_update,
            Aggregate: self._aggregate,
            PrepareTaskData: self._prepare_task_data,
            SaveFinalModel: self._save_final_model,
        }
        try:
            round = getattr(action, "round", getattr(action, "for_round", 0))
            with timing.span(self.log, type(action).__name__, round):
                return await handlers[type(action)](action)
        except TrainingCancelled:
            assert isinstance(action, TrainAhead)
            self.log.info("round %d: training ahead cancelled", action.for_round)
            return ev.TrainedAhead(action.for_round, action.base, None, problem="cancelled")
        except Exception as problem:  # a job's failure is reported, never fatal
            if isinstance(problem, EnvelopeError):  # bytes that do not open: no fault of ours
                self.log.warning("job %s failed: %s", type(action).__name__, problem)
            else:
                self.log.exception("job %s failed", type(action).__name__)
            if isinstance(action, TrainAhead):
                return ev.TrainedAhead(action.for_round, action.base, None, problem=f"{problem}")
            job = JOB_OF.get(type(action))
            if job is None:
                return None
            return ev.JobFailed(getattr(action, "round", 0), job, f"{problem}")

    async def _draw_sortition(self, action: DrawSortition) -> ev.Event:
        work = self._work()
        info = await self.chain.run(self.client.round_info, work.task, action.round)
        stake = await self.chain.run(self.client.locked_deposit, work.task)
        key = self.keys.vrf_key
        ticket = await trio.to_thread.run_sync(committee_proof, key, action.seed, action.round)
        draw = (
            RegisteredKey(key.modulus, self.me), action.seed, action.round, ticket.proof,
            stake, info.total_stake, work.params.committee_size,
        )  # fmt: skip
        try:
            verify_committee_member(*draw)
        except VRFError as unseated:  # not selected (or no stake to be selected with)
            self.log.debug("round %d: %s", action.round, unseated)
            try:  # the check peers and the contract make before they count us unseated
                verify_unseated(*draw)
            except VRFError:
                return ev.SortitionDrawn(action.round, None)
            return ev.SortitionDrawn(action.round, None, unseated_proof=ticket.proof)
        return ev.SortitionDrawn(action.round, ticket.proof)

    def _progress_logger(
        self, round: int, cancel: threading.Event | None = None
    ) -> Callable[[Any], None]:
        last = [0.0]

        def report(progress: Any) -> None:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled()
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or progress.step == progress.total_steps:
                last[0] = now
                self.log.info(
                    "round %d: training step %d/%d, loss %.3f",
                    round, progress.step, progress.total_steps, progress.loss,
                )

        return report

    async def _train(self, action: StartTraining) -> ev.Event:
        if self.config.behaviour.worker.split(":")[0] == "copycat" and self.copied_update:
            # the cheapest copy left when updates are sealed: submit another worker's
            # sealed blob under our own name, without reading it
            cid = await self.copied_update(action.round)
            self.log.info("round %d: copycat submits %s as its own", action.round, cid)
            return ev.TrainingDone(action.round, cid, len(await self._shard(action.round)))
        cid, claimed = await self._trained(action.round, action.base, trio.to_thread.run_sync)
        return ev.TrainingDone(action.round, cid, claimed)

    async def _train_ahead(self, action: TrainAhead) -> ev.Event:
        """The next round's update, trained from the base the machine expects; the same
        work as `_train`, so a hit is the update `_train` would make."""
        cancel = self._cancel_ahead.setdefault(action.for_round, threading.Event())
        try:
            cid, claimed = await self._trained(
                action.for_round, action.base, self.ahead_thread.run, cancel
            )
        finally:
            self._cancel_ahead.pop(action.for_round, None)
        return ev.TrainedAhead(action.for_round, action.base, cid, claimed)

    async def _cancel_training_ahead(self, action: CancelTrainingAhead) -> None:
        # set before the job starts, too: it may still wait in the job lane
        self._cancel_ahead.setdefault(action.for_round, threading.Event()).set()
        return None

    async def _shard(self, round: int) -> Dataset:
        if self.shard is None:
            with timing.span(self.log, "load data", round):
                self.shard = await trio.to_thread.run_sync(
                    learning.load_worker_shard, self.config.data
                )
        return self.shard

    async def _trained(
        self,
        round: int,
        base_model: GlobalModel,
        in_thread: Callable[[Callable[[], bytes]], Awaitable[bytes]],
        cancel: threading.Event | None = None,
    ) -> tuple[str, int]:
        """Train round `round`'s update from `base_model` in `in_thread`, seal and store it:
        its CID and the sample count we claim. `cancel`, once set, stops the training
        (TrainingCancelled)."""
        book = self._work().book
        shard = await self._shard(round)
        recipients = await self.recipients()
        seed = int.from_bytes(self.me[:4], "big") ^ round
        ahead = {"ahead": 1} if cancel is not None else {}

        def work() -> bytes:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled()
            with timing.span(self.log, "base", round, **ahead):
                base = book.global_state(base_model)
            with timing.span(self.log, "train", round, samples=len(shard), **ahead):
                state = learning.train_update(
                    book, base, shard, self.config.training, self.config.behaviour, seed,
                    self._progress_logger(round, cancel),
                )
            with timing.span(self.log, "seal", round, **ahead):
                return book.crypto.seal(encode_state_dict(state), recipients)

        self.log.info(
            "round %d: training%s on %d samples", round, " ahead" if cancel else "", len(shard)
        )
        sealed = await in_thread(work)
        with timing.span(self.log, "store", round, **ahead):
            # submitted as soon as it is stored and served: the validators are told who
            # serves it, so its DHT record (seconds on a busy machine) is made meanwhile
            cid = await self.exchange.publish(sealed, announce_aside=True)
        return cid, learning.claimed_samples(self.config.behaviour, len(shard))

    async def _seal_key_release(self, action: SealKeyRelease) -> ev.Event:
        """Our update's content key, unwrapped from its envelope (we are a recipient) and
        sealed for every member, bound to this task, round, worker and CID."""
        work = self._work()
        book = work.book
        members = await self.members()
        context = key_release_context(
            address_bytes(work.task), action.round, self.me, action.cid
        )

        def sealed_key() -> bytes:
            envelope = learning.read_blob(
                self.store, action.cid, learning.max_update_size(book.spec)
            )
            content_key = content_key_of(
                envelope, book.crypto.private_key, learning.max_update_size(book.spec)
            )
            return seal(content_key, members, context)

        sealed = await trio.to_thread.run_sync(sealed_key)
        self.log.info(
            "round %d: training closed; releasing our update's key to %d members",
            action.round, len(members),
        )
        return ev.KeyReleaseSealed(action.round, action.cid, sealed)

    async def _validation_set(self, cid: str) -> Dataset:
        if self.validation is None:
            book = self._work().book

            def load() -> Dataset:
                blob = learning.read_blob(self.store, cid, learning.max_validation_size())
                dataset = learning.decode_dataset(
                    book.crypto.open(blob, learning.max_validation_size())
                )
                problem = data_problem(book.arch, dataset, "the requester's validation set")
                if problem is not None:  # say so, rather than fail inside the model
                    raise DatasetError(problem)
                return dataset

            self.validation = await trio.to_thread.run_sync(load)
        return self.validation

    async def _evaluate(self, action: StartEvaluation) -> ev.Event:
        work = self._work()
        book = work.book
        validation = await self._validation_set(action.validation_cid)

        self.log.info(
            "round %d: evaluating %d updates on %d samples",
            action.round, len(action.candidates), len(validation),
        )
        params = work.params
        ahead = self.measured_ahead.of_round(action.round)
        ahead.evaluating = True  # what is still queued is measured by the evaluation itself
        self.log.info(
            "round %d: %d of the updates were measured ahead", action.round, len(ahead.metrics)
        )
        # at a validator, the readers of an update are ours: the requester and the validators
        readers = await self.recipients()
        result = await trio.to_thread.run_sync(
            judge_round, book, action, validation, params.qualification_threshold,
            params.reward_policy, self.log, ahead, readers, self.measured_models,
        )
        self.measured_ahead = MeasuredAhead(action.round, evaluating=True)  # the book keeps them
        if params.reward_policy != RewardPolicy.WORK:  # its accuracy: of the accepted
            by_worker = {u.worker: u for u in action.candidates}
            accepted = [by_worker[w] for w, a in zip(result.workers, result.accepts, strict=True) if a]
            self._judged = (_aggregated(accepted), result.global_accuracy / SCALE)
        if self.config.behaviour.validator != "honest":  # a scenario's validator attack
            scores, accepts = committed_columns(
                self.config.behaviour.validator, result.workers, result.scores, result.accepts
            )
            result = dataclasses.replace(result, scores=scores, accepts=accepts)
        self.log.info(
            "round %d: accuracies %s, accepted %d, global accuracy %.4f",
            action.round,
            ["-" if a is None else f"{a:.3f}" for a in result.accuracies],
            sum(result.accepts), result.global_accuracy / 1e6,
        )
        return evaluation_done(action.round, result, os.urandom(32))

    async def _measure_update(self, action: MeasureUpdate) -> None:
        """Open and measure one update as the round's evaluation would (`evaluate` on the
        same validation set), at the background's priority: the evaluation takes it."""
        work = self._work()
        ahead = self.measured_ahead.of_round(action.round)
        if ahead.evaluating or action.cid in ahead.metrics:
            return None
        validation = await self._validation_set(action.validation_cid)

        def measure() -> None:
            # timed in the thread: the time it waited there for CPU or earlier jobs is not work
            with timing.span(self.log, "measure", action.round):
                measure_ahead(work.book, action.cid, validation, work.params.reward_policy, ahead)

        await self.background.run(measure)
        return None

    async def _aggregate(self, action: Aggregate) -> None:
        book = self._work().book
        rule = AggregationRule.parse(action.rule)

        async def in_thread(fn: Callable[[], T]) -> T:
            if self.aside(action):
                return await self.background.run(fn)
            return await trio.to_thread.run_sync(fn)

        try:
            state = await in_thread(partial(book.global_state, action.model, rule))
        finally:
            book.drop_opened()
        self.log.info("round %d: averaged %d accepted updates", action.round, len(action.updates))
        if action.measure_on is None:
            return None
        judged = self._judged
        if judged is not None and rule == book.rule and judged[0] == _aggregated(action.model.updates):
            # our evaluation measured this very aggregate on this validation set
            self.status.accuracy_by_round[action.round] = judged[1]
        else:
            validation = await self._validation_set(action.measure_on)
            images, labels = learning.to_tensors(validation)

            def accuracy() -> float:
                # the aggregate our evaluation measured, when the chain accepted what we did
                return self.measured_models.measure(book, state, images, labels).accuracy

            self.status.accuracy_by_round[action.round] = await in_thread(accuracy)
        self.log.info(
            "round %d: global model accuracy %.4f",
            action.round, self.status.accuracy_by_round[action.round],
        )
        return None

    async def _prepare_task_data(self, action: PrepareTaskData) -> ev.Event:
        book = self._work().book
        samples = self.config.task.validation_samples
        dataset = await trio.to_thread.run_sync(
            learning.load_validation_set, self.config.data, samples, self.config.task.validation
        )
        self.validation = dataset
        keys = []
        for member in (*action.workers, *action.validators, self.me):
            participant = await self.chain.run(self.client.participant, checksum(member))
            keys.append(participant.encryption_key)
        sealed = await trio.to_thread.run_sync(
            book.crypto.seal, learning.encode_dataset(dataset), keys
        )
        cid = await self.exchange.publish(sealed)
        self.log.info("validation set of %d samples sealed for %d members", samples, len(keys) - 1)
        return ev.TaskDataReady(cid, action.workers, action.validators)

    async def _save_final_model(self, action: SaveFinalModel) -> ev.Event:
        book = self._work().book
        output: Path = self.config.task.output or self.config.node.data_dir / "final-model.bin"

        def save() -> None:
            blob = encode_state_dict(book.global_state(action.model))
            output.parent.mkdir(parents=True, exist_ok=True)
            tmp = output.with_name(output.name + ".tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, output)

        await trio.to_thread.run_sync(save)
        self.status.final_model = output
        self.log.info("final model (after round %d) saved to %s", action.model.after_round, output)
        return ev.FinalModelSaved()
