// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IRegistryForAttack {
    function register(bytes calldata peerId, bytes32 encryptionKey, bytes calldata vrfModulus, bytes calldata vrfProof)
        external;
}

interface ITaskForAttack {
    function joinAsWorker() external payable;
    function leaveTask() external;
    function withdraw() external;
}

/// Test only: a malicious member whose receive() calls withdraw() again, to show that the
/// Task pays once and rejects the nested call. `swallow` = true records the nested call's
/// revert data and lets the outer withdraw finish; false lets the revert bubble up.
contract Reentrant {
    ITaskForAttack public task;
    bool public swallow;
    uint256 public received;
    uint256 public reentryAttempts;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor() payable {}

    function register(
        address registry,
        bytes calldata peerId,
        bytes32 encryptionKey,
        bytes calldata vrfModulus,
        bytes calldata vrfProof
    ) external {
        IRegistryForAttack(registry).register(peerId, encryptionKey, vrfModulus, vrfProof);
    }

    function join(address task_, uint256 deposit) external {
        task = ITaskForAttack(task_);
        task.joinAsWorker{value: deposit}();
    }

    function leaveTask() external {
        task.leaveTask();
    }

    function attack(bool swallow_) external {
        swallow = swallow_;
        task.withdraw();
    }

    receive() external payable {
        received += msg.value;
        if (reentryAttempts > 0) return;
        ++reentryAttempts;
        if (!swallow) {
            task.withdraw();
            reentrySucceeded = true;
            return;
        }
        try task.withdraw() {
            reentrySucceeded = true;
        } catch (bytes memory err) {
            reentryError = err;
        }
    }
}
