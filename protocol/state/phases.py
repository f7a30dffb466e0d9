"""The round state machine's shared rules: what every node tracks, and the table.

A machine handles one event in four steps (`RoundMachine.handle`):

1. drop it if it is late (an earlier round) or early (a later round; announcements for
   the next round are kept until it opens, and a role's `EARLY_EVENTS` of the next round
   go to its rules at once);
2. apply the rule `COMMON_RULES[(phase, type(event))]` (chain bookkeeping and phase
   changes, the same for every role), then the role's own `RULES[(phase, type(event))]`;
   a pair that is in neither table is ignored;
3. move the phase on when the clock (`Tick`) passed its deadline;
4. run the duties of the phase now reached (`DUTIES[phase]`): level-triggered checks
   such as "the update is trained and not yet submitted → submit it". A duty marks what
   it did in the state, so running it again emits nothing: this is what makes duplicate
   events, replays after a restart and odd orderings harmless.

If the persisted state changed, `Persist()` is put first in the returned actions.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from protocol.errors import ProtocolError
from protocol.limits import MAX_WORKERS
from protocol.state.actions import (
    Action,
    Aggregate,
    Fetch,
    FollowTask,
    LoadMembers,
    Log,
    Persist,
    SendTx,
    Stop,
    Withdraw,
)
from protocol.state.commitments import UpdateCommitment, default_update_commitment
from protocol.state.events import (
    AnnouncementReceived,
    BlobFetched,
    Event,
    FetchFailed,
    JobFailed,
    KeyReleaseReceived,
    KeyReleaseSealed,
    ManifestCommitted,
    ManifestRevealed,
    PhaseChanged,
    Restarted,
    RoundFinalized,
    RoundOpened,
    TaskFollowed,
    TaskStarted,
    TaskTerminated,
    Tick,
    TrainedAhead,
    TxConfirmed,
    TxFailed,
    UpdateSubmitted,
)
from protocol.state.records import (
    IN_ROUND,
    PHASE_ORDER,
    BlobKind,
    GlobalModel,
    Phase,
    Role,
    TaskOffer,
    TaskTerms,
    TxKind,
    TxStatus,
    Update,
)

MAX_CIDS_PER_WORKER = 4  # announcements kept per worker before its commitment is seen
MAX_EARLY_ANNOUNCEMENTS = MAX_WORKERS  # kept for a round that has not opened yet
MAX_FETCH_ATTEMPTS = 3  # a blob is given up after this many FetchFailed
# A blob the node cannot take part without (the global model's, the validation set) is never
# given up in a round: it is fetched again after a pause that doubles, in chain seconds.
REQUIRED_FETCH_PAUSE = 10
REQUIRED_FETCH_MAX_PAUSE = 120
DEFAULT_AGGREGATOR = "fedavg"  # Task.Params' default rule, for a machine told no terms
# Seconds of chain time a worker waits, after a round finalized, for the key releases of
# accepted updates it cannot open yet; after that it averages the ones it can open.
KEY_RELEASE_GRACE = 60
# The same wait once the next round has opened (or the task ended), counted from the same
# finalization: a release follows its round's training close by a second or so, and only a
# round whose phases all ended early finalizes before it; meanwhile our next training waits.
KEY_RELEASE_GRACE_MOVED_ON = 10

TRANSITIONS: dict[tuple[Phase, type[Event]], Phase] = {
    # a round opens from idle, after the last one finalized, or over one that never
    # finalized here (our view lagged)
    **{
        (phase, RoundOpened): Phase.TRAINING
        for phase in (Phase.IDLE, *IN_ROUND, Phase.FINALIZED)
    },
    # the clock, checked after every event: a phase ends at its deadline (a reveal phase
    # also once nobody is left to reveal, as the contract says)
    (Phase.TRAINING, Tick): Phase.COMMIT,
    (Phase.COMMIT, Tick): Phase.REVEAL,
    (Phase.REVEAL, Tick): Phase.FINALIZING,
    # the chain ended a phase early (one step per phase up to the one it names)
    (Phase.TRAINING, PhaseChanged): Phase.COMMIT,
    (Phase.COMMIT, PhaseChanged): Phase.REVEAL,
    (Phase.REVEAL, PhaseChanged): Phase.FINALIZING,
    # a later phase's chain events prove that phase has begun
    (Phase.TRAINING, ManifestCommitted): Phase.COMMIT,
    (Phase.TRAINING, ManifestRevealed): Phase.REVEAL,
    (Phase.COMMIT, ManifestRevealed): Phase.REVEAL,
    **{(phase, RoundFinalized): Phase.FINALIZED for phase in IN_ROUND},
    **{
        (phase, TaskTerminated): Phase.TERMINATED
        for phase in (Phase.IDLE, *IN_ROUND, Phase.FINALIZED)
    },
}
"""(phase, event) -> the phase it moves to: the only way a machine changes phase."""

UPDATE_READERS: dict[Phase, str] = {
    Phase.TRAINING: "updates sealed for the requester and all validators only",
    Phase.COMMIT: "workers publish KeyRelease: every member can open the updates",
}
"""Who can read a round's updates from each phase on (drawn as notes in docs/round.md).
While training is open, another worker could copy an update and submit it as its own;
once it has closed on chain, no update can be submitted in the round any more, so each
worker releases its update's content key to every member (KeyReleaseReceived), which
every node needs to average the accepted updates itself."""
EARLY_END_PHASES = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING)  # PhaseChanged names one


@dataclass(frozen=True)
class Submission:
    """A worker's on-chain submitUpdate."""

    commitment: bytes
    n_samples: int


