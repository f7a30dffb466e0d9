"""The validator: draw sortition; when selected, fetch and evaluate the committed
updates, commit the manifest before the commit deadline, reveal it after; when not,
publish the proof that shows it (so the commit phase can end once the seated committed).

A seated validator measures each update as soon as it is fetched (MeasureUpdate), while
the other workers still train: the workers finish at different times and the last
update's fetch leaves the CPU idle, so when the round's evaluation starts only the last
updates and the round's aggregates are left to measure.

A committee smaller than the validators (`committee_size`): a validator that the round's
draw left unseated fetches nothing, and builds a round's global model only once a later
round seats it, as a worker left out of a sampled round does (`_aggregation_deferred`):
with V validators and a committee of C, the V - C unseated ones would otherwise fetch every
accepted update of every round for a model they do not use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.errors import ProtocolError
from protocol.fixedpoint import SCALE
from protocol.manifest import WorkerVerdict
from protocol.state.actions import (
    Action,
    DrawSortition,
    Log,
    MeasureUpdate,
    PublishCommitteeProof,
    PublishScores,
    PublishUnseatedProof,
    StartEvaluation,
)
from protocol.state.commitments import (
    ManifestCommitment,
    UpdateCommitment,
    default_manifest_commitment,
    default_update_commitment,
)
from protocol.state.events import (
    EvaluationDone,
    Event,
    JobFailed,
    KeyReleaseSealed,
    SortitionDrawn,
    TrainingDone,
)
from protocol.state.membership import MEMBER_IGNORED, MEMBERSHIP_DUTIES, MEMBERSHIP_RULES
from protocol.state.phases import (
    ALL_PHASES,
    Duty,
    RoundMachine,
    Rule,
    drop_deferred_aggregation,
    every,
    ignore,
)
from protocol.state.records import SALT_LENGTH, Job, Manifest, Phase, Role, TaskTerms, TxKind


@dataclass
class ValidatorState:
    """This round's committee work (persisted; reset when a round opens)."""

    sortition_requested: bool = False
    drawn: bool = False
    vrf_proof: bytes | None = None  # set when selected
    proof_published: bool = False
    unseated_proof: bytes | None = None  # set when the draw shows us not selected
    unseated_published: int = 0  # times: as drawn, and again as the commit phase opens
    evaluation_requested: bool = False
    evaluated: tuple[bytes, ...] = ()  # workers whose updates we had to evaluate
    manifest: Manifest | None = None
    scores_published: bool = False


class ValidatorMachine(RoundMachine[ValidatorState]):
    role: ClassVar[Role] = Role.VALIDATOR

    def __init__(
        self,
        me: bytes,
        task: bytes | None = None,
        *,
        terms: TaskTerms | None = None,
        update_commitment: UpdateCommitment = default_update_commitment,
        manifest_commitment: ManifestCommitment = default_manifest_commitment,
        finalize_after: int | None = None,
        evaluation_reserve: int | None = None,
    ) -> None:
        """`evaluation_reserve`: seconds before the commit deadline at which evaluation
        starts with whatever updates are fetched by then (default: half the time from
        the training deadline to the commit deadline)."""
        super().__init__(
            me, task, terms=terms, update_commitment=update_commitment,
            finalize_after=finalize_after,
        )
        self.manifest_commitment = manifest_commitment
        self.evaluation_reserve = evaluation_reserve
        # (round, CID) of the updates we asked to have measured ahead; not persisted: the
        # measurements live in this process, a restarted one asks again
        self.measuring: set[tuple[int, str]] = set()

    def _fresh_local(self) -> ValidatorState:
        return ValidatorState()

    def _on_restart(self) -> list[Action]:
        self.local.sortition_requested = False
        self.local.evaluation_requested = False
        self.measuring.clear()
        return []

    def awaits_others(self) -> bool:
        """Also in the commit phase once our manifest landed: the reveal waits on the
        other seated validators' commits (or the requester's end of the phase)."""
        if self.view.phase == Phase.COMMIT and self._landed(TxKind.COMMIT_MANIFEST):
            return True
        return super().awaits_others()

    def _is_member(self) -> bool:
        return not self.view.validators or self.me in self.view.validators

    def _selected(self) -> bool:
        return self.local.vrf_proof is not None

    def _sampled(self) -> bool:
        """Whether a round's draw may leave validators unseated: its expected seats are
        fewer than the validators (with unequal stakes a large one may still be seated in
        every round; it then fetches once its draw shows it)."""
        view = self.view
        return 0 < view.committee_size < len(view.validators)

    def _needs_base(self) -> bool:
        """Whether we need the global model now: always when every validator sits in every
        round; else only in a round whose draw seated us."""
        return not self._sampled() or self._selected()

    def _wanted_blobs(self) -> dict[str, tuple[bytes, ...]]:
        view = self.view
        if not self._is_member() or view.validation_cid is None:
            return {}
        if not self._needs_base():
            return {}
        wanted = {view.validation_cid: self._requester_hint()}
        if view.aggregation is None:  # else the pending aggregation makes the base
            wanted |= self._base_wanted()
        evaluating = self.local.evaluation_requested or self.local.manifest is not None
        if self._selected() and not evaluating and view.phase in (Phase.TRAINING, Phase.COMMIT):
            wanted |= {u.cid: (u.worker,) for u in view.updates.values()}
        return wanted

    def _evaluation_cutoff(self) -> int:
        view = self.view
        reserve = self.evaluation_reserve
        if reserve is None:
            reserve = max(0, view.commit_deadline - view.training_deadline) // 2
        return view.commit_deadline - reserve

    def _manifest_problem(self, e: EvaluationDone) -> str | None:
        """Why an evaluation result cannot be committed, or None."""
        if not self._selected() or not self.local.evaluation_requested:
            return "no evaluation was asked for"
        if not len(e.workers) == len(e.scores) == len(e.accepts):
            return "workers, scores and accepts differ in length"
        if not set(e.unopenable) <= set(e.workers):
            return "an update marked unopenable is not among the workers"
        if e.workers != tuple(self.view.submissions):
            return "the workers are not exactly the submitters in on-chain order"
        if not 0 <= e.global_accuracy <= SCALE:
            return f"global accuracy {e.global_accuracy} is outside 0..{SCALE}"
        if len(e.salt) != SALT_LENGTH:
            return f"salt has {len(e.salt)} bytes, not {SALT_LENGTH}"
        return None


