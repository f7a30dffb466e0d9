"""A read-only view of one task on any chain backend: its events feed a TaskTracker, each
finalized round becomes a table row once its global model is evaluated on the MNIST test
set, and at the end the whole run becomes results.json. Used by the multi-process launcher
(live, while the nodes run) and by --in-process (once, after the run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eth_typing import HexStr
from web3 import Web3

from node.chain.client import ChainClient
from node.chain.events import EventFollower, blocks_of
from node.chain.tracker import CONTRACT_PHASES, RoundRecord, TaskTracker
from node.chain.types import RoundInfo
from node.localnet.evaluation import TestSetEvaluator
from node.localnet.results import Participant, build_results
from node.localnet.table import header, round_row, status_line
from protocol.training import Metrics

__all__ = ["ChainView"]



class ChainView:
    def __init__(
        self,
        w3: Web3,
        reader: ChainClient,
        participants: Sequence[Participant],
        evaluator: Callable[[], TestSetEvaluator],
        cursor_path: Path,
        say: Callable[[str], None],
        live: bool = True,
    ) -> None:
        self.w3 = w3
        self.reader = reader  # only calls views; never sends
        self.participants = list(participants)
        self.names = {p.address: p.name for p in participants}
        self._evaluator_factory = evaluator
        self._evaluator: TestSetEvaluator | None = None
        self.say = say
        self.live = live  # print a row as each round is finalized
        self.follower = EventFollower(w3, cursor_path)
        self.tracker = TaskTracker()
        self.task: str | None = None
        self.boundaries: dict[int, RoundInfo] = {}
        self.evaluations: dict[int, Metrics] = {}
        self._last_status = ""
        self._header_shown = False

    @property
    def evaluator(self) -> TestSetEvaluator:
        if self._evaluator is None:
            self._evaluator = self._evaluator_factory()
        return self._evaluator

    def name_of(self, address: str) -> str:
        return self.names.get(address, address)

    def find_task(self) -> bool:
        """The registry's first task (the localnet's requester creates exactly one)."""
        if self.task is None and self.reader.task_count() > 0:
            self.task = self.reader.task_at(0)
            self.follower.follow(self.task, 0)
            self.say(f"task {self.task}")
        return self.task is not None

    def poll(self) -> list[RoundRecord]:
        """Read new events; returns the rounds they finalized."""
        if not self.find_task():
            return []
        finalized = []
        for block in blocks_of(self.follower.poll(), self.follower.block_timestamp):
            for event in block.events:
                record = self.tracker.feed(event, block.timestamp)
                if record is not None:
                    assert self.task is not None
                    self.boundaries[record.round] = self.reader.round_info(self.task, record.round)
                    finalized.append(record)
        self.follower.commit()
        if self.live:
            self.print_rows(finalized)
        return finalized

    def print_rows(self, records: list[RoundRecord]) -> None:
        """Live rows for just-finalized rounds (test accuracy comes with print_table)."""
        for record in records:
            if not self._header_shown:
                self._header_shown = True
                self.say(header())
            self.say(round_row(record, self.name_of, self.evaluations.get(record.round),
                               self.round_gas(record)))

    def rebuild_evaluations(self, data_dirs: list[Path]) -> None:
        """Test-set metrics for the finalized rounds that have none, from global models
        rebuilt out of the chain and the nodes' block stores (requester first; the nodes
        must have stopped: a store is locked while its node runs)."""
        from node.localnet.rebuild import RebuildError, rebuild_global_models

        missing = [r for r in self.tracker.finalized_rounds() if r.round not in self.evaluations]
        if not missing or self.task is None:
            return
        rounds = self.tracker.finalized_rounds()  # the chain of models starts at round 1
        try:
            for number, state in rebuild_global_models(
                data_dirs, self.reader, self.task, rounds
            ):
                if number in self.evaluations:
                    continue
                if isinstance(state, RebuildError):
                    self.say(f"round {number}: no test accuracy: {state}")
                    continue
                self.evaluations[number] = self.evaluator.evaluate_state(state)
        except Exception as exc:  # the results still hold everything the chain says
            self.say(f"cannot rebuild the rounds' global models: {exc}")

    def print_table(self) -> None:
        """Every finalized round again, now with its test-set accuracy."""
        self.say("rounds, with each global model evaluated on the dataset's test split:")
        self.say(header())
        for record in self.tracker.finalized_rounds():
            metrics = self.evaluations.get(record.round)
            self.say(round_row(record, self.name_of, metrics, self.round_gas(record)))

    def show_status(self, expected: Mapping[str, int], down: list[str]) -> None:
        """Print the current round's state when it changed since the last call."""
        if self.task is None or self.tracker.terminated:
            return
        phase = CONTRACT_PHASES[self.reader.phase(self.task)]
        line = status_line(self.tracker.current_round, str(phase), expected, down)
        if line != self._last_status:
            self._last_status = line
            self.say(f"  {line}")

    def gas_by_tx(self, hashes: Sequence[str]) -> dict[str, int]:
        return {
            h: int(self.w3.eth.get_transaction_receipt(HexStr(h))["gasUsed"]) for h in set(hashes)
        }

    def round_gas(self, record: RoundRecord) -> int:
        return sum(self.gas_by_tx([h for hs in record.tx_hashes.values() for h in hs]).values())

    def results(
        self,
        *,
        outcome: str,
        options: Mapping[str, Any],
        scenario: Mapping[str, Any],
        chain: Mapping[str, Any],
        wall_seconds: float,
        model_seed: int,
        final_model: Path | None,
    ) -> dict[str, Any]:
        balances = {}
        if self.task is not None:
            for p in self.participants:
                balances[p.address] = self.reader.credited_balance(self.task, p.address)
        hashes = [
            h
            for record in self.tracker.rounds.values()
            for kind_hashes in record.tx_hashes.values()
            for h in kind_hashes
        ]
        initial = final = None
        try:
            initial = self.evaluator.evaluate_initial(model_seed)
        except Exception as exc:  # the results still say everything else
            self.say(f"cannot evaluate the initial model: {exc}")
        if final_model is not None and final_model.exists():
            try:
                final = self.evaluator.evaluate_file(final_model)
                self.say(f"final model {final_model}: test accuracy {final.accuracy:.4f}")
            except Exception as exc:
                self.say(f"cannot evaluate the final model {final_model}: {exc}")
        return build_results(
            options=options,
            scenario=scenario,
            participants=self.participants,
            chain={**chain, "chain_id": self.reader.chain_id, "task": self.task},
            tracker=self.tracker,
            boundaries=self.boundaries,
            evaluations=self.evaluations,
            gas_by_tx=self.gas_by_tx(hashes),
            final_balances=balances,
            wall_seconds=wall_seconds,
            outcome=outcome,
            initial_evaluation=initial,
            final_evaluation=final,
        )