@dataclass(frozen=True)
class PendingAggregation:
    """Accepted updates of `round` waiting for their blobs; `helpers` (the committee
    members who revealed) fetched them too, so they are likely providers."""

    round: int
    updates: tuple[Update, ...]
    helpers: tuple[bytes, ...] = ()
    since: int = 0  # the chain time the round finalized at (key releases wait from then)


@dataclass
class RoundView:
    """What every node knows about its task and current round (persisted)."""

    task: bytes | None = None
    terms: TaskTerms | None = None
    requester: bytes | None = None
    phase: Phase = Phase.IDLE
    round: int = 0
    phase_since: int = 0
    training_deadline: int = 0
    commit_deadline: int = 0
    reveal_deadline: int = 0
    commit_duration: int = 0  # kept to shift the deadlines when a phase ends early
    reveal_duration: int = 0
    seed: bytes = b""
    validation_cid: str | None = None
    workers: tuple[bytes, ...] = ()
    validators: tuple[bytes, ...] = ()
    workers_per_round: int = 0  # 0: every worker trains in every round
    rounds: int = 0  # the task's number of rounds (0: not known)
    committee_size: int = 0  # seats a round's draw expects (0: not known)
    global_model: GlobalModel | None = None
    # this round, from the chain
    submissions: dict[bytes, Submission] = field(default_factory=dict)
    committed: set[bytes] = field(default_factory=set)
    revealed: set[bytes] = field(default_factory=set)
    # this round, from gossip: unmatched announcements, and those matching a commitment
    announced: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    updates: dict[bytes, Update] = field(default_factory=dict)
    early: list[AnnouncementReceived] = field(default_factory=list)
    # this round, from gossip after training closed: worker -> (cid, its sealed content key)
    releases: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    # our own transactions, keyed by tx_key(kind, round)
    txs: dict[str, TxStatus] = field(default_factory=dict)
    # blobs in the local store, being fetched, and failed fetches per CID
    have: set[str] = field(default_factory=set)
    fetching: set[str] = field(default_factory=set)
    fetch_failures: dict[str, int] = field(default_factory=dict)
    aggregation: PendingAggregation | None = None


@dataclass
class Session:
    """What this process asked the runtime for (not persisted: a restarted process
    follows its task, looks for one, settles up again)."""

    following: bool = False
    finding: bool = False
    searches: int = 0  # task searches that came up empty
    offers: tuple[TaskOffer, ...] = ()  # the rest of the last offer, to try in order
    configured: bool = False  # the offer is the one task we were told to work on
    joining: TaskOffer | None = None
    refused: set[bytes] = field(default_factory=set)  # tasks whose terms we cannot meet
    saving_final_model: bool = False
    stopping: bool = False
    fetch_again_at: dict[str, int] = field(default_factory=dict)  # required blob -> chain time


def tx_key(kind: TxKind, round: int) -> str:
    return f"{kind.value}@{round}"


def tx_round(key: str) -> int:
    return int(key.rsplit("@", 1)[1])


def short(address: bytes) -> str:
    """An address as logs show it: 0x and the first 4 bytes."""
    return "0x" + address[:4].hex()


Rule = Callable[[Any, Any], list[Action]]
"""(machine, event) -> actions; machine and event are the concrete types of the entry."""
Duty = Callable[[Any], list[Action]]


LocalState = TypeVar("LocalState")