# --- rules ------------------------------------------------------------------------------


def _sortition_drawn(m: ValidatorMachine, e: SortitionDrawn) -> list[Action]:
    if m.local.drawn:
        return []
    m.local.drawn = True
    m.local.vrf_proof = e.vrf_proof
    if e.vrf_proof is None:
        m.local.unseated_proof = e.unseated_proof
        return [Log("info", f"round {e.round}: not selected for the committee; idle")]
    return [Log("info", f"round {e.round}: selected for the committee")]


def _evaluation_done(m: ValidatorMachine, e: EvaluationDone) -> list[Action]:
    if m.local.manifest is not None:
        return []
    problem = m._manifest_problem(e)
    if problem is not None:
        return [Log("error", f"round {e.round}: evaluation result dropped: {problem}")]
    # an update we could not fetch in time is UNAVAILABLE: its worker is neither paid
    # nor slashed on our word. So is one we fetched but could not open for a reason only
    # we can see (our wrapped key fails authentication): a REJECT would contradict the
    # validators that opened it, and get us slashed for what its worker did; and one the
    # round cannot judge (WORK's undecided: no update shows work measurably).
    verdicts = tuple(
        WorkerVerdict.UNAVAILABLE
        if worker not in m.local.evaluated or worker in e.unopenable
        else WorkerVerdict.ACCEPT if accept else WorkerVerdict.REJECT
        for worker, accept in zip(e.workers, e.accepts, strict=True)
    )
    m.local.manifest = Manifest(e.workers, e.scores, verdicts, e.global_accuracy, e.salt)
    return []


def _too_late(m: ValidatorMachine, e: SortitionDrawn | EvaluationDone) -> list[Action]:
    return [Log("warning", f"round {e.round}: {type(e).__name__} came after the commit phase")]


def _job_failed(m: ValidatorMachine, e: JobFailed) -> list[Action]:
    if e.job == Job.SORTITION:
        m.local.sortition_requested = False
    elif e.job == Job.EVALUATION:
        m.local.evaluation_requested = False
    return []


AFTER_COMMIT = (Phase.REVEAL, Phase.FINALIZING, Phase.FINALIZED)

VALIDATOR_RULES: dict[tuple[Phase, type[Event]], Rule] = {
    **MEMBERSHIP_RULES,
    **every((Phase.TRAINING, Phase.COMMIT), SortitionDrawn, _sortition_drawn),
    **every(AFTER_COMMIT, SortitionDrawn, _too_late),
    (Phase.COMMIT, EvaluationDone): _evaluation_done,
    **every(AFTER_COMMIT, EvaluationDone, _too_late),
    **every((Phase.TRAINING, Phase.COMMIT), JobFailed, _job_failed),
}


# --- duties -----------------------------------------------------------------------------


def draw_sortition(m: ValidatorMachine) -> list[Action]:
    local = m.local
    if local.drawn or local.sortition_requested or not m._is_member():
        return []
    local.sortition_requested = True
    return [DrawSortition(m.view.round, m.view.seed)]


def publish_committee_proof(m: ValidatorMachine) -> list[Action]:
    proof = m.local.vrf_proof
    if proof is None or m.local.proof_published:
        return []
    m.local.proof_published = True
    return [PublishCommitteeProof(m.view.round, proof)]


