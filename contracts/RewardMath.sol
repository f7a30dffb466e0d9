// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title RewardMath: consensus, rewards and slashing of one round, as a pure function.
/// @notice protocol/rewards.py is the Python reference of exactly this arithmetic (same order of
/// operations, same floors); tests compare the two on random inputs.
///
/// Definitions (all integers; scores and accuracies are fixed point, SCALE = 10**6):
/// - R = number of committee members that revealed. R == 0: nothing is decided (no worker is
///   accepted or rejected), both reward pools and every slash go back to escrow.
/// - consensus score of worker j = LOWER median of the R revealed scores (sorted ascending,
///   element (R-1)/2); consensus accuracy = lower median of the revealed global accuracies.
/// - worker j is accepted iff strictly more than half of the R reveals accept it.
/// - a revealing member agrees iff for every worker |score - median| <= tolerance and its
///   accept bit equals the majority's. Non-revealing or disagreeing members are slashed.
/// - worker pool W, policy CONTRIBUTION: accepted j gets W * max(median_j, 0) / S with
///   S = sum of max(median, 0) over accepted; S == 0 gives each accepted W / nAccepted.
///   Policy TOPK: accepted workers ranked by (median desc, submission index asc); with
///   k = min(topK, nAccepted): k == 1 gives the best all of W; otherwise the best gets W / 2 and
///   each of the next k - 1 gets (W - W / 2) / (k - 1).
/// - a rejected worker loses min(depositLeft, workerSlash); the sum is split equally over the
///   accepted workers (floor); with none accepted it all goes back to escrow.
/// - validator pool V: each agreeing member gets V / nAgreeing; a slashed member loses
///   min(stakeLeft, validatorSlash); the slashed sum is split equally over agreeing members.
/// - every floor remainder and every unpaid pool goes back to escrow (returnedToEscrow).
library RewardMath {
    uint8 internal constant POLICY_CONTRIBUTION = 0;
    uint8 internal constant POLICY_TOPK = 1;

    struct Policy {
        uint256 workerReward; // W: paid to accepted workers this round
        uint256 validatorReward; // V: paid to agreeing committee members this round
        uint256 workerSlash; // the most a rejected worker loses this round (deposit * bps / 10000)
        uint256 validatorSlash; // the most a slashed member loses this round (stake * bps / 10000)
        uint256 tolerance; // fixed point; 0 = exact agreement
        uint8 rewardPolicy; // POLICY_CONTRIBUTION or POLICY_TOPK
        uint256 topK;
    }

    /// One committee member that committed this round (in commit order).
    struct Member {
        bool revealed;
        int256[] scores; // one per worker, in submission order (empty when not revealed)
        bool[] accepts; // one per worker (empty when not revealed)
        uint256 globalAccuracy;
        uint256 stakeLeft;
    }

    struct Outcome {
        uint256 reveals;
        int256[] consensusScores;
        bool[] accepted;
        uint256[] workerPayouts; // reward plus share of slashed deposits
        uint256[] workerSlashes;
        bool[] agreed;
        uint256[] validatorPayouts; // reward plus share of slashed stakes
        uint256[] validatorSlashes;
        uint256 consensusAccuracy;
        uint256 returnedToEscrow;
    }

    /// Public, so the library is deployed once and linked: Task stays under the 24 KiB limit.
    function settle(Policy memory policy, uint256[] memory workerDepositLeft, Member[] memory members)
        public
        pure
        returns (Outcome memory out)
    {
        uint256 nWorkers = workerDepositLeft.length;
        uint256 nMembers = members.length;
        out.consensusScores = new int256[](nWorkers);
        out.accepted = new bool[](nWorkers);
        out.workerPayouts = new uint256[](nWorkers);
        out.workerSlashes = new uint256[](nWorkers);
        out.agreed = new bool[](nMembers);
        out.validatorPayouts = new uint256[](nMembers);
        out.validatorSlashes = new uint256[](nMembers);
        for (uint256 c = 0; c < nMembers; ++c) {
            if (members[c].revealed) ++out.reveals;
        }
        if (out.reveals > 0) {
            _consensus(policy.tolerance, members, out);
        }
        out.returnedToEscrow = _payWorkers(policy, workerDepositLeft, out) + _payValidators(policy, members, out);
    }

    function _consensus(uint256 tolerance, Member[] memory members, Outcome memory out) private pure {
        uint256 nWorkers = out.consensusScores.length;
        uint256 r = out.reveals;
        int256[] memory column = new int256[](r);
        for (uint256 j = 0; j < nWorkers; ++j) {
            uint256 k = 0;
            uint256 accepts = 0;
            for (uint256 c = 0; c < members.length; ++c) {
                if (!members[c].revealed) continue;
                column[k++] = members[c].scores[j];
                if (members[c].accepts[j]) ++accepts;
            }
            out.consensusScores[j] = _lowerMedian(column);
            out.accepted[j] = accepts * 2 > r;
        }
        int256[] memory accuracies = new int256[](r);
        uint256 a = 0;
        for (uint256 c = 0; c < members.length; ++c) {
            // Accuracies are bounded by the Task (<= 2**128), so the int cast is exact.
            if (members[c].revealed) accuracies[a++] = int256(members[c].globalAccuracy);
        }
        out.consensusAccuracy = uint256(_lowerMedian(accuracies));
        for (uint256 c = 0; c < members.length; ++c) {
            if (members[c].revealed) out.agreed[c] = _agrees(tolerance, members[c], out);
        }
    }

    function _agrees(uint256 tolerance, Member memory member, Outcome memory out) private pure returns (bool) {
        for (uint256 j = 0; j < out.consensusScores.length; ++j) {
            if (member.accepts[j] != out.accepted[j]) return false;
            int256 diff = member.scores[j] - out.consensusScores[j];
            uint256 distance = diff >= 0 ? uint256(diff) : uint256(-diff);
            if (distance > tolerance) return false;
        }
        return true;
    }

    /// Sorts `values` in place (insertion sort: committees are small) and returns element (n-1)/2.
    function _lowerMedian(int256[] memory values) private pure returns (int256) {
        for (uint256 i = 1; i < values.length; ++i) {
            int256 v = values[i];
            uint256 k = i;
            while (k > 0 && values[k - 1] > v) {
                values[k] = values[k - 1];
                --k;
            }
            values[k] = v;
        }
        return values[(values.length - 1) / 2];
    }

    /// Credits worker payouts and slashes into `out`; returns what goes back to escrow.
    function _payWorkers(Policy memory policy, uint256[] memory depositLeft, Outcome memory out)
        private
        pure
        returns (uint256 returned)
    {
        uint256 nWorkers = depositLeft.length;
        uint256 nAccepted = 0;
        for (uint256 j = 0; j < nWorkers; ++j) {
            if (out.accepted[j]) ++nAccepted;
        }
        uint256 rewarded = 0;
        if (nAccepted > 0) {
            rewarded = policy.rewardPolicy == POLICY_TOPK
                ? _payTopK(policy.workerReward, policy.topK, nAccepted, out)
                : _payContribution(policy.workerReward, nAccepted, out);
        }
        returned = policy.workerReward - rewarded;

        uint256 slashed = 0;
        if (out.reveals > 0) {
            for (uint256 j = 0; j < nWorkers; ++j) {
                if (out.accepted[j]) continue;
                uint256 s = depositLeft[j] < policy.workerSlash ? depositLeft[j] : policy.workerSlash;
                out.workerSlashes[j] = s;
                slashed += s;
            }
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

    function _payValidators(Policy memory policy, Member[] memory members, Outcome memory out)
        private
        pure
        returns (uint256 returned)
    {
        uint256 nAgreeing = 0;
        uint256 slashed = 0;
        for (uint256 c = 0; c < members.length; ++c) {
            if (out.agreed[c]) {
                ++nAgreeing;
            } else {
                uint256 left = members[c].stakeLeft;
                uint256 s = left < policy.validatorSlash ? left : policy.validatorSlash;
                out.validatorSlashes[c] = s;
                slashed += s;
            }
        }
        if (nAgreeing == 0) return policy.validatorReward + slashed;
        uint256 each = policy.validatorReward / nAgreeing + slashed / nAgreeing;
        for (uint256 c = 0; c < members.length; ++c) {
            if (out.agreed[c]) out.validatorPayouts[c] = each;
        }
        return policy.validatorReward + slashed - each * nAgreeing;
    }
}