class RoundMachine(Generic[LocalState]):
    """The base of the role machines: shared state, the dispatcher and shared duties.
    `local` is the role's own state (a dataclass, persisted with the view)."""

    role: ClassVar[Role]
    RULES: ClassVar[Mapping[tuple[Phase, type[Event]], Rule]] = {}
    IGNORED: ClassVar[Mapping[tuple[Phase, type[Event]], str]] = {}  # pair -> why
    DUTIES: ClassVar[Mapping[Phase, tuple[Duty, ...]]] = {}
    # events of the next round the role's rules take before that round opens here: its
    # senders may see the round open on chain before we do, and send them only once
    EARLY_EVENTS: ClassVar[tuple[type[Event], ...]] = ()

    def __init__(
        self,
        me: bytes,
        task: bytes | None = None,
        *,
        terms: TaskTerms | None = None,
        update_commitment: UpdateCommitment = default_update_commitment,
        finalize_after: int | None = None,
    ) -> None:
        """`me`: our chain address; `task`: the task contract's address (the requester
        learns it from TaskCreated, the others from the task they join) and `terms` its
        model and rule; `finalize_after`: seconds after the reveal phase ends before we
        call finalizeRound ourselves if nobody did (None: never)."""
        self.me = me
        self.view = RoundView(task=task, terms=terms)
        self.now = 0  # the last Tick; persisted but never a reason to Persist
        self.update_commitment = update_commitment
        self.finalize_after = finalize_after
        self.local: LocalState = self._fresh_local()
        self.session = Session()

    def progress(self) -> tuple[int, Phase]:
        """The round and phase we are in, for status displays and gossip's round window."""
        return self.view.round, self.view.phase

    def awaits_others(self) -> bool:
        """Whether our next step waits only on other parties' transactions, which land
        within a block or two: then each poll interval of delay in seeing them is a delay
        of the round (the driver reads the chain more often for a while). The reveal and
        finalizing phases end on a transaction away; a role adds its own cases."""
        return self.view.phase in (Phase.REVEAL, Phase.FINALIZING)

    def training_over(self, round: int) -> bool:
        """Whether `round`'s training phase has closed as far as the chain told us: what
        gossip waits for before it lets a key release of that round through."""
        view = self.view
        if round != view.round:
            return round < view.round
        return view.phase not in (Phase.IDLE, Phase.TRAINING)

    # --- the dispatcher ----------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        before = copy.deepcopy(self._persisted())
        actions = self._dispatch(event)
        if self._persisted() != before:
            actions.insert(0, Persist())
        return actions

    def _dispatch(self, event: Event) -> list[Action]:
        if isinstance(event, Tick):
            self.now = max(self.now, event.now)
        if not self._admit(event):
            return []
        phase = self.view.phase
        actions: list[Action] = []
        for table in (COMMON_RULES, self.RULES):
            rule = table.get((phase, type(event)))
            if rule is not None and not self.session.stopping:
                actions += rule(self, event)
        actions += self._advance_by_clock()
        if self.session.stopping:
            return actions
        # following first: every later action works on the task; aggregation next: the
        # next round's duties may wait for the model it makes
        duties = (follow_task, aggregate_when_fetched, *self.DUTIES.get(self.view.phase, ()))
        for duty in (*duties, *LAST_DUTIES):
            actions += duty(self)
        return actions

    def _admit(self, event: Event) -> bool:
        """False for events of another round, but a key release the last round's aggregation
        still waits for and our own earlier round's sealed key; early announcements are kept
        for later."""
        event_round = getattr(event, "round", None)
        view = self.view
        if isinstance(event, AnnouncementReceived) and (
            view.phase == Phase.IDLE or event.round == view.round + 1
        ):
            if len(view.early) < MAX_EARLY_ANNOUNCEMENTS and event not in view.early:
                view.early.append(event)
            return False
        if event_round is None or isinstance(event, RoundOpened) or event_round == view.round:
            return True
        if isinstance(event, self.EARLY_EVENTS) and event_round == view.round + 1:
            return True
        if isinstance(event, KeyReleaseReceived) and view.aggregation is not None:
            return event_round == view.aggregation.round  # the next round opened before it
        if isinstance(event, KeyReleaseSealed):
            return event_round < view.round  # our own earlier key, sealed after the round moved on
        # before the first round our own setup transactions carry round 0
        return view.phase == Phase.IDLE and isinstance(event, TxConfirmed | TxFailed)

    def _advance_by_clock(self) -> list[Action]:
        view = self.view
        actions: list[Action] = []
        while True:
            deadline = {
                Phase.TRAINING: view.training_deadline,
                Phase.COMMIT: view.commit_deadline,
                Phase.REVEAL: view.reveal_deadline,
            }.get(view.phase)
            if view.phase == Phase.REVEAL and view.committed <= view.revealed:
                reason = "nothing left to reveal"
            elif deadline is not None and self.now >= deadline:
                reason = "deadline passed"
            else:
                return actions
            moved = self._move(Tick, reason)
            if not moved:
                return actions
            actions += moved

    def _move(self, trigger: type[Event], reason: str) -> list[Action]:
        """Take the transition TRANSITIONS has for `trigger` in this phase, if any (always
        forward), with the one log line a change gets."""
        view = self.view
        phase = TRANSITIONS.get((view.phase, trigger))
        if phase is None or PHASE_ORDER[phase] <= PHASE_ORDER[view.phase]:
            return []
        old, view.phase, view.phase_since = view.phase, phase, self.now
        return [Log("info", f"round {view.round}: {old} -> {phase} ({reason})")]

    # --- state helpers used by the rules and duties ------------------------------------

    def _persisted(self) -> tuple[object, ...]:
        """The state a restart must get back (`now` excluded: ticks are not changes)."""
        return (self.view, self.local)

    def _fresh_local(self) -> LocalState:
        raise NotImplementedError

    def _new_round(self) -> None:
        """Reset the role's per-round state (called when a round opens)."""
        self.local = self._fresh_local()

    def _on_restart(self) -> list[Action]:
        """Forget the role's jobs in flight so the duties ask for them again."""
        return []

    def _wanted_blobs(self) -> dict[str, tuple[bytes, ...]]:
        """CID -> provider hint of the blobs the role needs now (beyond aggregation)."""
        return {}

    def _sampled(self) -> bool:
        """Whether a round's draw may leave this role out (a sampled worker, an unseated
        validator)."""
        return False

    def _needs_base(self) -> bool:
        """Whether the role needs the global model now: always, unless a draw can leave it
        out."""
        return True

    def _aggregation_deferred(self) -> bool:
        """Whether the pending aggregation waits until the role needs its model (neither
        fetched nor built meanwhile; a later round's replaces it): when a draw can leave
        the role out, a round's global model is built only once a later round draws it. It
        depends on nothing but that round's accepted updates, so the rounds sat out cost no
        fetch and no averaging, and the model then built is the one the requester built.
        The task's end drops it (`drop_deferred_aggregation`; the requester saves the final
        model)."""
        pending = self.view.aggregation
        if pending is None or not self._sampled():
            return False
        return not (self.view.round > pending.round and self._needs_base())

    def _done_with_task(self) -> bool:
        """Nothing of ours is left to do in a terminated task (beyond settling up)."""
        return True

    def _stop(self, reason: str) -> list[Action]:
        """Give up: the node cannot go on (the reason says what to change)."""
        self.session.stopping = True
        return [Log("error", reason), Stop(reason, failed=True)]

    def _tx_status(self, kind: TxKind) -> TxStatus | None:
        return self.view.txs.get(tx_key(kind, self.view.round))

    def _landed(self, kind: TxKind) -> bool:
        return self._tx_status(kind) == TxStatus.CONFIRMED

    def _send(self, kind: TxKind, *args: Any) -> list[Action]:
        """The one place a transaction is sent; at most once per kind and round."""
        key = tx_key(kind, self.view.round)
        if key in self.view.txs:
            return []
        self.view.txs[key] = TxStatus.PENDING
        return [SendTx(kind, self.view.round, tuple(args))]

    def _update_commitment(self, cid: str, worker: bytes) -> bytes | None:
        """The commitment of (cid, worker), or None when they cannot have one."""
        try:
            return self.update_commitment(cid, worker)
        except ProtocolError:
            return None

    def _required_blobs(self) -> set[str]:
        """What the node cannot take part in a round without: the global model's blobs and
        the validation set."""
        view = self.view
        required = {*(view.global_model.blob_cids if view.global_model else ())}
        return required | ({view.validation_cid} if view.validation_cid else set())

    def _given_up(self, cid: str) -> bool:
        if cid in self._required_blobs():
            return False
        return self.view.fetch_failures.get(cid, 0) >= MAX_FETCH_ATTEMPTS

    def _fetch_paused(self, cid: str) -> bool:
        return self.now < self.session.fetch_again_at.get(cid, 0)

    def _resolved(self, cid: str) -> bool:
        return cid in self.view.have or self._given_up(cid)

    def _base_ready(self) -> bool:
        """The global model to start from is available locally."""
        view = self.view
        return (
            view.global_model is not None
            and view.aggregation is None
            and all(cid in view.have for cid in view.global_model.blob_cids)
        )

    def _base_wanted(self) -> dict[str, tuple[bytes, ...]]:
        """The initial model's blob, while the global model is still the initial one."""
        model = self.view.global_model
        if model is None or model.updates:
            return {}
        return {model.initial_cid: self._requester_hint()}

    def _requester_hint(self) -> tuple[bytes, ...]:
        return (self.view.requester,) if self.view.requester else ()

    def _record_announcement(self, event: AnnouncementReceived) -> None:
        view = self.view
        worker = event.worker
        if worker in view.updates or (view.workers and worker not in view.workers):
            return
        cids = view.announced.get(worker, ())
        if event.cid in cids or len(cids) >= MAX_CIDS_PER_WORKER:
            return
        view.announced[worker] = (*cids, event.cid)
        self._match(worker)

    def _released(self, update: Update) -> Update:
        """`update` with its worker's key release, when one for its CID arrived."""
        release = self.view.releases.get(update.worker)
        if release is None or release[0] != update.cid or update.key_release is not None:
            return update
        return dataclasses.replace(update, key_release=release[1])

    def _readable(self, update: Update) -> bool:
        """We can open `update`: we are one of its blob's recipients (the requester, a
        validator, its own worker), or its worker released its key to us."""
        return self.role != Role.WORKER or update.worker == self.me or update.key_release is not None

    def _match(self, worker: bytes) -> None:
        """Pair a worker's on-chain commitment with the announced CID that opens it."""
        view = self.view
        submission = view.submissions.get(worker)
        if submission is None:
            return
        for cid in view.announced.get(worker, ()):
            if self._update_commitment(cid, worker) == submission.commitment:
                view.updates[worker] = Update(worker, cid, submission.n_samples)
                del view.announced[worker]
                return


