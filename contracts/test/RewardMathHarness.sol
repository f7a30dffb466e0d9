// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RewardMath} from "../RewardMath.sol";

/// Test only: exposes the linked RewardMath.settle with a plain ABI. A library's own selector
/// names structs by their Solidity names ("settle(RewardMath.Policy,...)"), which ABI tools do
/// not compute, so tests call through this contract, which uses the same linked library
/// (DELEGATECALL) exactly as Task does.
contract RewardMathHarness {
    function settle(
        RewardMath.Policy memory policy,
        uint256[] memory workerDepositLeft,
        uint256[] memory claims,
        RewardMath.Member[] memory members
    ) external pure returns (RewardMath.Outcome memory) {
        return RewardMath.settle(policy, workerDepositLeft, claims, members);
    }
}
