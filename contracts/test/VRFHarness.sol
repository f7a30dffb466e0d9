// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {VRF} from "../VRF.sol";

/// @title VRFHarness: exposes the VRF library to tests and benchmarks. Not for deployment.
contract VRFHarness {
    function verify(bytes calldata modulus, bytes calldata alpha, bytes calldata pi) external view returns (bytes32) {
        return VRF.verify(modulus, alpha, pi);
    }

    /// @notice verify() plus the gas the library spent (no transaction or calldata costs).
    function verifyGas(bytes calldata modulus, bytes calldata alpha, bytes calldata pi)
        external
        view
        returns (bytes32 beta, uint256 gasUsed)
    {
        uint256 before = gasleft();
        beta = VRF.verify(modulus, alpha, pi);
        gasUsed = before - gasleft();
    }

    function proofToHash(bytes calldata pi) external pure returns (bytes32) {
        return VRF.proofToHash(pi);
    }

    function verifyKeyCertificate(bytes calldata modulus, address owner, bytes calldata proof) external view {
        VRF.verifyKeyCertificate(modulus, owner, proof);
    }

    function verifyKeyCertificateGas(bytes calldata modulus, address owner, bytes calldata proof)
        external
        view
        returns (uint256 gasUsed)
    {
        uint256 before = gasleft();
        VRF.verifyKeyCertificate(modulus, owner, proof);
        gasUsed = before - gasleft();
    }

    function initialSeed(uint256 chainId, address task, bytes32 paramsHash) external pure returns (bytes32) {
        return VRF.initialSeed(chainId, task, paramsHash);
    }

    function nextSeed(bytes32 previous, uint256 round, uint256 prevrandao) external pure returns (bytes32) {
        return VRF.nextSeed(previous, round, prevrandao);
    }

    function roundAlpha(bytes32 seed, uint256 round) external pure returns (bytes memory) {
        return VRF.roundAlpha(seed, round);
    }

    function workerSelected(bytes32 seed, address worker, uint256 workersPerRound, uint256 nWorkers)
        external
        pure
        returns (bool)
    {
        return VRF.workerSelected(seed, worker, workersPerRound, nWorkers);
    }

    function isSelected(bytes32 beta, uint256 tau, uint256 stake, uint256 totalStake) external pure returns (bool) {
        return VRF.isSelected(beta, tau, stake, totalStake);
    }

    function verifyCommitteeMember(
        bytes calldata modulus,
        bytes32 seed,
        uint256 round,
        bytes calldata proof,
        uint256 stake,
        uint256 totalStake,
        uint256 tau
    ) external view returns (bytes32) {
        return VRF.verifySeat(modulus, seed, round, proof, stake, totalStake, tau, true);
    }

    function smallPrimes() external pure returns (bytes memory) {
        return VRF.SMALL_PRIMES;
    }
}