# --- the common rules -------------------------------------------------------------------


def _task_started(m: RoundMachine, e: TaskStarted) -> list[Action]:
    view = m.view
    if view.global_model is not None:
        return []
    view.requester = e.requester
    view.validation_cid = e.validation_cid
    view.workers = e.workers[:MAX_WORKERS]
    view.validators = e.validators[:MAX_WORKERS]
    view.workers_per_round = e.workers_per_round
    view.rounds = e.rounds
    view.committee_size = e.committee_size
    view.global_model = GlobalModel(e.initial_model_cid)
    return [
        Log("info", f"task started: {len(e.workers)} workers, {len(e.validators)} validators"),
        LoadMembers(),
    ]


def _round_opened(m: RoundMachine, e: RoundOpened) -> list[Action]:
    view = m.view
    if view.phase != Phase.IDLE and e.round <= view.round:
        return []  # a duplicate or an old round
    actions: list[Action] = []
    if view.phase in IN_ROUND:
        actions.append(Log("warning", f"round {view.round} never finalized here; moving on"))
    view.round = e.round
    view.training_deadline = e.training_deadline
    view.commit_deadline = e.commit_deadline
    view.reveal_deadline = e.reveal_deadline
    view.commit_duration = max(0, e.commit_deadline - e.training_deadline)
    view.reveal_duration = max(0, e.reveal_deadline - e.commit_deadline)
    view.seed = e.seed
    view.submissions, view.committed, view.revealed = {}, set(), set()
    view.announced, view.updates, view.releases = {}, {}, {}
    view.txs = {key: s for key, s in view.txs.items() if tx_round(key) >= e.round}
    keep = {*(view.global_model.blob_cids if view.global_model else ())}
    keep |= {u.cid for u in view.aggregation.updates} if view.aggregation else set()
    keep |= {view.validation_cid} if view.validation_cid else set()
    view.have &= keep
    view.fetching &= keep
    # what a node needs to take part (the global model's blobs, the validation set) is
    # tried again in each round: given up for good, the node would sit out every later one
    required = m._required_blobs()
    view.fetch_failures = {
        c: n for c, n in view.fetch_failures.items() if c in keep and c not in required
    }
    early, view.early = view.early, []
    m._new_round()
    old, view.phase, view.phase_since = view.phase, TRANSITIONS[(view.phase, RoundOpened)], m.now
    actions.append(
        Log(
            "info",
            f"round {e.round}: {old} -> training (opened: training until "
            f"{e.training_deadline}, commit until {e.commit_deadline}, "
            f"reveal until {e.reveal_deadline})",
        )
    )
    for announcement in early:
        if announcement.round == e.round:
            m._record_announcement(announcement)
    return actions


