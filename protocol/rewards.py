"""Consensus, rewards and slashing of one round: the Python reference of contracts/RewardMath.sol.

Same integers, same order of operations, same floors, so ``settle_round`` returns exactly
what the Task contract credits on ``finalizeRound`` (tests compare the two on random inputs).

Definitions (scores and accuracies are fixed point, protocol.fixedpoint.SCALE = 10**6). Each
revealed manifest gives every worker a ``WorkerVerdict`` (protocol.manifest): REJECT, ACCEPT or
UNAVAILABLE (the validator could not fetch or open the update by its deadline), and a score,
ignored when UNAVAILABLE.

- ``R`` = committee members that revealed. ``R == 0``: nothing is decided; no worker is
  accepted or rejected, both reward pools and every slash return to escrow.
- The judges of a worker are the revealed members whose verdict on it is not UNAVAILABLE;
  a member's judged set is the workers it judged. The round's reference set is the workers
  judged by strictly more than half of the R reveals, and a member is complete iff its
  judged set equals the reference set. A score is relative to the judged set (under WORK an
  update's agreement with the median of the other updates judged, under CONTRIBUTION and
  TOPK its leave-one-out over the qualified updates judged), so honest members that fetched
  different subsets reveal different scores for the same update, while honest complete
  members reveal the same ones.
- The consensus score of a worker is the LOWER median (sorted ascending, element
  ``(n - 1) // 2``) of its complete judges' scores, or of all its judges' scores when no
  complete member judged it, 0 without judges. It is checked when strictly more than half
  of its complete judges are within ``tolerance`` of it (the complete members that measured
  the same thing agree on a value). Consensus accuracy = lower median of the revealed global
  accuracies.
- A worker is accepted iff strictly more than half of the R reveals ACCEPT it, rejected iff
  strictly more than half REJECT it; otherwise (most could not fetch it, or no majority
  either way) it is neither: unpaid and not slashed.
- **An unavailable update is rejected and unpaid, never slashed.** Nobody on chain can tell
  a worker that withheld its update from one whose update a third party kept from the
  committee (a flood, a partition, an eclipse): slashing it would let anyone who can flood
  the network burn honest deposits. Withholding gains nothing (no pay, and an update nobody
  accepted is not aggregated), so no slash is needed to deter it.
- A revealing member agrees iff, for every worker it judged, its verdict does not contradict
  a majority verdict (ACCEPT on a rejected worker, REJECT on an accepted one) and, when the
  member is complete and the worker's consensus score is checked, its score is within
  ``tolerance`` of it. UNAVAILABLE never disagrees, so a validator that could not fetch what
  others fetched is not slashed. Members that committed and did not reveal, and complete
  members that disagree, are slashed ``min(stake_left, stake * bps // BPS)``, with ``stake``
  the member's own stake as it joined (``Policy.validator_slash``). An incomplete member that
  disagrees is **excused**: unpaid, not slashed. Its honest scores are measured against
  another set, and so are its verdicts (WORK: an update's agreement with the median of the
  updates judged; one near the bound flips with the view). So a worker that serves its
  update to some members and withholds it from others gets no honest member slashed: the
  reference set either includes its update (those that missed it are incomplete) or not
  (those that fetched it are), and the complete ones agree. The score consensus assumes an
  honest majority among the complete judges of each worker. A minority that marks an honest
  worker UNAVAILABLE to keep it unpaid fails whenever the honest members that fetched it are
  a majority of the reveals, and forgoes its own pay for it.
- What views leave open. A member that marks one update UNAVAILABLE makes itself
  incomplete, and then risks its pay, not its stake: a liar's or a lazy guesser's verdicts
  and scores move no majority and no consensus score a complete member judged (every worker
  of the reference set has complete judges as soon as one member is complete); it earns
  nothing when a verdict is wrong and is paid for one worker less when it guessed right (a
  lazy member that ACCEPTs everything, in a round where a majority accepts everyone).
  With no complete member at all (several workers each withholding from a different
  member) no score is checked and each consensus score is the lower median of all its
  judges, a median of different measures. A liar among the complete judges that lowers
  scores while a withholding worker made enough honest members incomplete (one honest of
  three) leaves no strict majority near the median: no score is checked, nobody is
  slashed, and the lower median takes the liar's lower scores, which moves the worker pool
  towards the colluding worker (a raised score does not move a lower median).
- Worker pool W, CONTRIBUTION: accepted j gets ``W * max(median_j, 0) // S`` with S the sum of
  positive medians over accepted workers; ``S == 0`` → each accepted gets ``W // n_accepted``.
  TOPK: rank accepted by (median desc, submission index asc); ``k = min(top_k, n_accepted)``;
  ``k == 1`` → the best gets all of W, else the best gets ``W // 2`` and each of the next
  ``k - 1`` gets ``(W - W // 2) // (k - 1)``.
  WORK (pay for work: data times quality): with ``cap`` the lower median of the accepted
  workers' sample claims (``protocol.claims``), accepted j weighs
  ``min(claim_j, cap) * min(max(median_j, 0), MAX_QUALITY)`` and gets
  ``W * weight_j // total``; ``total == 0`` pays nobody. Under this policy a validator's
  score is the update's quality as ``protocol.work`` measures it (its delta's agreement with
  the round's other updates), and an update that shows no work is REJECTED, so a free rider
  is slashed, not paid; one the round cannot judge (no update shows work measurably:
  ``protocol.work.UNDECIDED``) is UNAVAILABLE at every validator, neither paid nor slashed.
- A rejected worker loses ``min(deposit_left, worker_slash)``; the sum is shared equally
  (floor) by the accepted workers, or returns to escrow when none is accepted.
- Validator pool V and slashed stakes are paid for work done: an agreeing member's weight is
  the number of workers it judged; it gets ``V * weight // total + slashed * weight // total``.
  So a lazy member that marks every worker UNAVAILABLE to skip the evaluation is not slashed,
  but earns nothing, and a round without submissions pays no member (nothing was judged and
  the global model did not change); with ``total == 0`` both return to escrow. Stake does not weigh the pay: it buys seats
  (``protocol.sortition`` seats a member with probability ``min(1, tau * stake / W)``), so a
  member's expected pay grows with its stake through its seats alone, and paying per stake on
  top would pay a large stake twice.
- Every floor remainder and every unpaid amount returns to escrow (``returned_to_escrow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from protocol.errors import ProtocolError
from protocol.limits import BPS
from protocol.manifest import WorkerVerdict, to_verdicts

__all__ = [
    "BPS",
    "MAX_QUALITY",
    "CommitteeMember",
    "Policy",
    "RewardError",
    "RewardPolicy",
    "Settlement",
    "WorkerVerdict",
    "complete_members",
    "lower_median",
    "settle_round",
    "terminates",
]


class RewardPolicy(IntEnum):
    """Task.RewardPolicy: how the worker pool is split among accepted workers."""

    CONTRIBUTION = 0
    TOPK = 1
    WORK = 2


MAX_QUALITY = 2**64 - 1
"""RewardMath.MAX_QUALITY: a WORK score's factor is clipped to it, so that W * claim * quality
stays below 2**256 (W below 2**128, a claim below 2**64)."""


class RewardError(ProtocolError):
    """Inputs to the settlement do not describe a round the contract could settle."""


@dataclass(frozen=True)
class Policy:
    """RewardMath.Policy: one round's pools and slash amounts."""

    worker_reward: int
    validator_reward: int
    worker_slash: int
    slash_fraction_bps: int  # a slashed committee member loses this part of its own stake
    tolerance: int
    reward_policy: RewardPolicy
    top_k: int

    @classmethod
    def for_task(
        cls,
        *,
        worker_reward_per_round: int,
        validator_reward_per_round: int,
        worker_deposit: int,
        slash_fraction_bps: int,
        tolerance: int,
        reward_policy: RewardPolicy,
        top_k: int,
    ) -> Policy:
        """The policy a Task derives from its parameters (Task._policy)."""
        if not 0 <= slash_fraction_bps <= BPS:
            raise RewardError(f"slash_fraction_bps must be in [0, {BPS}], got {slash_fraction_bps}")
        return cls(
            worker_reward=worker_reward_per_round,
            validator_reward=validator_reward_per_round,
            worker_slash=worker_deposit * slash_fraction_bps // BPS,
            slash_fraction_bps=slash_fraction_bps,
            tolerance=tolerance,
            reward_policy=RewardPolicy(reward_policy),
            top_k=top_k,
        )

    def validator_slash(self, stake: int) -> int:
        """The most a slashed committee member whose stake was ``stake`` loses in a round."""
        return stake * self.slash_fraction_bps // BPS


