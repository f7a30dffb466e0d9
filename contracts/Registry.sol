// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Task} from "./Task.sol";
import {VRF} from "./VRF.sol";

/// @title Registry: participants (address -> libp2p peer ID, X25519 key, VRF key) and tasks.
/// @notice Deployed once, with the address of a Task implementation; every task is an
/// EIP-1167 minimal clone of it (a few hundred bytes instead of the whole Task bytecode).
contract Registry {
    struct Participant {
        bytes peerId; // libp2p peer ID, binary multihash
        bytes32 encryptionKey; // X25519 public key for model-key wrapping
        bytes vrfModulus; // RSA modulus of the VRF public key (e = 65537)
        uint64 registeredAt;
    }

    uint256 public constant MAX_PEER_ID_LENGTH = 128;
    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_MEMBERS = 256; // bounds a task's finalizeRound loops
    uint256 public constant MAX_ROUNDS = 10_000;
    uint256 public constant MAX_AMOUNT = 2 ** 112; // rewards and deposits: payouts stay < 2**128
    uint256 public constant MAX_STRING_LENGTH = 256;
    // Per-worker sample claims: 256 workers of at most 2**40 samples sum below 2**53, so any
    // node's float64 weighting of a round's updates is exact.
    uint256 public constant MAX_SAMPLES_PER_WORKER = 2 ** 40;

    address public immutable taskImplementation;

    mapping(address => Participant) private participants;
    mapping(bytes32 => address) private peerOwner; // keccak(peerId) -> account
    address[] private tasks;
    mapping(address => bool) public isTask;

    event ParticipantRegistered(address indexed account, bytes peerId, bytes32 encryptionKey, bytes vrfModulus);
    event TaskCreated(address indexed task, address indexed requester, uint256 index, uint256 escrow);

    error AlreadyRegistered(address account);
    error EmptyPeerId();
    error PeerIdTooLong(uint256 length, uint256 max);
    error PeerIdTaken(address owner);
    error EmptyEncryptionKey();
    error NotRegistered(address account);
    error InvalidParameter(string name);
    error CloneFailed();
    error TaskIndexOutOfRange(uint256 index, uint256 count);

    constructor(address taskImplementation_) {
        taskImplementation = taskImplementation_;
    }

    function register(bytes calldata peerId, bytes32 encryptionKey, bytes calldata vrfModulus, bytes calldata vrfProof)
        external
    {
        if (participants[msg.sender].registeredAt != 0) revert AlreadyRegistered(msg.sender);
        if (peerId.length == 0) revert EmptyPeerId();
        if (peerId.length > MAX_PEER_ID_LENGTH) revert PeerIdTooLong(peerId.length, MAX_PEER_ID_LENGTH);
        bytes32 peerKey = keccak256(peerId);
        if (peerOwner[peerKey] != address(0)) revert PeerIdTaken(peerOwner[peerKey]);
        if (encryptionKey == bytes32(0)) revert EmptyEncryptionKey();
        _verifyVrfKey(msg.sender, vrfModulus, vrfProof);
        participants[msg.sender] = Participant({
            peerId: peerId,
            encryptionKey: encryptionKey,
            vrfModulus: vrfModulus,
            registeredAt: uint64(block.timestamp)
        });
        peerOwner[peerKey] = msg.sender;
        emit ParticipantRegistered(msg.sender, peerId, encryptionKey, vrfModulus);
    }

    /// A VRF key is registered with its certificate (protocol/keycert.py): a 2048-bit odd modulus
    /// without prime factors below 2^13 and e-th roots (e = 65537) of nine challenges derived
    /// from the modulus and `owner`, which shows x -> x^e mod n permutes Z_n^*, so each VRF input
    /// has exactly one proof. Reverts with VRF's KeySizeInvalid, ModulusEven,
    /// ModulusHasSmallFactor, CertificateLengthInvalid or CertificateRootInvalid.
    function _verifyVrfKey(address owner, bytes calldata modulus, bytes calldata proof) internal view {
        VRF.verifyKeyCertificate(modulus, owner, proof);
    }

    /// Creates a task with the caller as requester; msg.value must be exactly the whole reward,
    /// rounds * (workerRewardPerRound + validatorRewardPerRound).
    function createTask(Task.Params calldata params) external payable returns (address task) {
        validateParams(params);
        task = _clone(taskImplementation);
        isTask[task] = true;
        tasks.push(task);
        Task(task).initialize{value: msg.value}(msg.sender, params, keccak256(abi.encode(params)));
        emit TaskCreated(task, msg.sender, tasks.length - 1, msg.value);
    }

    /// Reverts with InvalidParameter(name) naming the first bad field; public so a client can
    /// check parameters with a call before sending the escrow.
    function validateParams(Task.Params calldata p) public view {
        _checkString(p.modelArch, "modelArch");
        _checkString(p.aggregator, "aggregator");
        _checkString(p.initialModelCid, "initialModelCid");
        if (p.rounds == 0 || p.rounds > MAX_ROUNDS) revert InvalidParameter("rounds");
        if (p.workerRewardPerRound > MAX_AMOUNT) revert InvalidParameter("workerRewardPerRound");
        if (p.validatorRewardPerRound > MAX_AMOUNT) revert InvalidParameter("validatorRewardPerRound");
        if (p.workerDeposit > MAX_AMOUNT) revert InvalidParameter("workerDeposit");
        // Sortition weighs validators by stake: with none, nobody could ever be selected.
        if (p.validatorStake == 0 || p.validatorStake > MAX_AMOUNT) revert InvalidParameter("validatorStake");
        if (p.committeeSize == 0) revert InvalidParameter("committeeSize");
        if (p.trainingDuration == 0) revert InvalidParameter("trainingDuration");
        if (p.commitDuration == 0) revert InvalidParameter("commitDuration");
        if (p.revealDuration == 0) revert InvalidParameter("revealDuration");
        if (p.rewardPolicy == Task.RewardPolicy.TOPK && p.topK == 0) revert InvalidParameter("topK");
        if (p.slashFractionBps > BPS) revert InvalidParameter("slashFractionBps");
        if (p.minWorkers == 0 || p.minWorkers > p.maxWorkers) revert InvalidParameter("minWorkers");
        if (p.maxWorkers > MAX_MEMBERS) revert InvalidParameter("maxWorkers");
        if (p.minValidators == 0 || p.minValidators > p.maxValidators) revert InvalidParameter("minValidators");
        if (p.maxValidators > MAX_MEMBERS) revert InvalidParameter("maxValidators");
        if (p.recruitDeadline <= block.timestamp) revert InvalidParameter("recruitDeadline");
        if (p.maxSamplesPerWorker == 0 || p.maxSamplesPerWorker > MAX_SAMPLES_PER_WORKER) {
            revert InvalidParameter("maxSamplesPerWorker");
        }
        if (p.workersPerRound > p.maxWorkers) revert InvalidParameter("workersPerRound");
    }

    function _checkString(string calldata value, string memory name) private pure {
        if (bytes(value).length == 0 || bytes(value).length > MAX_STRING_LENGTH) revert InvalidParameter(name);
    }

    /// EIP-1167 minimal proxy (the standard 55-byte creation code, as in OpenZeppelin Clones).
    function _clone(address implementation) private returns (address instance) {
        assembly ("memory-safe") {
            mstore(0x00, or(shr(0xe8, shl(0x60, implementation)), 0x3d602d80600a3d3981f3363d3d373d3d3d363d73000000))
            mstore(0x20, or(shl(0x78, implementation), 0x5af43d82803e903d91602b57fd5bf3))
            instance := create(0, 0x09, 0x37)
        }
        if (instance == address(0)) revert CloneFailed();
    }

    // ---------------------------------------------------------------- views

    function isRegistered(address account) external view returns (bool) {
        return participants[account].registeredAt != 0;
    }

    function participant(address account) external view returns (Participant memory) {
        if (participants[account].registeredAt == 0) revert NotRegistered(account);
        return participants[account];
    }

    function vrfModulusOf(address account) external view returns (bytes memory) {
        return participants[account].vrfModulus;
    }

    /// The account that registered `peerId`, or address(0).
    function accountOfPeer(bytes calldata peerId) external view returns (address) {
        return peerOwner[keccak256(peerId)];
    }

    function taskCount() external view returns (uint256) {
        return tasks.length;
    }

    function taskAt(uint256 index) external view returns (address) {
        if (index >= tasks.length) revert TaskIndexOutOfRange(index, tasks.length);
        return tasks[index];
    }

    /// Tasks still recruiting, newest first, at most `limit` of them.
    function openTasks(uint256 limit) external view returns (address[] memory found) {
        found = new address[](limit);
        uint256 n = 0;
        for (uint256 i = tasks.length; i > 0 && n < limit; --i) {
            if (Task(tasks[i - 1]).status() == Task.Status.RECRUITING) found[n++] = tasks[i - 1];
        }
        assembly ("memory-safe") {
            mstore(found, n)
        }
    }
}
