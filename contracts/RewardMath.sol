// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title RewardMath: consensus, rewards and slashing of one round, as a pure function.
/// @notice protocol/rewards.py is the Python reference of exactly this arithmetic (same order of
/// operations, same floors); tests compare the two on random inputs.
///
/// Definitions (all integers; scores and accuracies are fixed point, SCALE = 10**6). Each
/// revealed manifest gives every worker a verdict: REJECT, ACCEPT or UNAVAILABLE (the member
/// could not fetch or open the update by its deadline) and a score (ignored if UNAVAILABLE).
/// - R = number of committee members that revealed. R == 0: nothing is decided (no worker is
///   accepted or rejected), both reward pools and every slash go back to escrow.
/// - the judges of worker j are the revealed members whose verdict on j is not UNAVAILABLE; a
///   member's judged set is the workers it judged. The reference set is the workers judged by
///   strictly more than half of the R reveals; a member is complete iff its judged set equals
///   the reference set. Scores are relative to the set judged (WORK: agreement with the median
///   of the other updates judged; CONTRIBUTION, TOPK: leave-one-out over those judged), so
///   honest members that fetched different subsets disagree while honest complete ones agree.
/// - consensus score of j = LOWER median (sorted ascending, element (n-1)/2) of its complete
///   judges' scores, or of all its judges' scores when no complete member judged j, 0 without
///   judges. It is checked iff strictly more than half of j's complete judges are within
///   tolerance of it. Consensus accuracy = lower median of the revealed global accuracies.
/// - worker j is accepted iff strictly more than half of the R reveals ACCEPT it, and rejected
///   (slashed) iff strictly more than half REJECT it. Otherwise (most could not fetch it, or
///   no majority either way) it is neither: unpaid and not slashed. An unavailable update is
///   never slashed: the committee cannot tell a worker that withheld its update from one whose
///   update a third party kept from them (a flood, a partition), and slashing it would let
///   anyone who can flood the network burn honest deposits. Withholding earns nothing (the
///   update is neither paid nor aggregated), so there is nothing to deter beyond that.
/// - a revealing member agrees iff, for every worker it judged, its verdict does not contradict
///   a majority verdict (ACCEPT on a rejected worker, REJECT on an accepted one) and, if the
///   member is complete and j's consensus score is checked, its score is within tolerance of
///   it. An UNAVAILABLE verdict never disagrees. Non-revealing members and complete members
///   that disagree are slashed. An incomplete member that disagrees is excused: unpaid, not
///   slashed. Its honest scores were measured against another set, and so were its verdicts
///   (WORK: agreement with the median of the updates it judged; an update near the bound
///   flips with the view). So a worker that serves its update to some members only cannot
///   get an honest member slashed. What that leaves open: a member that marks one update
///   UNAVAILABLE can lie or guess the rest at no risk to its stake; it moves no score a
///   complete member judged and no majority, and earns nothing when it is wrong and one
///   worker less when it is right. An unchecked score (no majority of the complete judges
///   near the median: a lying minority lowering scores while a withholding worker made
///   honest members incomplete) slashes nobody.
/// - worker pool W, policy CONTRIBUTION: accepted j gets W * max(median_j, 0) / S with
///   S = sum of max(median, 0) over accepted; S == 0 gives each accepted W / nAccepted.
///   Policy TOPK: accepted workers ranked by (median desc, submission index asc); with
///   k = min(topK, nAccepted): k == 1 gives the best all of W; otherwise the best gets W / 2 and
///   each of the next k - 1 gets (W - W / 2) / (k - 1).
///   Policy WORK (pay for work: data times quality): with cap = the lower median of the
///   accepted workers' sample claims, accepted j weighs min(claim_j, cap) *
///   min(max(median_j, 0), MAX_QUALITY) and gets W * weight_j / totalWeight; totalWeight == 0
///   pays nobody. The median is the score the validators measured (the update's agreement
///   with the round's other updates, protocol/work.py); the cap bounds what an unverifiable
///   claim can earn to what a worker with the round's typical data earns.
/// - a rejected worker loses min(depositLeft, workerSlash); the sum is split equally over the
///   accepted workers (floor); with none accepted it all goes back to escrow.
/// - validator pool V and the slashed stakes are paid for work: an agreeing member's weight is
///   the number of workers it judged, and it gets V * weight / totalWeight +
///   slashed * weight / totalWeight. A member that marks everyone UNAVAILABLE to skip the
///   evaluation is not slashed but earns nothing, and a round without submissions pays no
///   member (there was nothing to judge, and the global model did not change); with
///   totalWeight 0 both go back to escrow. Stake does not weigh the pay: it already buys seats (sortition
///   seats a member with probability min(1, tau * stake / W)), so a member's expected pay
///   grows with its stake through its seats alone. A slashed member loses
///   min(stakeLeft, stake * slashFractionBps / 10000), stake being its own stake as it joined.
/// - every floor remainder and every unpaid pool goes back to escrow (returnedToEscrow).
library RewardMath {
    uint8 internal constant POLICY_CONTRIBUTION = 0;
    uint8 internal constant POLICY_TOPK = 1;
    uint8 internal constant POLICY_WORK = 2;
    // Bounds a WORK score's factor so that W * claim * quality stays below 2**256 (W is a
    // uint128 and a claim a uint64): far above any score protocol/work.py measures.
    uint256 internal constant MAX_QUALITY = type(uint64).max;
    // A manifest's verdict on one worker (protocol/manifest.py WorkerVerdict).
    uint8 internal constant REJECT = 0;
    uint8 internal constant ACCEPT = 1;
    uint8 internal constant UNAVAILABLE = 2;
    uint256 internal constant BPS = 10_000;

    struct Policy {
        uint256 workerReward; // W: paid to accepted workers this round
        uint256 validatorReward; // V: paid to agreeing committee members this round
        uint256 workerSlash; // the most a rejected worker loses this round (deposit * bps / 10000)
        uint256 slashFractionBps; // a slashed member loses this fraction of its own stake
        uint256 tolerance; // fixed point; 0 = exact agreement
        uint8 rewardPolicy; // POLICY_CONTRIBUTION, POLICY_TOPK or POLICY_WORK
        uint256 topK;
    }

    /// One committee member that committed this round (in commit order).
    struct Member {
        bool revealed;
        int256[] scores; // one per worker, in submission order (empty when not revealed)
        uint8[] verdicts; // REJECT, ACCEPT or UNAVAILABLE, one per worker (empty when not revealed)
        uint256 globalAccuracy;
        uint256 stakeLeft; // its stake minus earlier slashes
        uint256 stake; // its stake as it joined (below 2**112): the base of its slash
    }

    struct Outcome {
        uint256 reveals;
        int256[] consensusScores;
        bool[] accepted; // a majority of the reveals ACCEPT
        bool[] rejected; // a majority of the reveals REJECT: slashed
        uint256[] workerPayouts; // reward plus share of slashed deposits
        uint256[] workerSlashes;
        bool[] agreed;
        uint256[] judged; // per member: workers it judged (not UNAVAILABLE); its pay weight
        uint256[] validatorPayouts; // reward plus share of slashed stakes
        uint256[] validatorSlashes;
        uint256 consensusAccuracy;
        uint256 returnedToEscrow;
    }

    /// Public, so the library is deployed once and linked: Task stays under the 24 KiB limit.
    /// `claims`: each worker's claimed sample count (below 2**64), in submission order.
    function settle(
        Policy memory policy,
        uint256[] memory workerDepositLeft,
        uint256[] memory claims,
        Member[] memory members
    ) public pure returns (Outcome memory out) {
        uint256 nWorkers = workerDepositLeft.length;
        uint256 nMembers = members.length;
        out.consensusScores = new int256[](nWorkers);
        out.accepted = new bool[](nWorkers);
        out.rejected = new bool[](nWorkers);
        out.workerPayouts = new uint256[](nWorkers);
        out.workerSlashes = new uint256[](nWorkers);
        out.agreed = new bool[](nMembers);
        out.judged = new uint256[](nMembers);
        out.validatorPayouts = new uint256[](nMembers);
        out.validatorSlashes = new uint256[](nMembers);
        for (uint256 c = 0; c < nMembers; ++c) {
            if (members[c].revealed) ++out.reveals;
        }
        // per member: it revealed a view other than the reference set's and disagrees
        bool[] memory excused = new bool[](nMembers);
        if (out.reveals > 0) {
            _consensus(policy.tolerance, members, out, excused);
        }
        out.returnedToEscrow = _payWorkers(policy, workerDepositLeft, claims, out)
            + _payValidators(policy, members, excused, out);
    }

    function _consensus(uint256 tolerance, Member[] memory members, Outcome memory out, bool[] memory excused)
        private
        pure
    {
        bool[] memory referenceSet = _majorities(members, out);
        bool[] memory complete = _completeMembers(members, referenceSet);
        bool[] memory checked = _scores(tolerance, members, complete, referenceSet, out);
        uint256 r = out.reveals;
        int256[] memory accuracies = new int256[](r);
        uint256 a = 0;
        for (uint256 c = 0; c < members.length; ++c) {
            // Accuracies are bounded by the Task (<= 2**128), so the int cast is exact.
            if (members[c].revealed) accuracies[a++] = int256(members[c].globalAccuracy);
        }
        out.consensusAccuracy = uint256(_lowerMedian(accuracies, r));
        for (uint256 c = 0; c < members.length; ++c) {
            if (members[c].revealed) {
                (out.agreed[c], out.judged[c]) = _agrees(tolerance, members[c], complete[c], checked, out);
                excused[c] = !complete[c] && !out.agreed[c];
            }
        }
    }

    /// Records the majority verdicts in `out` and returns the reference set: per worker,
    /// whether strictly more than half of the reveals judged it (not UNAVAILABLE).
    function _majorities(Member[] memory members, Outcome memory out)
        private
        pure
        returns (bool[] memory referenceSet)
    {
        uint256 nWorkers = out.consensusScores.length;
        uint256 r = out.reveals;
        // Member by member, each manifest's verdicts read in one sweep. Counts stay below the
        // committee size and indices below the array lengths: no overflow checks needed.
        uint256[] memory accepts = new uint256[](nWorkers);
        uint256[] memory rejects = new uint256[](nWorkers);
        for (uint256 c = 0; c < members.length; ++c) {
            if (!members[c].revealed) continue;
            uint8[] memory verdicts = members[c].verdicts;
            for (uint256 j = 0; j < nWorkers;) {
                uint8 verdict = verdicts[j];
                unchecked {
                    if (verdict == ACCEPT) ++accepts[j];
                    else if (verdict != UNAVAILABLE) ++rejects[j];
                    ++j;
                }
            }
        }
        referenceSet = new bool[](nWorkers);
        for (uint256 j = 0; j < nWorkers; ++j) {
            out.accepted[j] = accepts[j] * 2 > r;
            out.rejected[j] = rejects[j] * 2 > r;
            referenceSet[j] = (accepts[j] + rejects[j]) * 2 > r;
        }
    }

    /// Per member: whether it revealed and judged exactly the reference set. Scores are
    /// relative to the set judged, so only these members' scores are comparable.
    function _completeMembers(Member[] memory members, bool[] memory referenceSet)
        private
        pure
        returns (bool[] memory complete)
    {
        uint256 nWorkers = referenceSet.length;
        uint256 referenceSize = 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            if (referenceSet[j]) ++referenceSize;
        }
        complete = new bool[](members.length);
        for (uint256 c = 0; c < members.length; ++c) {
            if (!members[c].revealed) continue;
            uint8[] memory verdicts = members[c].verdicts;
            bool same = true;
            uint256 judged = 0;
            for (uint256 j = 0; j < nWorkers;) {
                bool judgedJ = verdicts[j] != UNAVAILABLE;
                // With every worker in the reference set (the usual round) only the count
                // matters; otherwise the sets are compared worker by worker.
                if (referenceSize < nWorkers && judgedJ != referenceSet[j]) {
                    same = false;
                    break;
                }
                unchecked {
                    if (judgedJ) ++judged;
                    ++j;
                }
            }
            complete[c] = same && judged == referenceSize;
        }
    }

    /// Records the consensus scores in `out` (lower median of the complete judges' scores, of
    /// all judges' when no complete member judged the worker) and returns, per worker, whether
    /// strictly more than half of its complete judges are within tolerance of it.
    /// Every complete member judged exactly the reference set, so a worker of that set has all
    /// of them as its complete judges, and a worker outside it has none.
    function _scores(
        uint256 tolerance,
        Member[] memory members,
        bool[] memory complete,
        bool[] memory referenceSet,
        Outcome memory out
    ) private pure returns (bool[] memory checked) {
        int256[][] memory completeScores = _completeScores(members, complete);
        uint256 nComplete = completeScores.length;
        checked = new bool[](referenceSet.length);
        int256[] memory column = new int256[](out.reveals);
        for (uint256 j = 0; j < referenceSet.length; ++j) {
            uint256 k = 0;
            if (nComplete > 0 && referenceSet[j]) {
                for (; k < nComplete;) {
                    column[k] = completeScores[k][j];
                    unchecked {
                        ++k;
                    }
                }
            } else {
                k = _allJudges(members, j, column);
                if (k == 0) continue;
            }
            int256 median = _lowerMedian(column, k);
            out.consensusScores[j] = median;
            if (nComplete > 0 && referenceSet[j]) checked[j] = _near(column, nComplete, median, tolerance);
        }
    }

    /// The score arrays of the complete members, in commit order.
    function _completeScores(Member[] memory members, bool[] memory complete)
        private
        pure
        returns (int256[][] memory scores)
    {
        uint256 n = 0;
        for (uint256 c = 0; c < members.length; ++c) {
            if (complete[c]) ++n;
        }
        scores = new int256[][](n);
        n = 0;
        for (uint256 c = 0; c < members.length; ++c) {
            if (complete[c]) scores[n++] = members[c].scores;
        }
    }

    /// Writes the scores of every revealed judge of worker j into `column`; returns how many.
    function _allJudges(Member[] memory members, uint256 j, int256[] memory column) private pure returns (uint256 k) {
        for (uint256 c = 0; c < members.length; ++c) {
            if (members[c].revealed && members[c].verdicts[j] != UNAVAILABLE) column[k++] = members[c].scores[j];
        }
    }

    /// Whether strictly more than half of the first n values are within tolerance of median.
    function _near(int256[] memory values, uint256 n, int256 median, uint256 tolerance) private pure returns (bool) {
        uint256 near = 0;
        for (uint256 i = 0; i < n; ++i) {
            int256 diff = values[i] - median;
            if ((diff >= 0 ? uint256(diff) : uint256(-diff)) <= tolerance) ++near;
        }
        return near * 2 > n;
    }

    /// Whether `member` agrees with the consensus, and how many workers it judged. Its scores
    /// count only if it is complete, and only on workers whose consensus score is checked.
    function _agrees(uint256 tolerance, Member memory member, bool complete, bool[] memory checked, Outcome memory out)
        private
        pure
        returns (bool, uint256 judged)
    {
        for (uint256 j = 0; j < out.consensusScores.length; ++j) {
            uint8 verdict = member.verdicts[j];
            if (verdict == UNAVAILABLE) continue;
            ++judged;
            if (out.accepted[j] && verdict != ACCEPT) return (false, judged);
            if (out.rejected[j] && verdict != REJECT) return (false, judged);
            if (!complete || !checked[j]) continue;
            int256 diff = member.scores[j] - out.consensusScores[j];
            uint256 distance = diff >= 0 ? uint256(diff) : uint256(-diff);
            if (distance > tolerance) return (false, judged);
        }
        return (true, judged);
    }

    /// Sorts the first n `values` in place (insertion sort: committees are small) and returns
    /// element (n-1)/2 of them.
    function _lowerMedian(int256[] memory values, uint256 n) private pure returns (int256) {
        for (uint256 i = 1; i < n; ++i) {
            int256 v = values[i];
            uint256 k = i;
            while (k > 0 && values[k - 1] > v) {
                values[k] = values[k - 1];
                --k;
            }
            values[k] = v;
        }
        return values[(n - 1) / 2];
    }

    /// Credits worker payouts and slashes into `out`; returns what goes back to escrow.
    function _payWorkers(
        Policy memory policy,
        uint256[] memory depositLeft,
        uint256[] memory claims,
        Outcome memory out
    ) private pure returns (uint256 returned) {
        uint256 nWorkers = depositLeft.length;
        uint256 nAccepted = 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            if (out.accepted[j]) ++nAccepted;
        }
        uint256 rewarded = 0;
        if (nAccepted > 0) {
            if (policy.rewardPolicy == POLICY_TOPK) {
                rewarded = _payTopK(policy.workerReward, policy.topK, nAccepted, out);
            } else if (policy.rewardPolicy == POLICY_WORK) {
                rewarded = _payWork(policy.workerReward, claims, nAccepted, out);
            } else {
                rewarded = _payContribution(policy.workerReward, nAccepted, out);
            }
        }
        returned = policy.workerReward - rewarded;

        uint256 slashed = 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            if (!out.rejected[j]) continue;
            uint256 s = depositLeft[j] < policy.workerSlash ? depositLeft[j] : policy.workerSlash;
            out.workerSlashes[j] = s;
            slashed += s;
        }
        if (nAccepted == 0) return returned + slashed;
        uint256 share = slashed / nAccepted;
        for (uint256 j = 0; j < nWorkers; ++j) {
            if (out.accepted[j]) out.workerPayouts[j] += share;
        }
        return returned + slashed - share * nAccepted;
    }

    function _payContribution(uint256 pool, uint256 nAccepted, Outcome memory out)
        private
        pure
        returns (uint256 paid)
    {
        uint256 total = 0;
        for (uint256 j = 0; j < out.accepted.length; ++j) {
            if (out.accepted[j] && out.consensusScores[j] > 0) total += uint256(out.consensusScores[j]);
        }
        for (uint256 j = 0; j < out.accepted.length; ++j) {
            if (!out.accepted[j]) continue;
            uint256 amount;
            if (total == 0) {
                amount = pool / nAccepted;
            } else {
                int256 score = out.consensusScores[j];
                amount = score > 0 ? (pool * uint256(score)) / total : 0;
            }
            out.workerPayouts[j] = amount;
            paid += amount;
        }
    }

    function _payWork(uint256 pool, uint256[] memory claims, uint256 nAccepted, Outcome memory out)
        private
        pure
        returns (uint256 paid)
    {
        uint256 nWorkers = out.accepted.length;
        int256[] memory accepted = new int256[](nAccepted);
        uint256 a = 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            // Claims are below 2**64 (Task stores them as uint64), so the int cast is exact.
            if (out.accepted[j]) accepted[a++] = int256(claims[j]);
        }
        uint256 cap = uint256(_lowerMedian(accepted, nAccepted));
        uint256[] memory weights = new uint256[](nWorkers);
        uint256 total = 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            int256 score = out.consensusScores[j];
            if (!out.accepted[j] || score <= 0) continue;
            uint256 quality = uint256(score) < MAX_QUALITY ? uint256(score) : MAX_QUALITY;
            weights[j] = (claims[j] < cap ? claims[j] : cap) * quality;
            total += weights[j];
        }
        if (total == 0) return 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            uint256 amount = (pool * weights[j]) / total;
            out.workerPayouts[j] = amount;
            paid += amount;
        }
    }

    function _payTopK(uint256 pool, uint256 topK, uint256 nAccepted, Outcome memory out)
        private
        pure
        returns (uint256 paid)
    {
        uint256 k = topK < nAccepted ? topK : nAccepted;
        bool[] memory chosen = new bool[](out.accepted.length);
        uint256 restEach = k > 1 ? (pool - pool / 2) / (k - 1) : 0;
        for (uint256 rank = 0; rank < k; ++rank) {
            // Selection of the next best: highest median, earliest submission on ties.
            uint256 best = type(uint256).max;
            for (uint256 j = 0; j < out.accepted.length; ++j) {
                if (!out.accepted[j] || chosen[j]) continue;
                if (best == type(uint256).max || out.consensusScores[j] > out.consensusScores[best]) best = j;
            }
            chosen[best] = true;
            uint256 amount = rank == 0 ? (k == 1 ? pool : pool / 2) : restEach;
            out.workerPayouts[best] = amount;
            paid += amount;
        }
    }

    function _payValidators(Policy memory policy, Member[] memory members, bool[] memory excused, Outcome memory out)
        private
        pure
        returns (uint256 returned)
    {
        uint256 totalWeight = 0;
        uint256 slashed = 0;
        for (uint256 c = 0; c < members.length; ++c) {
            if (out.agreed[c]) {
                // Paid per worker judged: an all-UNAVAILABLE manifest, or a round without
                // submissions, earns nothing.
                totalWeight += out.judged[c];
            } else if (!excused[c]) {
                uint256 left = members[c].stakeLeft;
                uint256 most = (members[c].stake * policy.slashFractionBps) / BPS;
                uint256 s = left < most ? left : most;
                out.validatorSlashes[c] = s;
                slashed += s;
            }
        }
        returned = policy.validatorReward + slashed;
        if (totalWeight == 0) return returned;
        for (uint256 c = 0; c < members.length; ++c) {
            if (!out.agreed[c]) continue;
            uint256 weight = out.judged[c];
            uint256 amount = (policy.validatorReward * weight) / totalWeight + (slashed * weight) / totalWeight;
            out.validatorPayouts[c] = amount;
            returned -= amount;
        }
    }
}