def publish_unseated_proof(m: ValidatorMachine) -> list[Action]:
    """The proof that we are not seated: with one from every validator that will not
    commit, the requester ends the commit phase before its deadline. Published as drawn
    and once more as the commit phase opens, when it is needed: a round opens right after
    the task starts, when a late joiner's gossip mesh may still be forming, and gossip
    does not resend a message that reached nobody."""
    local = m.local
    wanted = 2 if m.view.phase == Phase.COMMIT else 1
    if local.unseated_proof is None or local.unseated_published >= wanted:
        return []
    local.unseated_published = wanted
    return [PublishUnseatedProof(m.view.round, local.unseated_proof)]


def start_evaluation(m: ValidatorMachine) -> list[Action]:
    """Once every committed update is fetched or given up (or the cutoff came)."""
    view, local = m.view, m.local
    if not m._selected() or local.evaluation_requested or local.manifest is not None:
        return []
    base, validation_cid = view.global_model, view.validation_cid
    if base is None or validation_cid is None or validation_cid not in view.have:
        return []
    if not m._base_ready():
        return []
    workers = tuple(view.submissions)
    matched = [view.updates.get(worker) for worker in workers]
    all_resolved = all(u is not None and m._resolved(u.cid) for u in matched)
    if not all_resolved and m.now < m._evaluation_cutoff():
        return []
    candidates = tuple(u for u in matched if u is not None and u.cid in view.have)
    local.evaluation_requested = True
    local.evaluated = tuple(u.worker for u in candidates)
    actions: list[Action] = [StartEvaluation(view.round, workers, candidates, validation_cid, base)]
    if len(candidates) < len(workers):
        actions.append(
            Log(
                "warning",
                f"round {view.round}: {len(workers) - len(candidates)} of {len(workers)} "
                "committed updates could not be fetched; they are marked unavailable",
            )
        )
    return actions


def measure_fetched_updates(m: ValidatorMachine) -> list[Action]:
    """Seated, before the evaluation starts: have each committed update measured as soon
    as it is here (once per update; only updates matched to a commitment, so at most one
    per worker)."""
    view, local = m.view, m.local
    if not m._selected() or local.evaluation_requested or local.manifest is not None:
        return []
    validation_cid = view.validation_cid
    if validation_cid is None or validation_cid not in view.have:
        return []
    m.measuring = {(r, cid) for r, cid in m.measuring if r == view.round}
    actions: list[Action] = []
    for update in view.updates.values():
        if update.cid in view.have and (view.round, update.cid) not in m.measuring:
            m.measuring.add((view.round, update.cid))
            actions.append(MeasureUpdate(view.round, update.cid, validation_cid))
    return actions


def commit_manifest(m: ValidatorMachine) -> list[Action]:
    manifest, proof = m.local.manifest, m.local.vrf_proof
    if manifest is None or proof is None or m.view.task is None:
        return []
    if m._tx_status(TxKind.COMMIT_MANIFEST) is not None:
        return []
    try:
        commitment = m.manifest_commitment(m.view.task, m.view.round, m.me, manifest)
    except ProtocolError as problem:
        m.local.manifest = None  # never committable; keeps this from repeating
        return [Log("error", f"round {m.view.round}: manifest not committed: {problem}")]
    return m._send(TxKind.COMMIT_MANIFEST, m.view.round, commitment, proof)


def reveal_manifest(m: ValidatorMachine) -> list[Action]:
    manifest = m.local.manifest
    if manifest is None or not m._landed(TxKind.COMMIT_MANIFEST):
        return []
    actions = m._send(
        TxKind.REVEAL_MANIFEST,
        m.view.round,
        manifest.workers,
        manifest.scores,
        manifest.verdicts,
        manifest.global_accuracy,
        manifest.salt,
    )
    if actions and not m.local.scores_published:
        m.local.scores_published = True
        actions.append(PublishScores(m.view.round, manifest))
    return actions


VALIDATOR_DUTIES: dict[Phase, tuple[Duty, ...]] = {
    Phase.IDLE: MEMBERSHIP_DUTIES,
    Phase.TRAINING: (
        draw_sortition, publish_committee_proof, publish_unseated_proof, measure_fetched_updates,
    ),
    # the evaluation first: an update here when it starts is measured by it, not ahead
    Phase.COMMIT: (
        draw_sortition, publish_committee_proof, publish_unseated_proof, start_evaluation,
        measure_fetched_updates, commit_manifest,
    ),
    Phase.REVEAL: (reveal_manifest,),
    Phase.TERMINATED: (drop_deferred_aggregation,),
}

VALIDATOR_IGNORED: dict[tuple[Phase, type[Event]], str] = {
    **MEMBER_IGNORED,
    **ignore(ALL_PHASES, (TrainingDone, KeyReleaseSealed), "a worker's job"),
    **ignore((Phase.IDLE, Phase.TERMINATED), (SortitionDrawn,), "no round to sit in"),
    **ignore(
        (Phase.IDLE, Phase.TRAINING, Phase.TERMINATED),
        (EvaluationDone,),
        "no evaluation is asked for outside a round's commit phase",
    ),
}

ValidatorMachine.RULES = VALIDATOR_RULES
ValidatorMachine.IGNORED = VALIDATOR_IGNORED
ValidatorMachine.DUTIES = VALIDATOR_DUTIES
