"""ChainEffects on a real chain: its events, looking for a task, transactions through the
client's typed methods (the ones the contract tests use), withdrawing."""

from __future__ import annotations

import logging
from typing import Any

import trio

from node.attacks.validator import first_reveal_of_another
from node.chain import ChainClient, ChainError, ChainEvent, ChainRevert, TaskParams
from node.chain.errors import TransactionCannotSucceed
from node.chain.tracker import round_phase
from node.chain.types import RewardPolicy
from node.chain.types import Role as ChainRole
from node.config import AUTO_TASK, NodeConfig
from node.models import architecture_of, model_problem, worker_data_problem
from node.runtime import timing
from node.runtime.chainside import ALREADY_DONE, ChainAccess, ChainFollower, address_bytes, checksum
from node.runtime.effects import NodeStatus
from protocol.aggregation import AggregationError
from protocol.aggregation.rule import AggregationRule
from protocol.manifest import WorkerVerdict
from protocol.state import events as ev
from protocol.state.actions import FindTask, SendTx, Withdraw
from protocol.state.records import Role, TaskOffer, TaskTerms, TxKind

TX_ATTEMPTS = 3
# A transaction that only saves time: its revert never stops the node, whatever its cause
# (the phase ends at its deadline anyway); WrongPhase means the phase is over already.
OPTIONAL_TXS = {TxKind.END_COMMIT_PHASE: "WrongPhase"}
COPY_POLLS = 100  # the copycat's wait for another reveal, in chain polls


def task_problem(
    model_arch: str,
    aggregator: str,
    model_spec_hash: bytes = bytes(32),
    trusted_models: tuple[str, ...] = (),
) -> str | None:
    """Why this node could not do the work of a task with this model reference, pinned
    architecture spec hash (all zero: not pinned) and aggregation rule (its on-chain
    parameters), or None: checked before any deposit."""
    problem = model_problem(model_arch, model_spec_hash, trusted_models)
    if problem is not None:
        return problem
    try:
        AggregationRule.parse(aggregator)
    except AggregationError as exc:
        return f"its aggregator: {exc}; upgrade fl-node or pick another task"
    return None


def send_task_tx(client: ChainClient, task: str | None, tx: SendTx) -> None:
    """Send a machine's transaction (all but CREATE_TASK) through the client's typed method."""
    args = tx.args
    if tx.kind == TxKind.JOIN_TASK:
        joined, role = args
        join = client.join_as_worker if role == Role.WORKER else client.join_as_validator
        join(checksum(joined))
        return
    if task is None:
        raise ChainError(f"{tx.kind} needs a task, and none is followed yet")
    if tx.kind == TxKind.START_TASK:
        client.start(task, *args)
    elif tx.kind == TxKind.CANCEL_TASK:
        client.cancel(task)
    elif tx.kind == TxKind.SUBMIT_UPDATE:
        client.submit_update_commitment(task, *args)
    elif tx.kind == TxKind.COMMIT_MANIFEST:
        client.commit_manifest(task, *args)
    elif tx.kind == TxKind.REVEAL_MANIFEST:
        round, workers, scores, verdicts, global_accuracy, salt = args
        client.reveal_manifest(
            task, round, [checksum(w) for w in workers], list(scores),
            [WorkerVerdict(v) for v in verdicts], global_accuracy, salt,
        )
    elif tx.kind == TxKind.FINALIZE_ROUND:
        client.finalize_round(task, *args)
    elif tx.kind == TxKind.END_COMMIT_PHASE:
        round, unseated = args
        client.end_commit_phase(task, round, [(checksum(v), proof) for v, proof in unseated])
    else:
        raise ChainError(f"no transaction for {tx.kind}")


def _seen(log: ChainEvent, block_times: dict[int, int]) -> dict[str, Any]:
    """A log as a timing event lists it: its name, round, block time (and next phase)."""
    seen: dict[str, Any] = {
        "log": log.name, "round": log.args.get("round", 0), "block_ts": block_times[log.block_number]
    }
    if log.name == "PhaseEndedEarly":
        seen["phase"] = str(round_phase(log.args["nextPhase"]))
    return seen


