// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// Test only: what a node sees if the address it follows is not one of our Tasks (or one with
/// a bug): the Task's own event and view signatures carrying values no Task can produce.
/// node/chain must refuse them by name before they reach the node's arithmetic.
contract HostileTask {
    event UpdateSubmitted(uint256 indexed round, address indexed worker, bytes32 commitment, uint256 nSamples);

    function submitHuge(uint256 nSamples) external {
        emit UpdateSubmitted(1, msg.sender, bytes32(uint256(1)), nSamples);
    }

    function updateCommitment(uint256, address) external pure returns (bytes32, uint256) {
        return (bytes32(uint256(1)), type(uint64).max);
    }

    function currentRound() external pure returns (uint256) {
        return 2 ** 255;
    }
}