def _update_submitted(m: RoundMachine, e: UpdateSubmitted) -> list[Action]:
    view = m.view
    if e.worker == m.me:
        view.txs[tx_key(TxKind.SUBMIT_UPDATE, view.round)] = TxStatus.CONFIRMED
    if e.worker in view.submissions or len(view.submissions) >= MAX_WORKERS:
        return []
    view.submissions[e.worker] = Submission(e.commitment, e.n_samples)
    m._match(e.worker)
    return []


def _manifest_committed(m: RoundMachine, e: ManifestCommitted) -> list[Action]:
    view = m.view
    if e.validator == m.me:
        view.txs[tx_key(TxKind.COMMIT_MANIFEST, view.round)] = TxStatus.CONFIRMED
    if len(view.committed) < MAX_WORKERS:
        view.committed.add(e.validator)
    return m._move(ManifestCommitted, "a manifest was committed")


def _manifest_revealed(m: RoundMachine, e: ManifestRevealed) -> list[Action]:
    view = m.view
    if e.validator == m.me:
        view.txs[tx_key(TxKind.REVEAL_MANIFEST, view.round)] = TxStatus.CONFIRMED
    if len(view.revealed) < MAX_WORKERS:
        view.revealed.add(e.validator)
    return m._move(ManifestRevealed, "a manifest was revealed")