@dataclass(frozen=True)
class CommitteeMember:
    """RewardMath.Member: one member that committed this round, in commit order."""

    revealed: bool
    scores: tuple[int, ...]  # one per worker, submission order; () when not revealed
    verdicts: tuple[WorkerVerdict, ...]  # one per worker (a bool reads as ACCEPT / REJECT)
    global_accuracy: int
    stake_left: int  # its stake minus earlier slashes
    # Its stake as it joined (Task.stakeOf), the base of its slash; None: stake_left (a member
    # never slashed before).
    stake: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdicts", to_verdicts(self.verdicts))

    @property
    def own_stake(self) -> int:
        """The base of its slash: ``stake``, or ``stake_left`` when that is not given."""
        return self.stake_left if self.stake is None else self.stake


@dataclass(frozen=True)
class Settlement:
    """RewardMath.Outcome. Worker lists are in submission order, member lists in commit order."""

    reveals: int
    consensus_scores: tuple[int, ...]
    accepted: tuple[bool, ...]  # a majority of the reveals ACCEPT
    rejected: tuple[bool, ...]  # a majority of the reveals REJECT: slashed
    worker_payouts: tuple[int, ...]  # reward plus share of slashed deposits
    worker_slashes: tuple[int, ...]
    agreed: tuple[bool, ...]
    judged: tuple[int, ...]  # per member: workers it judged (not UNAVAILABLE); its pay weight
    validator_payouts: tuple[int, ...]  # reward plus share of slashed stakes
    validator_slashes: tuple[int, ...]
    consensus_accuracy: int
    returned_to_escrow: int


