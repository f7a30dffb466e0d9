// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RewardMath} from "./RewardMath.sol";
import {VRF} from "./VRF.sol";

interface IParticipantRegistry {
    function isRegistered(address account) external view returns (bool);
    function vrfModulusOf(address account) external view returns (bytes memory);
}

/// @title Task: one federated-learning task, created through the Registry as a minimal clone.
/// @notice Life: RECRUITING -> RUNNING -> TERMINATED. A running task goes through rounds, each
/// through the phases TRAINING -> COMMIT -> REVEAL -> FINALIZE (finalizeRound may be called).
///
/// Phases are lazy and timestamp based: no transaction is needed for a deadline to pass. A phase
/// ends at its deadline, or earlier in the transaction where the last expected party acts
/// (every worker submitted -> COMMIT; every validator committed -> REVEAL; every committer
/// revealed -> FINALIZE); that transaction records the early end, which shifts the later
/// deadlines. phase() and roundInfo() always report the effective state at block.timestamp.
/// Deadlines are exclusive: an action is in a phase iff start <= block.timestamp < end.
///
/// Money: the whole reward is escrowed at creation; deposits and stakes are locked until
/// termination; everything owed is credited to a pull balance (withdraw()). At all times
/// address(this).balance == escrow + sum(locked deposits) + sum(unwithdrawn balances).
contract Task {
    enum Status {
        RECRUITING,
        RUNNING,
        TERMINATED
    }
    enum Phase {
        NONE, // not running (recruiting or terminated)
        TRAINING,
        COMMIT,
        REVEAL,
        FINALIZE // reveal over; anyone may call finalizeRound
    }
    enum Role {
        NONE,
        WORKER,
        VALIDATOR
    }
    enum RewardPolicy {
        CONTRIBUTION,
        TOPK,
        WORK
    }
    enum Termination {
        NONE,
        ROUND_LIMIT,
        TARGET_REACHED,
        STOPPED,
        CANCELLED
    }

    struct Params {
        string modelArch;
        string aggregator; // aggregation rule spec, e.g. "fedavg" or "median:1"; read off chain
        string initialModelCid;
        uint32 rounds;
        uint128 workerRewardPerRound;
        uint128 validatorRewardPerRound;
        uint128 workerDeposit;
        uint128 validatorStake; // the least a validator stakes (it may stake up to MAX_STAKE)
        uint32 committeeSize; // tau, the expected committee size of the VRF sortition
        uint64 qualificationThreshold; // fixed point; used off chain by validators
        uint64 tolerance; // fixed point; consensus tolerance on scores
        uint64 targetAccuracy; // fixed point; 0 = run all rounds
        uint32 trainingDuration; // seconds
        uint32 commitDuration;
        uint32 revealDuration;
        RewardPolicy rewardPolicy;
        uint16 topK;
        uint16 slashFractionBps;
        uint16 maxWorkers;
        uint16 maxValidators;
        uint16 minWorkers;
        uint16 minValidators;
        uint64 recruitDeadline; // unix seconds; start() must happen before it
        uint64 maxSamplesPerWorker; // submitUpdate's bound on a worker's claimed sample count
        bytes32 modelSpecHash; // hash of the model's full spec; zero = not pinned (no logic here)
        uint16 workersPerRound; // partial participation: 0 = every worker trains every round
    }

    struct RoundState {
        // Phase boundaries; 0 = not recorded (then the boundary is the previous one + duration).
        uint64 trainingStart;
        uint64 commitStart;
        uint64 revealStart;
        uint64 revealEnd;
        uint32 submissions;
        uint32 commits;
        uint32 reveals;
        bool finalized;
        uint16 selected; // workers drawn to train this round (workersPerRound > 0 only)
        uint128 totalStake; // validator stake snapshot at round start (sortition's W)
        bytes32 seed;
        uint256 consensusAccuracy;
        uint256 returnedToEscrow;
    }

    struct Submission {
        bytes32 commitment;
        uint64 nSamples;
    }

    /// One entry of a round's submission order; the claim rides in the same slot, so
    /// settlement reads each submitter with one storage access.
    struct Submitter {
        address worker;
        uint64 nSamples;
    }

    struct Manifest {
        bytes32 commitment;
        bool revealed;
        uint256 globalAccuracy;
        int128[] scores;
        uint8[] verdicts; // RewardMath.REJECT / ACCEPT / UNAVAILABLE, one per worker
    }

    /// A member's money in one slot: settlement reads the deposit left and credits the payout
    /// with one cold access. Both stay below 2**128 (Registry.MAX_AMOUNT bounds every amount).
    struct Account {
        uint128 locked; // deposit or stake, minus slashes
        uint128 credited; // credited, not yet withdrawn
    }

    /// What roundInfo() returns: the effective phase boundaries and counters of one round.
    struct RoundView {
        Phase phase; // effective phase now (NONE once finalized or for another round)
        bytes32 seed;
        uint256 totalStake;
        uint256 trainingStart;
        uint256 trainingEnd;
        uint256 commitEnd;
        uint256 revealEnd;
        uint256 submissions;
        uint256 commits;
        uint256 reveals;
        bool finalized;
    }

    uint256 public constant BPS = 10_000;
    int256 public constant MAX_ABS_SCORE = 1e30; // keeps reward products far from overflow
    uint256 public constant MAX_ACCURACY = 2 ** 128;
    uint256 public constant MAX_CID_LENGTH = 256;
    // The most one validator stakes: 256 of them sum below 2**120, so a round's total stake
    // (a uint128 snapshot) and tau * stake stay exact. No economic cap: a per-identity cap is
    // undone by splitting a stake over identities, which sortition makes worthless anyway.
    uint256 public constant MAX_STAKE = 2 ** 112;

    bool private initialized;
    bool private transient entered;

    address public registry;
    address public requester;
    Params private params_;
    Status public status;
    Termination public termination;
    uint256 public currentRound; // 0 before start, then 1..rounds
    string public validationSetCid;
    bytes32 public paramsHash; // keccak256(abi.encode(params)): binds the sortition seed to them
    uint256 public escrow; // unspent reward (plus whatever returned to it)
    uint256 public totalStake;
    uint256 public totalLocked; // sum of the accounts' locked amounts
    uint256 public totalCredited; // sum of credited, unwithdrawn balances

    address[] private workers_;
    address[] private validators_;
    mapping(address => Role) public roleOf;
    mapping(address => uint256) private memberIndex; // index + 1 in workers_ / validators_
    mapping(address => Account) private accounts_;
    mapping(address => uint256) public stakeOf; // a validator's stake as it joined: its slash base

    mapping(uint256 => RoundState) private rounds_;
    mapping(uint256 => Submitter[]) private submitters;
    mapping(uint256 => mapping(address => Submission)) private submissions;
    mapping(uint256 => address[]) private committers;
    mapping(uint256 => mapping(address => Manifest)) private manifests;

    event TaskInitialized(address indexed registry, address indexed requester, uint256 escrow);
    event MemberJoined(address indexed member, Role role, uint256 amount);
    event MemberLeft(address indexed member, Role role, uint256 refund);
    event TaskStarted(string validationSetCid, uint256 workers, uint256 validators);
    event RoundStarted(
        uint256 indexed round, bytes32 seed, uint256 totalStake, uint256 trainingEnd, uint256 commitEnd, uint256 revealEnd
    );
    event PhaseEndedEarly(uint256 indexed round, Phase nextPhase, uint256 timestamp);
    event UpdateSubmitted(uint256 indexed round, address indexed worker, bytes32 commitment, uint256 nSamples);
    event ManifestCommitted(uint256 indexed round, address indexed validator, bytes32 commitment);
    event ManifestRevealed(
        uint256 indexed round,
        address indexed validator,
        address[] workers,
        int256[] scores,
        uint8[] verdicts,
        uint256 globalAccuracy,
        bytes32 salt
    );
    event WorkerSettled(
        uint256 indexed round, address indexed worker, int256 consensusScore, bool accepted, uint256 payout, uint256 slash
    );
    event ValidatorSettled(
        uint256 indexed round, address indexed validator, bool revealed, bool agreed, uint256 payout, uint256 slash
    );
    event RoundFinalized(
        uint256 indexed round, uint256 reveals, uint256 consensusAccuracy, uint256 returnedToEscrow, uint256 escrowLeft
    );
    event TaskTerminated(Termination reason, uint256 round);
    event Withdrawn(address indexed account, uint256 amount);
    event EscrowReclaimed(address indexed requester, uint256 amount, uint256 escrowLeft);

    error AlreadyInitialized();
    error WrongEscrow(uint256 expected, uint256 sent);
    error WrongDeposit(uint256 expected, uint256 sent);
    error StakeOutOfRange(uint256 minStake, uint256 maxStake, uint256 sent);
    error WrongStatus(Status expected, Status actual);
    error WrongPhase(Phase expected, Phase actual);
    error WrongRound(uint256 expected, uint256 given);
    error NotRegistered(address account);
    error NotRequester(address account);
    error RequesterCannotJoin(address requester);
    error AlreadyMember(address account, Role role);
    error NotMember(address account);
    error NotWorker(address account);
    error TaskFull(Role role, uint256 max);
    error RecruitmentClosed(uint256 deadline, uint256 nowTimestamp);
    error RecruitmentStillOpen(uint256 deadline, uint256 nowTimestamp);
    error NotEnoughMembers(uint256 workers, uint256 minWorkers, uint256 validators, uint256 minValidators);
    error EmptyValidationSet();
    error EmptyCommitment();
    error SamplesOutOfRange(uint256 nSamples, uint256 maxSamplesPerWorker);
    error WorkerNotSelected(uint256 round, address worker);
    error AlreadySubmitted(uint256 round, address worker);
    error NotCommitteeMember(address account, uint256 round);
    error AlreadyCommitted(uint256 round, address validator);
    error NotCommitted(uint256 round, address validator);
    error AlreadyRevealed(uint256 round, address validator);
    error LengthMismatch(uint256 workers, uint256 scores, uint256 verdicts);
    error VerdictOutOfRange(uint256 index, uint256 verdict);
    error ManifestWorkersMismatch(uint256 round, uint256 index);
    error ScoreOutOfRange(uint256 index, int256 score);
    error AccuracyOutOfRange(uint256 globalAccuracy);
    error RevealMismatch(uint256 round, address validator);
    error NothingToWithdraw(address account);
    error ExceedsUnspentEscrow(uint256 requested, uint256 available);
    error TransferFailed(address to, uint256 amount);
    error ReentrantCall();
    error UnseatedMismatch(uint256 round, uint256 commits, uint256 unseated, uint256 proofs);
    error UnseatedNotAscending(uint256 index);

    modifier nonReentrant() {
        if (entered) revert ReentrantCall();
        entered = true;
        _;
        entered = false;
    }

    modifier onlyRequester() {
        if (msg.sender != requester) revert NotRequester(msg.sender);
        _;
    }

    modifier inStatus(Status expected) {
        if (status != expected) revert WrongStatus(expected, status);
        _;
    }

    constructor() {
        // The implementation behind the clones can never be initialized itself.
        initialized = true;
    }

    // ---------------------------------------------------------------- creation and recruiting

    /// Called once by the Registry right after cloning, forwarding the escrow. The Registry has
    /// validated `p` (Registry.validateParams) and hashed it (keccak256(abi.encode(p)); computed
    /// there to keep Task's code small); only the Registry's own clones count as tasks.
    function initialize(address requester_, Params calldata p, bytes32 paramsHash_) external payable {
        if (initialized) revert AlreadyInitialized();
        initialized = true;
        uint256 expected = uint256(p.rounds) * (uint256(p.workerRewardPerRound) + uint256(p.validatorRewardPerRound));
        if (msg.value != expected) revert WrongEscrow(expected, msg.value);
        registry = msg.sender;
        requester = requester_;
        params_ = p;
        paramsHash = paramsHash_;
        escrow = msg.value;
        emit TaskInitialized(msg.sender, requester_, msg.value);
    }

    /// A worker deposits exactly workerDeposit.
    function joinAsWorker() external payable {
        _join(Role.WORKER, workers_, params_.maxWorkers);
        if (msg.value != params_.workerDeposit) revert WrongDeposit(params_.workerDeposit, msg.value);
    }

    /// A validator stakes any amount in [validatorStake, MAX_STAKE]. Stake buys committee
    /// seats (sortition weighs by it), not a higher rate: a seated member is paid per worker
    /// judged, and slashed slashFractionBps of its own stake.
    function joinAsValidator() external payable {
        _join(Role.VALIDATOR, validators_, params_.maxValidators);
        if (msg.value < params_.validatorStake || msg.value > MAX_STAKE) {
            revert StakeOutOfRange(params_.validatorStake, MAX_STAKE, msg.value);
        }
        stakeOf[msg.sender] = msg.value;
        totalStake += msg.value;
    }

    function _join(Role role, address[] storage list, uint256 max) private inStatus(Status.RECRUITING) {
        if (block.timestamp >= params_.recruitDeadline) {
            revert RecruitmentClosed(params_.recruitDeadline, block.timestamp);
        }
        if (msg.sender == requester) revert RequesterCannotJoin(msg.sender);
        if (roleOf[msg.sender] != Role.NONE) revert AlreadyMember(msg.sender, roleOf[msg.sender]);
        if (!IParticipantRegistry(registry).isRegistered(msg.sender)) revert NotRegistered(msg.sender);
        if (list.length >= max) revert TaskFull(role, max);
        list.push(msg.sender);
        memberIndex[msg.sender] = list.length;
        roleOf[msg.sender] = role;
        accounts_[msg.sender].locked = uint128(msg.value);
        totalLocked += msg.value;
        emit MemberJoined(msg.sender, role, msg.value);
    }

    /// Leave before the task starts; the deposit is credited to the pull balance.
    function leaveTask() external inStatus(Status.RECRUITING) {
        Role role = roleOf[msg.sender];
        if (role == Role.NONE) revert NotMember(msg.sender);
        address[] storage list = role == Role.WORKER ? workers_ : validators_;
        uint256 index = memberIndex[msg.sender] - 1;
        address last = list[list.length - 1];
        list[index] = last;
        memberIndex[last] = index + 1;
        list.pop();
        delete memberIndex[msg.sender];
        delete roleOf[msg.sender];
        Account storage account = accounts_[msg.sender];
        uint256 refund = account.locked;
        account.locked = 0;
        if (role == Role.VALIDATOR) {
            totalStake -= refund;
            delete stakeOf[msg.sender];
        }
        totalLocked -= refund;
        totalCredited += refund;
        account.credited += uint128(refund);
        emit MemberLeft(msg.sender, role, refund);
    }

    function start(string calldata validationSetCid_) external onlyRequester inStatus(Status.RECRUITING) {
        if (block.timestamp >= params_.recruitDeadline) {
            revert RecruitmentClosed(params_.recruitDeadline, block.timestamp);
        }
        if (bytes(validationSetCid_).length == 0 || bytes(validationSetCid_).length > MAX_CID_LENGTH) {
            revert EmptyValidationSet();
        }
        if (workers_.length < params_.minWorkers || validators_.length < params_.minValidators) {
            revert NotEnoughMembers(workers_.length, params_.minWorkers, validators_.length, params_.minValidators);
        }
        validationSetCid = validationSetCid_;
        status = Status.RUNNING;
        emit TaskStarted(validationSetCid_, workers_.length, validators_.length);
        _startRound(1, VRF.initialSeed(block.chainid, address(this), paramsHash));
    }

    /// Before start: the requester may cancel at any time, anyone once the recruit deadline
    /// passed. Everything is refunded (escrow to the requester, deposits to members).
    function cancel() external inStatus(Status.RECRUITING) {
        if (msg.sender != requester && block.timestamp < params_.recruitDeadline) {
            revert RecruitmentStillOpen(params_.recruitDeadline, block.timestamp);
        }
        _terminate(Termination.CANCELLED);
    }

    // ---------------------------------------------------------------- rounds

    function submitUpdate(uint256 round, bytes32 commitment, uint256 nSamples) external {
        RoundState storage r = _expectPhase(round, Phase.TRAINING);
        if (roleOf[msg.sender] != Role.WORKER) revert NotWorker(msg.sender);
        uint256 perRound = params_.workersPerRound;
        if (!VRF.workerSelected(r.seed, msg.sender, perRound, workers_.length)) {
            revert WorkerNotSelected(round, msg.sender);
        }
        if (commitment == bytes32(0)) revert EmptyCommitment();
        // The claimed sample count weighs the update in aggregation: bounded per task, so no
        // claim can overflow the fixed-width arithmetic of the nodes that average it.
        uint256 maxSamples = params_.maxSamplesPerWorker;
        if (nSamples == 0 || nSamples > maxSamples) revert SamplesOutOfRange(nSamples, maxSamples);
        Submission storage s = submissions[round][msg.sender];
        if (s.commitment != bytes32(0)) revert AlreadySubmitted(round, msg.sender);
        s.commitment = commitment;
        s.nSamples = uint64(nSamples);
        submitters[round].push(Submitter(msg.sender, uint64(nSamples)));
        r.submissions += 1;
        emit UpdateSubmitted(round, msg.sender, commitment, nSamples);
        if (r.submissions == (perRound == 0 ? workers_.length : r.selected)) {
            r.commitStart = uint64(block.timestamp);
            emit PhaseEndedEarly(round, Phase.COMMIT, block.timestamp);
        }
    }

    function commitManifest(uint256 round, bytes32 commitment, bytes calldata vrfProof) external {
        RoundState storage r = _expectPhase(round, Phase.COMMIT);
        _checkCommitteeMember(msg.sender, round, vrfProof);
        if (commitment == bytes32(0)) revert EmptyCommitment();
        Manifest storage m = manifests[round][msg.sender];
        if (m.commitment != bytes32(0)) revert AlreadyCommitted(round, msg.sender);
        m.commitment = commitment;
        committers[round].push(msg.sender);
        r.commits += 1;
        emit ManifestCommitted(round, msg.sender, commitment);
        // Under sortition this early end needs every validator seated and committed: certain
        // when each threshold is 1 (tau * stake >= W for all), rare otherwise. Otherwise
        // endCommitPhase ends it with the unseated validators' proofs in one transaction
        // (a transaction of its own would cost each of them ~100k gas for nothing).
        if (r.commits == validators_.length) {
            r.revealStart = uint64(block.timestamp);
            emit PhaseEndedEarly(round, Phase.REVEAL, block.timestamp);
        }
    }

    /// Ends the commit phase before its deadline once every validator has committed or is
    /// shown unseated for the round by its own VRF proof (`unseated` in ascending address
    /// order, one proof each; a validator without locked stake needs none). The proof is
    /// unique, so a seated validator has none that shows it unseated: no seated member can be
    /// cut off. Anyone may call it and pays for it (~80k gas per unseated validator); the
    /// unseated validators hand out their proofs off chain for free.
    function endCommitPhase(uint256 round, address[] calldata unseated, bytes[] calldata proofs) external {
        RoundState storage r = _expectPhase(round, Phase.COMMIT);
        if (proofs.length != unseated.length || r.commits + unseated.length != validators_.length) {
            revert UnseatedMismatch(round, r.commits, unseated.length, proofs.length);
        }
        address previous = address(0);
        for (uint256 i = 0; i < unseated.length; ++i) {
            address validator = unseated[i];
            if (validator <= previous) revert UnseatedNotAscending(i);
            previous = validator;
            if (roleOf[validator] != Role.VALIDATOR) revert NotCommitteeMember(validator, round);
            if (manifests[round][validator].commitment != bytes32(0)) revert AlreadyCommitted(round, validator);
            uint256 stake = accounts_[validator].locked;
            if (stake == 0) continue; // never seated
            VRF.verifySeat(
                IParticipantRegistry(registry).vrfModulusOf(validator),
                r.seed,
                round,
                proofs[i],
                stake,
                r.totalStake,
                params_.committeeSize,
                false
            );
        }
        r.revealStart = uint64(block.timestamp);
        emit PhaseEndedEarly(round, Phase.REVEAL, block.timestamp);
    }

    /// Committee sortition, as in protocol/sortition.py: `vrfProof` must be the
    /// validator's RSA-FDH-VRF proof on seed_r || r under its registered (certified) key, and
    /// its beta must fall under min(1, tau * stake / W), with stake its locked stake (slashes
    /// only happen at finalize, so it is fixed within a round) and W the round's snapshot.
    /// Reverts NotCommitteeMember (no stake in this task), or VRF's ProofLengthMismatch,
    /// ProofOutOfRange, ProofInvalid (forged, or for another seed or round) or NotSelected.
    function _checkCommitteeMember(address validator, uint256 round, bytes calldata vrfProof) internal view {
        uint256 stake = accounts_[validator].locked;
        if (roleOf[validator] != Role.VALIDATOR || stake == 0) revert NotCommitteeMember(validator, round);
        RoundState storage r = rounds_[round];
        VRF.verifySeat(
            IParticipantRegistry(registry).vrfModulusOf(validator),
            r.seed,
            round,
            vrfProof,
            stake,
            r.totalStake,
            params_.committeeSize,
            true
        );
    }

    /// Opens a commitment: keccak256(abi.encode(task, round, validator, workers, scores,
    /// verdicts, globalAccuracy, salt)). One verdict per worker: 0 REJECT, 1 ACCEPT,
    /// 2 UNAVAILABLE (the validator could not fetch or open the update by its deadline; the
    /// score it gives that worker is ignored). Settlement: RewardMath.
    function revealManifest(
        uint256 round,
        address[] calldata workers,
        int256[] calldata scores,
        uint8[] calldata verdicts,
        uint256 globalAccuracy,
        bytes32 salt
    ) external {
        RoundState storage r = _expectPhase(round, Phase.REVEAL);
        Manifest storage m = manifests[round][msg.sender];
        if (m.commitment == bytes32(0)) revert NotCommitted(round, msg.sender);
        if (m.revealed) revert AlreadyRevealed(round, msg.sender);
        bytes32 expected =
            keccak256(abi.encode(address(this), round, msg.sender, workers, scores, verdicts, globalAccuracy, salt));
        if (expected != m.commitment) revert RevealMismatch(round, msg.sender);
        if (workers.length != scores.length || workers.length != verdicts.length) {
            revert LengthMismatch(workers.length, scores.length, verdicts.length);
        }
        Submitter[] storage expectedWorkers = submitters[round];
        if (workers.length != expectedWorkers.length) {
            revert ManifestWorkersMismatch(round, workers.length < expectedWorkers.length ? workers.length : expectedWorkers.length);
        }
        if (globalAccuracy > MAX_ACCURACY) revert AccuracyOutOfRange(globalAccuracy);
        for (uint256 j = 0; j < workers.length; ++j) {
            if (workers[j] != expectedWorkers[j].worker) revert ManifestWorkersMismatch(round, j);
            if (scores[j] > MAX_ABS_SCORE || scores[j] < -MAX_ABS_SCORE) revert ScoreOutOfRange(j, scores[j]);
            if (verdicts[j] > RewardMath.UNAVAILABLE) revert VerdictOutOfRange(j, verdicts[j]);
            m.scores.push(int128(scores[j]));
        }
        m.verdicts = verdicts;
        m.globalAccuracy = globalAccuracy;
        m.revealed = true;
        r.reveals += 1;
        emit ManifestRevealed(round, msg.sender, workers, scores, verdicts, globalAccuracy, salt);
        if (r.reveals == r.commits) {
            r.revealEnd = uint64(block.timestamp);
            emit PhaseEndedEarly(round, Phase.FINALIZE, block.timestamp);
        }
    }

    /// Anyone, once the reveal phase is over: consensus, rewards, slashing, then the next round
    /// or termination (round limit, or consensus accuracy >= target).
    function finalizeRound(uint256 round) external {
        RoundState storage r = _expectPhase(round, Phase.FINALIZE);
        r.finalized = true;
        (uint256[] memory left, uint256[] memory claims) = _workersOf(round);
        RewardMath.Outcome memory out = RewardMath.settle(_policy(), left, claims, _committee(round));
        _applyWorkerOutcome(round, out);
        _applyValidatorOutcome(round, out);
        r.consensusAccuracy = out.consensusAccuracy;
        r.returnedToEscrow = out.returnedToEscrow;
        escrow = escrow - params_.workerRewardPerRound - params_.validatorRewardPerRound + out.returnedToEscrow;
        emit RoundFinalized(round, out.reveals, out.consensusAccuracy, out.returnedToEscrow, escrow);

        if (round >= params_.rounds) {
            _terminate(Termination.ROUND_LIMIT);
        } else if (params_.targetAccuracy > 0 && out.reveals > 0 && out.consensusAccuracy >= params_.targetAccuracy) {
            _terminate(Termination.TARGET_REACHED);
        } else {
            _startRound(round + 1, r.seed);
        }
    }

    function _policy() private view returns (RewardMath.Policy memory) {
        return RewardMath.Policy({
            workerReward: params_.workerRewardPerRound,
            validatorReward: params_.validatorRewardPerRound,
            workerSlash: (uint256(params_.workerDeposit) * params_.slashFractionBps) / BPS,
            slashFractionBps: params_.slashFractionBps,
            tolerance: params_.tolerance,
            rewardPolicy: uint8(params_.rewardPolicy),
            topK: params_.topK
        });
    }

    /// The submitters' deposits left and claimed sample counts, in submission order.
    function _workersOf(uint256 round) private view returns (uint256[] memory left, uint256[] memory claims) {
        Submitter[] storage ws = submitters[round];
        left = new uint256[](ws.length);
        claims = new uint256[](ws.length);
        for (uint256 j = 0; j < ws.length; ++j) {
            Submitter storage s = ws[j];
            left[j] = accounts_[s.worker].locked;
            claims[j] = s.nSamples;
        }
    }

    function _committee(uint256 round) private view returns (RewardMath.Member[] memory committee) {
        address[] storage cs = committers[round];
        committee = new RewardMath.Member[](cs.length);
        for (uint256 c = 0; c < cs.length; ++c) {
            Manifest storage m = manifests[round][cs[c]];
            committee[c].revealed = m.revealed;
            committee[c].stakeLeft = accounts_[cs[c]].locked;
            committee[c].stake = stakeOf[cs[c]];
            if (!m.revealed) continue;
            uint256 n = m.scores.length;
            committee[c].scores = new int256[](n);
            for (uint256 j = 0; j < n; ++j) {
                committee[c].scores[j] = m.scores[j];
            }
            committee[c].verdicts = m.verdicts;
            committee[c].globalAccuracy = m.globalAccuracy;
        }
    }

    function _applyWorkerOutcome(uint256 round, RewardMath.Outcome memory out) private {
        Submitter[] storage ws = submitters[round];
        uint256 paid = 0;
        uint256 slashed = 0;
        for (uint256 j = 0; j < ws.length; ++j) {
            address w = ws[j].worker;
            uint256 payout = out.workerPayouts[j];
            uint256 slash = out.workerSlashes[j];
            _settleAccount(accounts_[w], payout, slash);
            paid += payout;
            slashed += slash;
            emit WorkerSettled(round, w, out.consensusScores[j], out.accepted[j], payout, slash);
        }
        totalLocked -= slashed;
        totalCredited += paid;
    }

    function _applyValidatorOutcome(uint256 round, RewardMath.Outcome memory out) private {
        address[] storage cs = committers[round];
        uint256 paid = 0;
        uint256 slashed = 0;
        for (uint256 c = 0; c < cs.length; ++c) {
            address v = cs[c];
            uint256 payout = out.validatorPayouts[c];
            uint256 slash = out.validatorSlashes[c];
            _settleAccount(accounts_[v], payout, slash);
            paid += payout;
            slashed += slash;
            emit ValidatorSettled(round, v, manifests[round][v].revealed, out.agreed[c], payout, slash);
        }
        totalStake -= slashed;
        totalLocked -= slashed;
        totalCredited += paid;
    }

    /// One write per member: its outcome is in the Worker/ValidatorSettled event, not in
    /// storage, so settlement costs a round a few thousand gas per member.
    function _settleAccount(Account storage account, uint256 payout, uint256 slash) private {
        if (slash == 0 && payout == 0) return;
        // Payouts are bounded by the escrow and slashes by the deposit: both below 2**128.
        account.locked -= uint128(slash);
        account.credited += uint128(payout);
    }

    /// Stop a running task now; the current round is abandoned and its reward stays in escrow.
    function stopTraining() external onlyRequester inStatus(Status.RUNNING) {
        _terminate(Termination.STOPPED);
    }

    function _startRound(uint256 round, bytes32 previousSeed) private {
        currentRound = round;
        RoundState storage r = rounds_[round];
        r.trainingStart = uint64(block.timestamp);
        r.totalStake = uint128(totalStake);
        // Sortition seed chain (as protocol/sortition.py computes it).
        r.seed = VRF.nextSeed(previousSeed, round, block.prevrandao);
        (, uint256 trainingEnd, uint256 commitEnd, uint256 revealEnd) = _boundaries(r);
        emit RoundStarted(round, r.seed, totalStake, trainingEnd, commitEnd, revealEnd);
        uint256 perRound = params_.workersPerRound;
        if (perRound == 0) return;
        uint256 n = workers_.length;
        uint256 selected = n;
        if (perRound < n) {
            // Counted once, so the training phase can end when the last drawn worker submits.
            selected = 0;
            for (uint256 i = 0; i < n; ++i) {
                if (VRF.workerSelected(r.seed, workers_[i], perRound, n)) ++selected;
            }
        }
        r.selected = uint16(selected);
        if (selected == 0) {
            // Nobody drawn: the training phase is over at once; the committee settles an empty
            // round (nothing judged, so nobody paid: both pools stay in escrow) and the task
            // goes on to the next round with a new seed.
            r.commitStart = uint64(block.timestamp);
            emit PhaseEndedEarly(round, Phase.COMMIT, block.timestamp);
        }
    }

    function _terminate(Termination reason) private {
        status = Status.TERMINATED;
        termination = reason;
        emit TaskTerminated(reason, currentRound);
    }

    /// Reverts unless the task is running, `round` is the current one and its effective phase
    /// is `expected`.
    function _expectPhase(uint256 round, Phase expected) private view returns (RoundState storage r) {
        if (status != Status.RUNNING) revert WrongStatus(Status.RUNNING, status);
        if (round != currentRound) revert WrongRound(currentRound, round);
        r = rounds_[round];
        Phase actual = _phaseOf(r);
        if (actual != expected) revert WrongPhase(expected, actual);
    }

    /// Effective phase boundaries: a recorded early end wins over start + duration.
    function _boundaries(RoundState storage r)
        private
        view
        returns (uint256 trainingStart, uint256 trainingEnd, uint256 commitEnd, uint256 revealEnd)
    {
        trainingStart = r.trainingStart;
        trainingEnd = r.commitStart != 0 ? r.commitStart : trainingStart + params_.trainingDuration;
        commitEnd = r.revealStart != 0 ? r.revealStart : trainingEnd + params_.commitDuration;
        revealEnd = r.revealEnd != 0 ? r.revealEnd : commitEnd + params_.revealDuration;
    }

    function _phaseOf(RoundState storage r) private view returns (Phase) {
        if (r.finalized || r.trainingStart == 0) return Phase.NONE;
        (, uint256 trainingEnd, uint256 commitEnd, uint256 revealEnd) = _boundaries(r);
        if (block.timestamp < trainingEnd) return Phase.TRAINING;
        if (block.timestamp < commitEnd) return Phase.COMMIT;
        // Once the commit phase is over, a reveal phase with every committer revealed (or
        // nobody to wait for) is already over.
        if (block.timestamp < revealEnd && r.reveals < r.commits) return Phase.REVEAL;
        return Phase.FINALIZE;
    }

    // ---------------------------------------------------------------- money out

    /// Pull payment: rewards, refunds and, once terminated, the remaining deposit or stake.
    function withdraw() external nonReentrant {
        Account storage account = accounts_[msg.sender];
        uint256 credited = account.credited;
        uint256 released = status == Status.TERMINATED ? account.locked : 0;
        uint256 amount = credited + released;
        account.credited = 0;
        account.locked -= uint128(released);
        totalCredited -= credited;
        totalLocked -= released;
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// After termination the requester takes back unspent escrow (any amount up to it).
    function reclaimEscrow(uint256 amount) external onlyRequester inStatus(Status.TERMINATED) nonReentrant {
        if (amount == 0 || amount > escrow) revert ExceedsUnspentEscrow(amount, escrow);
        escrow -= amount;
        emit EscrowReclaimed(msg.sender, amount, escrow);
        _send(msg.sender, amount);
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }

    // ---------------------------------------------------------------- views

    function params() external view returns (Params memory) {
        return params_;
    }

    function phase() external view returns (Phase) {
        if (status != Status.RUNNING) return Phase.NONE;
        return _phaseOf(rounds_[currentRound]);
    }

    /// The current workers and validators (join order, except that leave() swaps in the last).
    function members() external view returns (address[] memory, address[] memory) {
        return (workers_, validators_);
    }

    /// What `account` could withdraw now.
    function withdrawable(address account) external view returns (uint256) {
        Account storage a = accounts_[account];
        return a.credited + (status == Status.TERMINATED ? a.locked : 0);
    }

    /// The books: address(this).balance always equals escrow + locked + credited.
    function books() external view returns (uint256, uint256, uint256) {
        return (escrow, totalLocked, totalCredited);
    }

    /// Credited but not yet withdrawn (excludes the locked deposit).
    function balanceOf(address account) external view returns (uint256) {
        return accounts_[account].credited;
    }

    /// A member's deposit or stake, minus slashes (zero once withdrawn).
    function lockedDeposit(address account) external view returns (uint256) {
        return accounts_[account].locked;
    }

    function roundInfo(uint256 round) external view returns (RoundView memory v) {
        RoundState storage r = rounds_[round];
        (v.trainingStart, v.trainingEnd, v.commitEnd, v.revealEnd) = _boundaries(r);
        v.phase = status == Status.RUNNING && round == currentRound ? _phaseOf(r) : Phase.NONE;
        v.seed = r.seed;
        v.totalStake = r.totalStake;
        v.submissions = r.submissions;
        v.commits = r.commits;
        v.reveals = r.reveals;
        v.finalized = r.finalized;
    }

    /// Whether `worker` is drawn to train in `round` (always true when workersPerRound is 0).
    function workerSelected(uint256 round, address worker) external view returns (bool) {
        return roleOf[worker] == Role.WORKER
            && VRF.workerSelected(rounds_[round].seed, worker, params_.workersPerRound, workers_.length);
    }

    function submittedWorkers(uint256 round) external view returns (address[] memory workers) {
        Submitter[] storage ws = submitters[round];
        workers = new address[](ws.length);
        for (uint256 j = 0; j < ws.length; ++j) {
            workers[j] = ws[j].worker;
        }
    }

    function committedValidators(uint256 round) external view returns (address[] memory) {
        return committers[round];
    }

    function updateCommitment(uint256 round, address worker) external view returns (bytes32, uint256) {
        Submission storage s = submissions[round][worker];
        return (s.commitment, s.nSamples);
    }

    function manifestCommitment(uint256 round, address validator) external view returns (bytes32, bool) {
        Manifest storage m = manifests[round][validator];
        return (m.commitment, m.revealed);
    }
}