def _phase_changed(m: RoundMachine, e: PhaseChanged) -> list[Action]:
    """Shift the deadlines as the contract does: the phase before `e.phase` ended at
    `e.at` and the phases after it keep their durations."""
    view = m.view
    if e.phase not in EARLY_END_PHASES or PHASE_ORDER[e.phase] < PHASE_ORDER[view.phase]:
        return []
    if e.phase == Phase.COMMIT:
        view.training_deadline = e.at
        view.commit_deadline = e.at + view.commit_duration
        view.reveal_deadline = view.commit_deadline + view.reveal_duration
    elif e.phase == Phase.REVEAL:
        view.commit_deadline = e.at
        view.reveal_deadline = e.at + view.reveal_duration
    else:
        view.reveal_deadline = e.at
    actions: list[Action] = []
    while PHASE_ORDER[view.phase] < PHASE_ORDER[e.phase]:
        moved = m._move(PhaseChanged, f"the previous phase ended early at {e.at}")
        if not moved:
            break
        actions += moved
    return actions


def _round_finalized(m: RoundMachine, e: RoundFinalized) -> list[Action]:
    view = m.view
    actions = m._move(RoundFinalized, f"{len(e.accepted)} updates accepted")
    updates = []
    for worker in dict.fromkeys(e.accepted[:MAX_WORKERS]):
        if worker in view.updates:
            updates.append(m._released(view.updates[worker]))
        else:
            actions.append(
                Log("warning", f"accepted update of {short(worker)} was never announced to us")
            )
    if not updates:  # a pending aggregation still makes the model that carries over
        actions.append(Log("info", f"round {view.round}: no update to average; model carries over"))
        return actions
    if view.aggregation is not None and not m._aggregation_deferred():
        actions.append(Log("warning", f"round {view.aggregation.round} never aggregated here"))
    view.aggregation = PendingAggregation(
        view.round, tuple(updates), tuple(sorted(view.revealed)), since=m.now
    )
    return actions


def _task_terminated(m: RoundMachine, e: TaskTerminated) -> list[Action]:
    return m._move(TaskTerminated, e.reason or "task terminated")


def _announcement(m: RoundMachine, e: AnnouncementReceived) -> list[Action]:
    m._record_announcement(e)
    return []


def _key_release_received(m: RoundMachine, e: KeyReleaseReceived) -> list[Action]:
    """Keep the first release of each worker of the task for this round; attach it to that
    worker's accepted update if the round's aggregation waits for it. One of an earlier
    round only completes that round's aggregation, if it still waits."""
    view = m.view
    if e.round < view.round:
        return _earlier_key_release(m, e)
    if e.round != view.round:
        return []
    if e.worker in view.releases or (view.workers and e.worker not in view.workers):
        return []
    if len(view.releases) >= MAX_WORKERS:
        return []
    view.releases[e.worker] = (e.cid, e.sealed_key)
    _attach_release(m, e)
    return []


def _earlier_key_release(m: RoundMachine, e: KeyReleaseReceived) -> list[Action]:
    """A release of an earlier round (the next one opened before it came): attached to the
    accepted update of its worker and CID if that round's aggregation still waits; never
    kept as a release of the current round, whose training may be open."""
    if e.round < m.view.round:
        _attach_release(m, e)
    return []


def _attach_release(m: RoundMachine, e: KeyReleaseReceived) -> None:
    """Give the accepted update of `e`'s worker and CID its key, if `e`'s round's
    aggregation waits for it and it has none yet."""
    pending = m.view.aggregation
    if pending is None or pending.round != e.round:
        return
    updates = tuple(
        dataclasses.replace(u, key_release=e.sealed_key)
        if u.worker == e.worker and u.cid == e.cid and u.key_release is None
        else u
        for u in pending.updates
    )
    m.view.aggregation = dataclasses.replace(pending, updates=updates)


