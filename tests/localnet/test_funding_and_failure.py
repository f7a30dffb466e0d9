"""The localnet funds each account from what the task needs, and fails at once, with the
node's reason, when a node process stops (no chain, no anvil: the funding rule and the
launcher's watch loop with a real child process).

A fixed amount per account is not enough for long tasks: the 25-round escrow of the default
rewards is 100 ETH, so a requester holding 100 ETH cannot also pay createTask's gas; and a
run whose requester stopped must end with that reason, not at the launcher's deadline.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from node.chain.tracker import TaskTracker
from node.localnet.configs import (
    ETHER,
    GAS_PRICE_CAP_WEI,
    ROUND_GAS,
    SETUP_GAS,
    TaskDefaults,
    funding_wei,
)
from node.localnet.launcher import Localnet, LocalnetOptions, NodeDied, failure_reason
from node.localnet.processes import ManagedProcess
from node.localnet.scenario import Scenario

OLD_FIXED_FUNDING = 100 * ETHER


def _section(rounds: int, **overrides: Any) -> dict[str, Any]:
    return TaskDefaults(rounds, 5, 3, overrides=overrides).section(Path("unused"))


def test_the_requester_is_funded_with_the_whole_escrow_and_its_gas() -> None:
    section = _section(25)
    escrow = 25 * (section["worker_reward_per_round_wei"] + section["validator_reward_per_round_wei"])
    assert escrow == OLD_FIXED_FUNDING  # a fixed 100 ETH leaves nothing for createTask's gas
    gas = (SETUP_GAS + 25 * ROUND_GAS) * GAS_PRICE_CAP_WEI
    assert funding_wei("requester", section) == escrow + gas > OLD_FIXED_FUNDING
    assert funding_wei("worker", section) == section["worker_deposit_wei"] + gas
    assert funding_wei("validator", section) == section["validator_stake_wei"] + gas
    # A scenario's [task] amounts are what counts, not the defaults.
    rich = _section(3, worker_reward_per_round_wei=50 * ETHER, validator_stake_wei=7 * ETHER)
    assert funding_wei("requester", rich) > 3 * 51 * ETHER
    assert funding_wei("validator", rich) > 7 * ETHER
    with pytest.raises(ValueError, match="no funding rule"):
        funding_wei("bootstrap", section)


def test_the_reason_line_of_a_node_is_found_in_its_log() -> None:
    log = "INFO something\nfl-node run: createTask: 0xab holds 1 wei but the transaction needs 9 wei\n"
    assert failure_reason(log) == (
        "fl-node run: createTask: 0xab holds 1 wei but the transaction needs 9 wei"
    )
    traceback = "Traceback (most recent call last):\n  File x\nnode.chain.errors.InsufficientFunds: short"
    assert failure_reason(traceback) == "node.chain.errors.InsufficientFunds: short"
    assert failure_reason("just some output\n") is None


class _IdleView:
    """Stands in for the ChainView (the chain is not what this test is about): a task that
    never ends.
    It counts the launcher's polls and gives up after a bound, so a launcher that misses
    the dead node fails this test instead of hanging until its deadline."""

    def __init__(self, max_polls: int) -> None:
        self.polls = 0
        self.max_polls = max_polls
        self.tracker = TaskTracker()  # fed no events: the task is still running

    def poll(self) -> None:
        self.polls += 1
        if self.polls > self.max_polls:
            raise AssertionError(f"the launcher polled {self.polls} times past a dead node")

    def show_status(self, expected: dict[str, int], down: list[str]) -> None:
        pass


def test_a_node_that_exits_with_a_reason_fails_the_run_at_once(tmp_path: Path) -> None:
    options = LocalnetOptions(
        output=tmp_path / "out", data_root=tmp_path, workers=1, validators=1, rounds=25,
        timeout=3600.0, poll_interval=0.05,
    )  # fmt: skip
    localnet = Localnet(options, Scenario(source="<test>").resolve(1, 1))
    reason = (
        "fl-node run: createTask: 0x00000000000000000000000000000000000000aa holds "
        "100000000000000000000 wei but the transaction needs 100000004000000000000 wei"
    )
    requester = localnet.processes.add(
        ManagedProcess(
            "requester",
            [sys.executable, "-c", f"import sys; print({reason!r}, file=sys.stderr); sys.exit(2)"],
            tmp_path / "requester.log",
        )
    )
    requester.start()
    with pytest.raises(NodeDied) as caught:
        localnet.watch(_IdleView(max_polls=2_000))  # type: ignore[arg-type]
    died = caught.value
    assert died.name == "requester" and died.reason == reason
    assert str(died).splitlines()[0] == (
        f"requester exited with status 2 though nobody stopped it: {reason}; "
        "the last lines of its log:"
    )
