// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// Test only: the two commitments exactly as the protocol defines them, so tests can compare
/// protocol/manifest.py with Solidity's own encoders on random inputs.
contract CommitmentHarness {
    /// What a worker passes to Task.submitUpdate.
    function updateCommitment(string calldata cid, address worker) external pure returns (bytes32) {
        return keccak256(abi.encodePacked(cid, worker));
    }

    /// What Task.revealManifest recomputes (with address(this) as the task).
    function manifestCommitment(
        address task,
        uint256 round,
        address validator,
        address[] calldata workers,
        int256[] calldata scores,
        uint8[] calldata verdicts,
        uint256 globalAccuracy,
        bytes32 salt
    ) external pure returns (bytes32) {
        return keccak256(abi.encode(task, round, validator, workers, scores, verdicts, globalAccuracy, salt));
    }
}