def _blob_fetched(m: RoundMachine, e: BlobFetched) -> list[Action]:
    if e.cid in m.view.fetching:
        m.view.fetching.discard(e.cid)
        m.view.have.add(e.cid)
    return []


def _fetch_failed(m: RoundMachine, e: FetchFailed) -> list[Action]:
    view = m.view
    if e.cid not in view.fetching:
        return []
    view.fetching.discard(e.cid)
    failures = view.fetch_failures[e.cid] = view.fetch_failures.get(e.cid, 0) + 1
    if e.cid in m._required_blobs():
        pause = min(REQUIRED_FETCH_PAUSE * 2 ** (failures - 1), REQUIRED_FETCH_MAX_PAUSE)
        m.session.fetch_again_at[e.cid] = m.now + pause
        return [Log("warning", f"fetching {e.cid} failed {failures} times; needed to take "
                    f"part, it is fetched again in {pause} s")]
    if m._given_up(e.cid):
        return [Log("warning", f"giving up on blob {e.cid}: {e.reason}")]
    return []


def _tx_confirmed(m: RoundMachine, e: TxConfirmed) -> list[Action]:
    key = tx_key(e.kind, e.round)
    if key in m.view.txs:
        m.view.txs[key] = TxStatus.CONFIRMED
    return []


def _tx_failed(m: RoundMachine, e: TxFailed) -> list[Action]:
    if e.permanent:  # going on would only fail again, or cost a deposit at the deadline
        return m._stop(f"{e.kind} for round {e.round} cannot succeed: {e.reason or e.error_name}")
    key = tx_key(e.kind, e.round)
    if m.view.txs.get(key) != TxStatus.PENDING:
        return []
    m.view.txs[key] = TxStatus.FAILED
    return [Log("warning", f"{e.kind} for round {e.round} failed ({e.error_name}); not resent")]


def _job_failed(m: RoundMachine, e: JobFailed) -> list[Action]:
    return [Log("error", f"round {e.round}: {e.job} failed: {e.reason}")]


def _task_followed(m: RoundMachine, e: TaskFollowed) -> list[Action]:
    if e.problem is None or e.task != m.view.task:
        return []
    return m._stop(f"task 0x{e.task.hex()}: {e.problem}")


def _restarted(m: RoundMachine, e: Restarted) -> list[Action]:
    m.view.fetching.clear()
    return [Log("info", f"resumed in round {m.view.round}, phase {m.view.phase}"), *m._on_restart()]


def every(phases: Iterable[Phase], event: type[Event], rule: Rule) -> dict[Any, Rule]:
    return {(phase, event): rule for phase in phases}


ALL_PHASES = tuple(Phase)
AFTER_TRAINING = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZING, Phase.FINALIZED)
OPEN_PHASES = (*IN_ROUND, Phase.FINALIZED)  # a round is known and not terminated
ROUND_PHASES = (*IN_ROUND,)  # a round is running

COMMON_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    (Phase.IDLE, TaskStarted): _task_started,
    **every((Phase.IDLE, *OPEN_PHASES), RoundOpened, _round_opened),
    **every(OPEN_PHASES, UpdateSubmitted, _update_submitted),
    **every(ROUND_PHASES, ManifestCommitted, _manifest_committed),
    **every(ROUND_PHASES, ManifestRevealed, _manifest_revealed),
    **every(ROUND_PHASES, PhaseChanged, _phase_changed),
    **every(ROUND_PHASES, RoundFinalized, _round_finalized),
    **every(ROUND_PHASES, AnnouncementReceived, _announcement),
    **every((*AFTER_TRAINING, Phase.TERMINATED), KeyReleaseReceived, _key_release_received),
    (Phase.TRAINING, KeyReleaseReceived): _earlier_key_release,
    **every((Phase.IDLE, *OPEN_PHASES), TaskTerminated, _task_terminated),
    **every(ALL_PHASES, BlobFetched, _blob_fetched),
    **every(ALL_PHASES, FetchFailed, _fetch_failed),
    **every(ALL_PHASES, TxConfirmed, _tx_confirmed),
    **every(ALL_PHASES, TxFailed, _tx_failed),
    **every(ALL_PHASES, JobFailed, _job_failed),
    **every(ALL_PHASES, Restarted, _restarted),
    **every(ALL_PHASES, TaskFollowed, _task_followed),
}


def ignore(phases: Iterable[Phase], events: Iterable[type[Event]], why: str) -> dict[Any, str]:
    return {(phase, event): why for phase in phases for event in events}


NO_ROUND = (Phase.IDLE, Phase.FINALIZED, Phase.TERMINATED)  # no round is running

WORKER_JOB_EVENTS: tuple[type[Event], ...] = (TrainedAhead,)  # only a worker asks for these