def lower_median(values: Sequence[int]) -> int:
    """Element (n - 1) // 2 of the sorted values: for an even count, the lower middle one."""
    if not values:
        raise RewardError("median of no values")
    return sorted(values)[(len(values) - 1) // 2]


def settle_round(
    policy: Policy,
    worker_deposits_left: Sequence[int],
    committee: Sequence[CommitteeMember],
    claims: Sequence[int] | None = None,
) -> Settlement:
    """RewardMath.settle. `claims`: each worker's claimed sample count in submission order
    (below 2**64); only the WORK policy reads them, and needs them."""
    n_workers = len(worker_deposits_left)
    if claims is None:
        if policy.reward_policy == RewardPolicy.WORK and n_workers:
            raise RewardError("the WORK policy weighs workers by their sample claims; pass claims")
        claims = [0] * n_workers
    if len(claims) != n_workers:
        raise RewardError(f"{len(claims)} sample claims for {n_workers} workers")
    for index, member in enumerate(committee):
        if member.revealed and not (len(member.scores) == len(member.verdicts) == n_workers):
            raise RewardError(
                f"committee[{index}] revealed {len(member.scores)} scores and "
                f"{len(member.verdicts)} verdicts for {n_workers} workers"
            )
    revealed = [m for m in committee if m.revealed]
    reveals = len(revealed)

    consensus = [0] * n_workers
    accepted = [False] * n_workers
    rejected = [False] * n_workers
    agreed = [False] * len(committee)
    judged = [0] * len(committee)
    excused = [False] * len(committee)  # revealed an incomplete view, and disagrees
    consensus_accuracy = 0
    if reveals > 0:
        complete = complete_members(committee)
        checked = [False] * n_workers
        for j in range(n_workers):
            judges = [
                c for c, m in enumerate(committee) if m.revealed and m.verdicts[j] != WorkerVerdict.UNAVAILABLE
            ]
            scorers = [c for c in judges if complete[c]]
            if judges:
                column = [committee[c].scores[j] for c in (scorers or judges)]
                consensus[j] = lower_median(column)
            near = sum(1 for c in scorers if abs(committee[c].scores[j] - consensus[j]) <= policy.tolerance)
            checked[j] = 2 * near > len(scorers)
            votes = [committee[c].verdicts[j] for c in judges]
            accepted[j] = 2 * votes.count(WorkerVerdict.ACCEPT) > reveals
            rejected[j] = 2 * votes.count(WorkerVerdict.REJECT) > reveals
        consensus_accuracy = lower_median([m.global_accuracy for m in revealed])
        for c, member in enumerate(committee):
            if member.revealed:
                agreed[c], judged[c] = _agrees(
                    policy.tolerance, member, complete[c], consensus, checked, accepted, rejected
                )
                excused[c] = not complete[c] and not agreed[c]

    worker_payouts, worker_slashes, returned_workers = _pay_workers(
        policy, worker_deposits_left, claims, consensus, accepted, rejected
    )
    validator_payouts, validator_slashes, returned_validators = _pay_validators(
        policy, committee, agreed, judged, excused
    )
    return Settlement(
        reveals=reveals,
        consensus_scores=tuple(consensus),
        accepted=tuple(accepted),
        rejected=tuple(rejected),
        worker_payouts=tuple(worker_payouts),
        worker_slashes=tuple(worker_slashes),
        agreed=tuple(agreed),
        judged=tuple(judged),
        validator_payouts=tuple(validator_payouts),
        validator_slashes=tuple(validator_slashes),
        consensus_accuracy=consensus_accuracy,
        returned_to_escrow=returned_workers + returned_validators,
    )


def complete_members(committee: Sequence[CommitteeMember]) -> list[bool]:
    """Per member (commit order): whether it revealed and judged exactly the round's reference
    set, the workers that strictly more than half of the reveals judged (not UNAVAILABLE)."""
    revealed = [m for m in committee if m.revealed]
    if not revealed:
        return [False] * len(committee)
    n_workers = len(revealed[0].verdicts)
    reference = [
        2 * sum(1 for m in revealed if m.verdicts[j] != WorkerVerdict.UNAVAILABLE) > len(revealed)
        for j in range(n_workers)
    ]
    return [
        m.revealed
        and all((m.verdicts[j] != WorkerVerdict.UNAVAILABLE) == reference[j] for j in range(n_workers))
        for m in committee
    ]


def _agrees(
    tolerance: int,
    member: CommitteeMember,
    complete: bool,
    consensus: Sequence[int],
    checked: Sequence[bool],
    accepted: Sequence[bool],
    rejected: Sequence[bool],
) -> tuple[bool, int]:
    """Whether `member` agrees with the consensus, and how many workers it judged (counted
    up to its first disagreement, as RewardMath._agrees does). Its scores are checked only
    when it is complete, and on a worker only where the consensus score is ``checked``."""
    judged = 0
    for j, verdict in enumerate(member.verdicts):
        if verdict == WorkerVerdict.UNAVAILABLE:
            continue
        judged += 1
        if accepted[j] and verdict != WorkerVerdict.ACCEPT:
            return False, judged
        if rejected[j] and verdict != WorkerVerdict.REJECT:
            return False, judged
        if complete and checked[j] and abs(member.scores[j] - consensus[j]) > tolerance:
            return False, judged
    return True, judged


def _pay_workers(
    policy: Policy,
    deposits_left: Sequence[int],
    claims: Sequence[int],
    consensus: Sequence[int],
    accepted: Sequence[bool],
    rejected: Sequence[bool],
) -> tuple[list[int], list[int], int]:
    n_workers = len(deposits_left)
    payouts = [0] * n_workers
    slashes = [0] * n_workers
    accepted_idx = [j for j in range(n_workers) if accepted[j]]
    pool = policy.worker_reward
    rewarded = 0
    if accepted_idx:
        if policy.reward_policy == RewardPolicy.TOPK:
            ranked = sorted(accepted_idx, key=lambda j: (-consensus[j], j))
            k = min(policy.top_k, len(ranked))
            rest_each = (pool - pool // 2) // (k - 1) if k > 1 else 0
            for rank, j in enumerate(ranked[:k]):
                payouts[j] = (pool if k == 1 else pool // 2) if rank == 0 else rest_each
        elif policy.reward_policy == RewardPolicy.WORK:
            cap = lower_median([claims[j] for j in accepted_idx])
            weights = {
                j: min(claims[j], cap) * min(consensus[j], MAX_QUALITY)
                for j in accepted_idx
                if consensus[j] > 0
            }
            total = sum(weights.values())
            if total:
                for j, weight in weights.items():
                    payouts[j] = pool * weight // total
        else:
            total = sum(consensus[j] for j in accepted_idx if consensus[j] > 0)
            for j in accepted_idx:
                if total == 0:
                    payouts[j] = pool // len(accepted_idx)
                else:
                    payouts[j] = pool * consensus[j] // total if consensus[j] > 0 else 0
        rewarded = sum(payouts)
    returned = pool - rewarded

    slashed = 0
    for j in range(n_workers):
        if rejected[j]:
            slashes[j] = min(deposits_left[j], policy.worker_slash)
            slashed += slashes[j]
    if not accepted_idx:
        return payouts, slashes, returned + slashed
    share = slashed // len(accepted_idx)
    for j in accepted_idx:
        payouts[j] += share
    return payouts, slashes, returned + slashed - share * len(accepted_idx)


def _pay_validators(
    policy: Policy,
    committee: Sequence[CommitteeMember],
    agreed: Sequence[bool],
    judged: Sequence[int],
    excused: Sequence[bool],
) -> tuple[list[int], list[int], int]:
    payouts = [0] * len(committee)
    slashes = [0] * len(committee)
    for c, member in enumerate(committee):
        if not agreed[c] and not excused[c]:
            slashes[c] = min(member.stake_left, policy.validator_slash(member.own_stake))
    slashed = sum(slashes)
    weights = [judged[c] if agreed[c] else 0 for c in range(len(committee))]
    total = sum(weights)
    returned = policy.validator_reward + slashed
    if total == 0:
        return payouts, slashes, returned
    for c, weight in enumerate(weights):
        if agreed[c]:
            payouts[c] = policy.validator_reward * weight // total + slashed * weight // total
            returned -= payouts[c]
    return payouts, slashes, returned


def terminates(
    *, round: int, rounds: int, target_accuracy: int, reveals: int, consensus_accuracy: int
) -> bool:
    """Task.finalizeRound's stop rule: the round limit, or the consensus accuracy reaching a
    non-zero target (only when someone revealed)."""
    if round >= rounds:
        return True
    return target_accuracy > 0 and reveals > 0 and consensus_accuracy >= target_accuracy