class ChainSide:
    """ChainEffects on a real chain, through `ChainAccess` (one call at a time)."""

    def __init__(
        self,
        config: NodeConfig,
        chain: ChainAccess,
        follower: ChainFollower,
        status: NodeStatus,
        log: logging.LoggerAdapter[logging.Logger],
        initial_cid: str | None = None,
    ) -> None:
        self.config = config
        self.chain = chain
        self.client = chain.client
        self.follower = follower
        self.status = status
        self.log = log
        self.initial_cid = initial_cid  # the requester's initial model, for createTask
        self.task: str | None = None
        self._head: int | None = None  # the chain's latest block at the last full read

    async def poll(self) -> list[ev.Event] | None:
        """The events of the blocks since the last read; None when there is no new block
        (nothing can have happened: logs and the clock both come with blocks) or the read
        failed. Asking for the block number alone is a small fraction of a full read."""
        try:
            head = await self.chain.run(self._block_number)
            if head == self._head:
                return None
            events = await self.chain.run(self.follower.poll)
        except (ChainError, OSError) as problem:
            self.log.warning("polling the chain failed (%s); retrying", problem)
            return None
        self._head = head
        seen = [e for block in self.follower.last_blocks for e in block.events]
        if seen:  # when each log reached us against its block's time: the block waits
            blocks = {b.number: b.timestamp for b in self.follower.last_blocks}
            timing.point(self.log, "chain", self.status.round, logs=[_seen(e, blocks) for e in seen])
        return events

    def _block_number(self) -> int:
        return int(self.client.w3.eth.block_number)

    async def commit(self) -> None:
        await trio.to_thread.run_sync(self.follower.cursor.commit)

    async def follow(self, task: bytes) -> None:
        self.task = checksum(task)
        self.status.task = self.task
        self.follower.task = self.task
        self.follower.cursor.follow(self.task, 0)  # a no-op when followed from its creation

    async def find_task(self, action: FindTask) -> ev.Event:
        if action.again:
            await trio.sleep(self.config.chain.poll_interval)
        wanted = self.config.chain.task
        if wanted != AUTO_TASK:
            offer = await self._offer(checksum(address_bytes(wanted)))
            return ev.TasksOffered((offer,), configured=True)
        tasks = await self.chain.run(self.client.open_tasks)
        return ev.TasksOffered(tuple([await self._offer(task) for task in tasks]))

    async def _offer(self, task: str) -> TaskOffer:
        params = await self.chain.run(self.client.task_params, task)
        role = await self.chain.run(self.client.role_of, task)
        problem = task_problem(
            params.model_arch, params.aggregator, params.model_spec_hash, self.config.trusted_models
        )
        if problem is None and self.config.role == "worker" and role == ChainRole.NONE:
            problem = await trio.to_thread.run_sync(
                worker_data_problem, self.config.data, params.model_arch
            )
        terms = TaskTerms(params.model_arch, params.aggregator)
        return TaskOffer(address_bytes(task), terms, role != ChainRole.NONE, problem)

    async def send(self, tx: SendTx) -> ev.Event | None:
        if tx.kind == TxKind.REVEAL_MANIFEST and self.config.behaviour.validator == "lazy":
            self.log.info("round %d: lazy on purpose: not revealing", tx.round)
            return None
        if tx.kind == TxKind.REVEAL_MANIFEST and self.config.behaviour.validator == "copycat":
            copy = await self._copied_reveal(tx)
            if copy is not None:
                try:
                    await self.chain.run(send_task_tx, self.client, self.task, copy)
                except ChainError as refused:  # our commitment binds our address: RevealMismatch
                    name = refused.name if isinstance(refused, ChainRevert) else type(refused).__name__
                    self.log.warning("round %d: copied reveal refused (%s)", tx.round, name)
                    self.status.failed_txs.append(f"{tx.kind}@{tx.round}: {name}")
                    return None  # a copier has nothing else it committed to worth revealing
                return ev.TxConfirmed(tx.kind, tx.round)
        # Every task call is safe to retry: if a lost attempt landed, the contract refuses
        # the repeat (AlreadySubmitted, WrongPhase, ...) and nothing is sent twice. A
        # createTask repeated would create a second task, so it gets one attempt; if it
        # landed anyway, its TaskCreated log still reaches the machine.
        attempts = 1 if tx.kind == TxKind.CREATE_TASK else TX_ATTEMPTS
        with timing.span(self.log, "tx", tx.round, kind=tx.kind.value):
            return await self._send(tx, attempts)

    async def _send(self, tx: SendTx, attempts: int) -> ev.Event | None:
        for attempt in range(1, attempts + 1):
            try:
                if tx.kind == TxKind.CREATE_TASK:
                    await self.chain.run(self._create_task)
                else:
                    await self.chain.run(send_task_tx, self.client, self.task, tx)
                self.log.info("round %d: %s confirmed", tx.round, tx.kind.value)
                return ev.TxConfirmed(tx.kind, tx.round)
            except TransactionCannotSucceed as fatal:  # before ChainRevert: some are reverts
                if isinstance(fatal, ChainRevert) and tx.kind in OPTIONAL_TXS:
                    return self._optional_reverted(tx, fatal)
                name = fatal.name if isinstance(fatal, ChainRevert) else type(fatal).__name__
                self.log.error("round %d: %s cannot succeed: %s", tx.round, tx.kind, fatal.reason)
                self.status.failed_txs.append(f"{tx.kind}@{tx.round}: {name}")
                return ev.TxFailed(tx.kind, tx.round, name, permanent=True, reason=fatal.reason)
            except ChainRevert as revert:
                if tx.kind in OPTIONAL_TXS:
                    return self._optional_reverted(tx, revert)
                if ALREADY_DONE.get(tx.kind) == revert.name or await self._finalized_by_other(tx):
                    return ev.TxConfirmed(tx.kind, tx.round)
                self.log.warning("round %d: %s reverted: %s", tx.round, tx.kind, revert)
                self.status.failed_txs.append(f"{tx.kind}@{tx.round}: {revert.name}")
                return ev.TxFailed(tx.kind, tx.round, revert.name)
            except ChainError as problem:
                self.log.warning("%s attempt %d failed: %s", tx.kind, attempt, problem)
                await trio.sleep(attempt)
        self.status.failed_txs.append(f"{tx.kind}@{tx.round}: ChainError")
        return ev.TxFailed(tx.kind, tx.round, "ChainError")

    def _optional_reverted(self, tx: SendTx, revert: ChainRevert) -> ev.Event:
        """An optional transaction's revert: done already (its phase is over), or failed
        without harm (the phase runs to its deadline); never a reason to stop."""
        if OPTIONAL_TXS[tx.kind] == revert.name:
            self.log.info("round %d: %s not needed: the phase is over", tx.round, tx.kind.value)
            return ev.TxConfirmed(tx.kind, tx.round)
        self.log.warning("round %d: %s reverted: %s", tx.round, tx.kind, revert)
        self.status.failed_txs.append(f"{tx.kind}@{tx.round}: {revert.name}")
        return ev.TxFailed(tx.kind, tx.round, revert.name)

    async def _copied_reveal(self, tx: SendTx) -> SendTx | None:
        """The copycat validator's reveal: the first manifest another member revealed this
        round (`node.attacks.validator`), once there is one (None: nobody revealed)."""
        round, workers, *_, salt = tx.args
        me = address_bytes(self.client.address)
        for _ in range(COPY_POLLS):
            def reveals() -> list[dict[str, Any]]:
                end = self.client.w3.eth.block_number
                logs = self.follower.cursor.read([str(self.task)], 0, end)
                return [log.args for log in logs if log.name == "ManifestRevealed"]

            found = first_reveal_of_another(await self.chain.run(reveals), round, me, workers)
            if found is not None:
                self.log.info("round %d: copycat reveals another member's manifest", round)
                return SendTx(tx.kind, tx.round, (round, workers, *found, salt))
            await trio.sleep(self.config.chain.poll_interval)
        return None

    async def _finalized_by_other(self, tx: SendTx) -> bool:
        """A finalizeRound that lost the race to another party's: the round is settled."""
        if tx.kind != TxKind.FINALIZE_ROUND or self.task is None:
            return False
        info = await self.chain.run(self.client.round_info, self.task, tx.round)
        if info.finalized:
            self.log.info("round %d: finalized by someone else first", tx.round)
        return info.finalized

    def _create_task(self) -> None:
        task = self.config.task
        if self.initial_cid is None:
            raise ChainError("createTask needs the initial model published first")
        params = TaskParams(
            model_arch=task.model,
            aggregator=AggregationRule.parse(task.aggregator).spec,
            initial_model_cid=self.initial_cid,
            rounds=task.rounds,
            worker_reward_per_round=task.worker_reward_per_round_wei,
            validator_reward_per_round=task.validator_reward_per_round_wei,
            worker_deposit=task.worker_deposit_wei,
            validator_stake=task.validator_stake_wei,
            committee_size=task.committee_size,
            workers_per_round=task.workers_per_round,
            qualification_threshold=task.fixed("qualification_threshold"),
            tolerance=task.fixed("tolerance"),
            target_accuracy=task.fixed("target_accuracy"),
            training_duration=task.training_seconds,
            commit_duration=task.commit_seconds,
            reveal_duration=task.reveal_seconds,
            reward_policy=RewardPolicy[task.reward_policy.upper()],
            top_k=task.top_k,
            slash_fraction_bps=task.slash_fraction_bps,
            max_workers=task.max_workers,
            max_validators=task.max_validators,
            min_workers=task.min_workers,
            min_validators=task.min_validators,
            recruit_deadline=self.client.latest_timestamp() + task.recruit_seconds,
            max_samples_per_worker=task.max_samples_per_worker,
            # Pins the architecture: a node building another one from the reference refuses.
            model_spec_hash=architecture_of(task.model).hash(),
        )
        address, _ = self.client.create_task(params)
        self.log.info("created task %s escrowing %d wei", address, params.escrow)

    async def withdraw(self, action: Withdraw) -> None:
        task = self.task
        if task is None:
            return
        if action.reclaim_escrow:
            escrow = await self.chain.run(self.client.escrow, task)
            if escrow > 0:
                await self.chain.run(self.client.reclaim_escrow, task, escrow)
                self.status.reclaimed_wei += escrow
                self.log.info("took back %d wei of unspent escrow", escrow)
        amount = await self.chain.run(self.client.withdrawable, task)
        if amount > 0:
            await self.chain.run(self.client.withdraw, task)
            self.status.withdrawn_wei += amount
            self.log.info("withdrew %d wei from task %s", amount, task)