COMMON_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **ignore(ALL_PHASES, (Tick,), "the clock: the dispatcher moves phases on by it"),
    **ignore(ALL_PHASES, WORKER_JOB_EVENTS, "a worker's job"),
    **ignore(OPEN_PHASES + (Phase.TERMINATED,), (TaskStarted,), "the task started once"),
    **ignore((Phase.TERMINATED,), (RoundOpened, TaskTerminated), "the task is over"),
    **ignore((Phase.IDLE, Phase.TERMINATED), (UpdateSubmitted,), "no round is open"),
    **ignore(
        NO_ROUND,
        (PhaseChanged, ManifestCommitted, ManifestRevealed, RoundFinalized),
        "no round is running (a late duplicate)",
    ),
    **ignore(
        NO_ROUND,
        (AnnouncementReceived,),
        "no round to match it with (the admission check keeps the next round's)",
    ),
    **ignore((Phase.IDLE,), (KeyReleaseReceived,), "no round whose updates it could open"),
}


# --- the common duties (every phase, every role) ----------------------------------------


def follow_task(m: RoundMachine) -> list[Action]:
    view = m.view
    if m.session.following or view.task is None or view.terms is None:
        return []
    m.session.following = True
    return [FollowTask(view.task, view.terms)]


def fetch_wanted_blobs(m: RoundMachine) -> list[Action]:
    view = m.view
    wanted = dict(m._wanted_blobs())
    if view.aggregation is not None and not m._aggregation_deferred():
        for update in view.aggregation.updates:
            wanted[update.cid] = (update.worker, *view.aggregation.helpers)
    actions: list[Action] = []
    for cid, providers in wanted.items():
        if (
            cid not in view.have
            and cid not in view.fetching
            and not m._given_up(cid)
            and not m._fetch_paused(cid)
        ):
            view.fetching.add(cid)
            kind = BlobKind.VALIDATION_SET if cid == view.validation_cid else BlobKind.MODEL
            actions.append(Fetch(cid, providers, kind))
    return actions


def drop_deferred_aggregation(m: RoundMachine) -> list[Action]:
    """The task is over: a global model we deferred is not needed any more."""
    pending = m.view.aggregation
    if pending is None or not m._aggregation_deferred():
        return []
    m.view.aggregation = None
    return [Log("info", f"round {pending.round}: the task is over; its global model is "
                "not built here (the requester saves the final model)")]


def aggregate_when_fetched(m: RoundMachine) -> list[Action]:
    view = m.view
    pending = view.aggregation
    if pending is None or view.global_model is None or m._aggregation_deferred():
        return []
    if not all(m._resolved(u.cid) for u in pending.updates):
        return []
    waiting = [u for u in pending.updates if u.cid in view.have and not m._readable(u)]
    moved_on = view.round > pending.round or view.phase == Phase.TERMINATED
    grace = KEY_RELEASE_GRACE_MOVED_ON if moved_on else KEY_RELEASE_GRACE
    if waiting and m.now < pending.since + grace:
        return []
    view.aggregation = None
    actions: list[Action] = [
        Log("warning", f"round {pending.round}: no key release from {short(u.worker)}; "
            "its update is left out of our average")
        for u in waiting
    ]
    fetched = tuple(u for u in pending.updates if u.cid in view.have and m._readable(u))
    if not fetched:
        return actions + [
            Log("warning", f"round {pending.round}: no accepted blob fetched; model carries over")
        ]
    view.global_model = GlobalModel(view.global_model.initial_cid, pending.round, fetched)
    rule = view.terms.aggregator if view.terms is not None else DEFAULT_AGGREGATOR
    measure_on = view.validation_cid if view.validation_cid in view.have else None
    return actions + [Aggregate(pending.round, fetched, view.global_model, rule, measure_on)]


def finalize_if_nobody_did(m: RoundMachine) -> list[Action]:
    if m.view.phase != Phase.FINALIZING or m.finalize_after is None:
        return []
    if m.now - m.view.phase_since < m.finalize_after:
        return []
    return m._send(TxKind.FINALIZE_ROUND, m.view.round)


def settle_up(m: RoundMachine) -> list[Action]:
    """Once the task is over and our last model is built: withdraw, and stop."""
    view = m.view
    if view.phase != Phase.TERMINATED or view.aggregation is not None or m.session.stopping:
        return []
    if not m._done_with_task():
        return []
    m.session.stopping = True
    return [Withdraw(reclaim_escrow=m.role == Role.REQUESTER), Stop("the task is over")]


LAST_DUTIES: tuple[Duty, ...] = (fetch_wanted_blobs, finalize_if_nobody_did, settle_up)
