"""The round driver: one node of any role, driving its protocol.state machine.

What it does, as protocol/state's package docstring asks of a runtime:

- chain logs from a persisted cursor become machine events in chain order, with a
  `Tick(block timestamp)` after each block; the cursor is committed only after the
  machine handled (and persisted) them, so a crash replays rather than loses them;
- actions run in order: `Persist` writes the machine atomically first; `SendTx` goes to
  one sequential sender (transport errors retried, reverts reported by name); `Publish`
  to the task's gossip; `Fetch` to the block exchange; jobs (sortition, training,
  evaluation, aggregation, task data) to one sequential job runner in a worker thread;
- gossip announcements become `AnnouncementReceived`; each job, fetch and transaction
  answers with its event;
- a restart loads the machine (`persist.from_dict`) and feeds `Restarted()`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import trio
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from node.blocks import BlockExchange, BlockFetchError, BlockStore, BlockStoreError
from node.chain import ChainClient, ChainError, ChainRevert, EventFollower, TaskParams
from node.chain.types import RewardPolicy
from node.chain.types import Role as ChainRole
from node.config import AUTO_TASK, NodeConfig
from node.discovery import Discovery, task_namespace
from node.gossip import GossipIgnored, GossipNode, GossipRejected, TaskGossip, open_task_gossip
from node.models import architecture_of, model_problem, worker_data_problem
from node.runtime import learning
from node.runtime.chainside import (
    ALREADY_DONE,
    ChainAccess,
    ChainFollower,
    address_bytes,
    checksum,
    send_task_tx,
)
from node.runtime.keys import NodeKeys
from protocol import keycert
from protocol.aggregation import AggregationError
from protocol.aggregation.rule import AggregationRule
from protocol.codec import encode_state_dict
from protocol.data import Dataset
from protocol.errors import ProtocolError
from protocol.messages import CommitteeProof, Message, ModelAnnouncement
from protocol.sortition import committee_proof, is_selected, round_alpha
from protocol.state import events as ev
from protocol.state import persist
from protocol.state.actions import (
    Action,
    Aggregate,
    DrawSortition,
    Fetch,
    Log,
    Persist,
    PrepareTaskData,
    Publish,
    PublishScores,
    SaveFinalModel,
    SendTx,
    StartEvaluation,
    StartTraining,
)
from protocol.state.phases import RoundMachine
from protocol.state.records import GlobalModel, Job, Phase, TxKind
from protocol.state.requester import Recruiting, RequesterMachine
from protocol.state.validator import ValidatorMachine
from protocol.state.wire import announcement_received, wire_message
from protocol.state.worker import WorkerMachine
from protocol.vrf import VRFPublicKey, i2osp
from protocol.vrf import verify as vrf_verify

STATE_FILE = "machine.json"
CURSOR_FILE = "cursor.json"
BLOCKS_DIR = "blocks"
TX_ATTEMPTS = 3
FETCH_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 5.0
VALIDATOR_FINALIZE_AFTER_S = 30  # validators finalize a round the requester left hanging
JOB_OF = {
    DrawSortition: Job.SORTITION,
    StartTraining: Job.TRAINING,
    StartEvaluation: Job.EVALUATION,
    Aggregate: Job.AGGREGATION,
    PrepareTaskData: Job.TASK_DATA,
}


class TaskUnusable(ValueError):
    """A task this node cannot work on (a model or aggregation rule it does not know)."""


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


@dataclass
class NodeStatus:
    """What the node has done, for callers (the in-process harness, a status page)."""

    name: str
    role: str
    address: str
    task: str | None = None
    round: int = 0
    phase: str = "idle"
    accuracy_by_round: dict[int, float] = field(default_factory=dict)
    withdrawn_wei: int = 0
    reclaimed_wei: int = 0  # requester: unspent escrow taken back
    final_model: Path | None = None
    done: bool = False
    failed_txs: list[str] = field(default_factory=list)  # "kind@round: error name"


class NodeLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['name'] if self.extra else '?'}] {msg}", kwargs


class Driver:
    """One node's round driver; `run()` returns once its task is over for it."""

    def __init__(
        self,
        config: NodeConfig,
        keys: NodeKeys,
        chain: ChainAccess,
        store: BlockStore,
        exchange: BlockExchange,
        discovery: Discovery,
        gossip_node: GossipNode,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.chain = chain
        self.client: ChainClient = chain.client
        self.store = store
        self.exchange = exchange
        self.discovery = discovery
        self.gossip_node = gossip_node
        self.me = keys.address_bytes
        self.data_dir = config.node.data_dir
        self.name = name or f"{config.role}@{keys.address[:10]}"
        self.log = NodeLog(logging.getLogger("fl_node.runtime"), {"name": self.name})
        self.status = NodeStatus(self.name, config.role, keys.address)
        self.follower = EventFollower(self.client.w3, self.data_dir / CURSOR_FILE)
        self.translator = ChainFollower(self.client, self.follower, self.me)
        self.machine: RoundMachine[Any] | None = None
        self.task: str | None = None
        self.params: TaskParams | None = None
        self.book: learning.ModelBook | None = None
        self.gossip: TaskGossip | None = None
        self.gossip_ready = trio.Event()
        self.peers: dict[PeerID, bytes] = {}  # task members' peer ids -> addresses
        self.peer_of: dict[bytes, PeerID] = {}
        self.encryption_keys: dict[bytes, bytes] = {}
        self.vrf_keys: dict[bytes, bytes] = {}  # validators' registered VRF moduli
        self.round_seeds: dict[int, tuple[bytes, int]] = {}  # round -> (seed, total stake)
        self.initial_cid: str | None = None
        self.shard: Dataset | None = None
        self.validation: Dataset | None = None
        self.events_send, self.events_recv = trio.open_memory_channel[Any](math.inf)
        self.jobs_send, self.jobs_recv = trio.open_memory_channel[Action](math.inf)
        self.txs_send, self.txs_recv = trio.open_memory_channel[SendTx](math.inf)
        self._nursery: trio.Nursery | None = None

    # --- setup -------------------------------------------------------------------------

    async def register(self) -> None:
        """Register on the registry once (peer id, X25519 key, certified VRF key)."""
        if await self.chain.run(self.client.is_registered):
            return
        key = self.keys.vrf_key
        modulus = i2osp(key.modulus, keycert.KEY_BYTES)
        certificate = await trio.to_thread.run_sync(keycert.certify, key, self.me)
        await self.chain.run(
            self.client.register,
            self.keys.peer_id.to_bytes(),
            self.keys.encryption_public,
            modulus,
            certificate,
        )
        self.log.info("registered as %s (peer %s)", self.keys.address, self.keys.peer_id)

    async def _find_and_join(self) -> str:
        """Join the task of the config, or with task = "auto" the first open task of the
        registry that takes us (waiting for one); a task we are in already is resumed."""
        wanted = self.config.chain.task
        if wanted != AUTO_TASK:
            task = checksum(address_bytes(wanted))
            await self._join(task)
            return task
        announced = False
        unusable: set[str] = set()
        while True:
            for task in await self.chain.run(self.client.open_tasks):
                if task in unusable:
                    continue
                try:
                    await self._join(task)
                    return task
                except ChainRevert as refused:  # full, closed, started meanwhile: next one
                    self.log.info("task %s did not take us: %s", task, refused.name)
                except TaskUnusable as problem:
                    unusable.add(task)
                    self.log.warning("skipping %s", problem)
            if not announced:
                self.log.info("no open task on the registry takes us yet; waiting for one")
                announced = True
            await trio.sleep(self.config.chain.poll_interval)

    async def _join(self, task: str) -> None:
        role = await self.chain.run(self.client.role_of, task)
        if role != ChainRole.NONE:
            return
        params = await self.chain.run(self.client.task_params, task)
        problem = task_problem(
            params.model_arch, params.aggregator, params.model_spec_hash, self.config.trusted_models
        )
        if problem is None and self.config.role == "worker":
            problem = await trio.to_thread.run_sync(
                worker_data_problem, self.config.data, params.model_arch
            )
        if problem is not None:  # before the deposit: we could never do the work
            raise TaskUnusable(f"task {task}: {problem}")
        if self.config.role == "worker":
            await self.chain.run(self.client.join_as_worker, task)
        else:
            await self.chain.run(self.client.join_as_validator, task)
        self.log.info("joined task %s as %s", task, self.config.role)

    async def _load_task(self, task: str) -> None:
        self.task = task
        self.status.task = task
        self.translator.task = task
        self.follower.follow(task, 0)
        self.params = await self.chain.run(self.client.task_params, task)
        problem = task_problem(
            self.params.model_arch,
            self.params.aggregator,
            self.params.model_spec_hash,
            self.config.trusted_models,
        )
        if problem is not None:
            raise TaskUnusable(f"task {task}: {problem}")
        crypto = learning.TaskCrypto(self.keys.encryption_private, address_bytes(task))
        rule = AggregationRule.parse(self.params.aggregator)
        self.book = learning.ModelBook(self.params.model_arch, self.store, crypto, rule)

    def _build_machine(self) -> RoundMachine[Any]:
        role = self.config.role
        state_path = self.data_dir / STATE_FILE
        options = self._machine_options()
        if state_path.exists():
            data = json.loads(state_path.read_text())
            machine = persist.from_dict(data, **options)
            self.log.info("resuming from %s", state_path)
            return machine
        if role == "requester":
            return RequesterMachine(
                self.me, local_blobs=(self.initial_cid,) if self.initial_cid else (), **options
            )
        assert self.task is not None
        if role == "worker":
            return WorkerMachine(self.me, address_bytes(self.task), **options)
        return ValidatorMachine(self.me, address_bytes(self.task), **options)

    def _machine_options(self) -> dict[str, Any]:
        if self.config.role == "requester":
            task = self.config.task
            return {
                "recruiting": Recruiting(
                    min_workers=task.min_workers,
                    min_validators=task.min_validators,
                    max_workers=task.max_workers,
                    max_validators=task.max_validators,
                    start_after=self._started_at + task.start_after_seconds,
                    # the chain's deadline is set a moment later, at creation; the requester
                    # may cancel any time, so cancelling at this one is never refused
                    recruit_deadline=self._started_at + task.recruit_seconds,
                ),
                "finalize_after": 0,
            }
        if self.config.role == "validator":
            return {"finalize_after": VALIDATOR_FINALIZE_AFTER_S}
        return {}

    # --- the main loop -------------------------------------------------------------------

    async def run(self) -> NodeStatus:
        torch.set_num_threads(self.config.node.torch_threads)
        await self.register()
        self._started_at = await self.chain.run(self.client.latest_timestamp)
        if self.config.role == "requester":
            blob = learning.initial_model_blob(self.config.task.model, self.config.task.model_seed)
            self.initial_cid = await self.exchange.publish(blob)
            if not (self.data_dir / STATE_FILE).exists():
                registry = self.client.registry_address
                assert registry is not None
                head = await self.chain.run(lambda: self.client.w3.eth.block_number)
                self.follower.follow(registry, head)
        else:
            state_path = self.data_dir / STATE_FILE
            saved = None
            if state_path.exists():
                saved = json.loads(state_path.read_text()).get("view", {}).get("task")
            task = checksum(address_bytes(saved)) if saved else await self._find_and_join()
            await self._load_task(task)
        machine = self.machine = self._build_machine()
        if machine.view.task is not None and self.task is None:
            await self._load_task(checksum(machine.view.task))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._poll_chain)
            nursery.start_soon(self._run_jobs)
            nursery.start_soon(self._send_txs)
            if self.task is not None:
                nursery.start_soon(self._gossip_session)
            if (self.data_dir / STATE_FILE).exists():
                await self._feed(ev.Restarted())
            else:
                await self._feed(ev.Tick(self._started_at))
            async for item in self.events_recv:
                if isinstance(item, _Batch):
                    for event in item.events:
                        await self._feed(event)
                    await trio.to_thread.run_sync(self.follower.commit)
                    item.done.set()
                else:
                    await self._feed(item)
                if self._finished():
                    break
            nursery.cancel_scope.cancel()
        await self._settle_up()
        self.status.done = True
        self.log.info("done with task %s", self.task)
        return self.status

    def _finished(self) -> bool:
        machine = self.machine
        assert machine is not None
        if machine.view.phase != Phase.TERMINATED or machine.view.aggregation is not None:
            return False
        if isinstance(machine, RequesterMachine):
            return machine.local.final_saved and self.status.final_model is not None
        return True

    async def _settle_up(self) -> None:
        """Withdraw what the task owes us (rewards, refunds, the deposit; the requester
        also takes back the escrow nobody earned)."""
        if self.task is None:
            return
        if self.config.role == "requester":
            escrow = await self.chain.run(self.client.escrow, self.task)
            if escrow > 0:
                await self.chain.run(self.client.reclaim_escrow, self.task, escrow)
                self.status.reclaimed_wei += escrow
                self.log.info("took back %d wei of unspent escrow", escrow)
        amount = await self.chain.run(self.client.withdrawable, self.task)
        if amount > 0:
            await self.chain.run(self.client.withdraw, self.task)
            self.status.withdrawn_wei += amount
            self.log.info("withdrew %d wei from task %s", amount, self.task)

    async def _feed(self, event: ev.Event) -> None:
        machine = self.machine
        assert machine is not None
        before = (machine.view.round, machine.view.phase)
        if isinstance(event, ev.TaskCreated) and self.task is None and event.requester == self.me:
            await self._load_task(checksum(event.task))
            assert self._nursery is not None
            self._nursery.start_soon(self._gossip_session)
        if isinstance(event, ev.TaskStarted):
            await self._load_peers()
        for action in machine.handle(event):
            await self._execute(action)
        self.status.round, self.status.phase = machine.view.round, str(machine.view.phase)
        if (machine.view.round, machine.view.phase) != before:
            self.log.debug("now round %d, %s", *before)

    async def _execute(self, action: Action) -> None:
        if isinstance(action, Persist):
            # fsync off the trio thread; awaited, so nothing after it runs before it is on disk
            assert self.machine is not None
            await trio.to_thread.run_sync(self._persist, persist.to_dict(self.machine))
        elif isinstance(action, Log):
            self.log.log(logging.getLevelName(action.level.upper()), action.text)
        elif isinstance(action, SendTx):
            self.txs_send.send_nowait(action)
        elif isinstance(action, Publish):
            assert self._nursery is not None
            self._nursery.start_soon(self._publish, action)
        elif isinstance(action, Fetch):
            assert self._nursery is not None
            self._nursery.start_soon(self._fetch, action)
        else:
            self.jobs_send.send_nowait(action)

    def _persist(self, state: dict[str, Any]) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    # --- chain -----------------------------------------------------------------------------

    async def _poll_chain(self) -> None:
        while True:
            try:
                events = await self.chain.run(self.translator.poll)
            except (ChainError, OSError) as problem:
                self.log.warning("polling the chain failed (%s); retrying", problem)
                events = []
            else:
                batch = _Batch(events)
                await self.events_send.send(batch)
                await batch.done.wait()
            await trio.sleep(self.config.chain.poll_interval)

    async def _send_txs(self) -> None:
        async for action in self.txs_recv:
            if action.kind == TxKind.REVEAL_MANIFEST and self.config.behaviour.validator == "lazy":
                self.log.info("round %d: lazy on purpose: not revealing", action.round)
                continue
            await self.events_send.send(await self._send_tx(action))

    async def _send_tx(self, action: SendTx) -> ev.Event:
        # Every task call is safe to retry: if a lost attempt landed, the contract refuses
        # the repeat (AlreadySubmitted, WrongPhase, ...) and nothing is sent twice. A
        # createTask repeated would create a second task, so it gets one attempt; if it
        # landed anyway, its TaskCreated log still reaches the machine.
        attempts = 1 if action.kind == TxKind.CREATE_TASK else TX_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                if action.kind == TxKind.CREATE_TASK:
                    await self.chain.run(self._create_task)
                else:
                    assert self.task is not None
                    await self.chain.run(send_task_tx, self.client, self.task, action)
                self.log.info("round %d: %s confirmed", action.round, action.kind.value)
                return ev.TxConfirmed(action.kind, action.round)
            except ChainRevert as revert:
                if ALREADY_DONE.get(action.kind) == revert.name or await self._finalized_by_other(
                    action
                ):
                    return ev.TxConfirmed(action.kind, action.round)
                self.log.warning("round %d: %s reverted: %s", action.round, action.kind, revert)
                self.status.failed_txs.append(f"{action.kind}@{action.round}: {revert.name}")
                return ev.TxFailed(action.kind, action.round, revert.name)
            except ChainError as problem:
                self.log.warning("%s attempt %d failed: %s", action.kind, attempt, problem)
                await trio.sleep(attempt)
        self.status.failed_txs.append(f"{action.kind}@{action.round}: ChainError")
        return ev.TxFailed(action.kind, action.round, "ChainError")

    async def _finalized_by_other(self, action: SendTx) -> bool:
        """A finalizeRound that lost the race to another party's: the round is settled."""
        if action.kind != TxKind.FINALIZE_ROUND or self.task is None:
            return False
        info = await self.chain.run(self.client.round_info, self.task, action.round)
        if info.finalized:
            self.log.info("round %d: finalized by someone else first", action.round)
        return info.finalized

    def _create_task(self) -> None:
        task = self.config.task
        assert self.initial_cid is not None
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
            qualification_threshold=task.fixed("qualification_threshold"),
            tolerance=task.fixed("tolerance"),
            target_accuracy=task.fixed("target_accuracy"),
            training_duration=task.training_seconds,
            commit_duration=task.commit_seconds,
            reveal_duration=task.reveal_seconds,
            reward_policy=RewardPolicy.TOPK if task.reward_policy == "topk"
            else RewardPolicy.CONTRIBUTION,
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

    # --- network ---------------------------------------------------------------------------

    def _lookup(self, peer: PeerID) -> bytes | None:
        return self.peers.get(peer)

    async def _load_peers(self) -> None:
        """Peer ids and encryption keys of the task's members and requester."""
        assert self.task is not None
        workers, validators = await self.chain.run(self.client.members, self.task)
        requester = await self.chain.run(self.client.requester, self.task)
        for address in (*workers, *validators, requester):
            participant = await self.chain.run(self.client.participant, address)
            member = address_bytes(address)
            try:
                peer = PeerID(participant.peer_id)
            except Exception:
                self.log.warning("member %s registered a malformed peer id", address)
                continue
            self.peers[peer] = member
            self.peer_of[member] = peer
            self.encryption_keys[member] = participant.encryption_key
            self.vrf_keys[member] = participant.vrf_modulus

    async def _gossip_session(self) -> None:
        assert self.task is not None
        chain_id = self.client.chain_id
        task = address_bytes(self.task)
        self.discovery.join(task_namespace(chain_id, task))
        await self._load_peers()
        machine = self.machine
        assert machine is not None
        # _load_peers and _chain_round let gossip tell a member we have not loaded yet, or a
        # round our follower has not reached, from an invalid message (never penalize those)
        async with open_task_gossip(
            self.gossip_node, chain_id, task, lambda: machine.view.round, self._lookup,
            self._check_committee_proof, refresh_members=self._load_peers,
            chain_round=self._chain_round,
        ) as gossip:
            self.gossip = gossip
            self.gossip_ready.set()
            async with gossip.messages("models") as models:
                async for received in models:
                    if isinstance(received.message, ModelAnnouncement):
                        await self.events_send.send(announcement_received(received.message))

    async def _chain_round(self) -> int:
        assert self.task is not None
        return await self.chain.run(self.client.current_round, self.task)

    async def _check_committee_proof(self, message: Message, signer: PeerID) -> bool:
        """Gossip rule for CommitteeProof: a valid VRF proof of a seat in that round, for
        the validator's registered key (the contract checks it again at commit).

        What only says that the chain, or our view of it, cannot judge the proof (a failed
        read, a round not started as far as our endpoint knows, a stake already slashed)
        raises GossipIgnored: the forwarder is not penalized."""
        if not isinstance(message, CommitteeProof):
            return True
        try:
            return await self._committee_seat_proven(message)
        except ChainRevert as revert:
            raise GossipRejected(
                f"the chain refused to read round {message.round}: {revert}"
            ) from revert
        except (ChainError, OSError) as problem:
            raise GossipIgnored(f"chain read failed: {problem}") from problem

    async def _committee_seat_proven(self, message: CommitteeProof) -> bool:
        assert self.task is not None and self.params is not None
        modulus = self.vrf_keys.get(message.validator)
        if modulus is None:  # loaded with the peer map that gossip's lookup just matched
            raise GossipRejected("the validator has no registered VRF key in this task")
        if message.round not in self.round_seeds:
            info = await self.chain.run(self.client.round_info, self.task, message.round)
            if info.total_stake == 0:
                raise GossipIgnored(f"round {message.round} has not started on our chain view")
            self.round_seeds[message.round] = (info.seed, info.total_stake)
        seed, total_stake = self.round_seeds[message.round]
        # slashing happens at finalization, so during a round the locked deposit is the
        # stake the round's snapshot counted
        stake = await self.chain.run(
            self.client.locked_deposit, self.task, checksum(message.validator)
        )
        key = VRFPublicKey.from_modulus_bytes(modulus)
        beta = vrf_verify(key, round_alpha(seed, message.round), message.vrf_proof)
        if stake > 0 and is_selected(beta, self.params.committee_size, stake, total_stake):
            return True
        info = await self.chain.run(self.client.round_info, self.task, message.round)
        if info.finalized:  # the stake read is today's, maybe slashed since the snapshot
            raise GossipIgnored(f"round {message.round} is finalized already", retry=False)
        return False

    async def _publish(self, action: Publish) -> None:
        if isinstance(action, PublishScores) and self.config.behaviour.validator == "lazy":
            return
        await self.gossip_ready.wait()
        assert self.gossip is not None and self.task is not None
        message = wire_message(action, self.client.chain_id, address_bytes(self.task), self.me)
        try:
            await self.gossip.publish(message)
        except GossipRejected as problem:
            self.log.warning("not published: %s", problem)

    def _provider_infos(self, addresses: tuple[bytes, ...]) -> list[PeerInfo]:
        infos = []
        peerstore = self.exchange.host.get_peerstore()
        for address in addresses:
            peer = self.peer_of.get(address)
            if peer is None or peer == self.keys.peer_id:
                continue
            try:
                addrs = peerstore.addrs(peer)
            except Exception:
                addrs = []
            if addrs:
                infos.append(PeerInfo(peer, addrs))
        return infos

    async def _fetch(self, action: Fetch) -> None:
        if not self.peers and self.task is not None:
            await self._load_peers()
        bound = self._fetch_bound(action.cid)
        started = time.monotonic()
        try:
            await self.exchange.fetch(
                action.cid,
                bound,
                providers=self._provider_infos(action.providers),
                timeout_s=FETCH_TIMEOUT_S,
                pin=True,
            )
        except (BlockFetchError, BlockStoreError, ProtocolError, ValueError) as problem:
            self.log.warning("fetching %s failed: %s", action.cid, problem)
            await self.events_send.send(ev.FetchFailed(action.cid, str(problem)))
            return
        self.log.debug("fetched %s in %.1f s", action.cid, time.monotonic() - started)
        await self.events_send.send(ev.BlobFetched(action.cid))

    def _fetch_bound(self, cid: str) -> int:
        """The most bytes the blob `cid` may have: a validation set, or a model update
        (the initial model is smaller still); a peer cannot make us fetch more."""
        machine = self.machine
        if machine is not None and cid == machine.view.validation_cid:
            return learning.max_validation_size()
        if self.book is None:
            return learning.max_validation_size()
        return learning.max_update_size(self.book.spec)

    # --- jobs ------------------------------------------------------------------------------

    async def _run_jobs(self) -> None:
        async for action in self.jobs_recv:
            try:
                event = await self._job(action)
            except Exception as problem:  # a job's failure is reported, never fatal
                self.log.exception("job %s failed", type(action).__name__)
                job = JOB_OF.get(type(action))
                if job is None:
                    continue
                event = ev.JobFailed(getattr(action, "round", 0), job, f"{problem}")
            if event is not None:
                await self.events_send.send(event)

    async def _job(self, action: Action) -> ev.Event | None:
        handlers: dict[type, Callable[[Any], Awaitable[ev.Event | None]]] = {
            DrawSortition: self._draw_sortition,
            StartTraining: self._train,
            StartEvaluation: self._evaluate,
            Aggregate: self._aggregate,
            PrepareTaskData: self._prepare_task_data,
            SaveFinalModel: self._save_final_model,
        }
        return await handlers[type(action)](action)

    async def _recipients(self) -> list[bytes]:
        """X25519 keys of the task's members and requester: who may read our blobs."""
        if not self.encryption_keys:
            await self._load_peers()
        return list(self.encryption_keys.values())

    async def _draw_sortition(self, action: DrawSortition) -> ev.Event:
        assert self.task is not None and self.params is not None
        info = await self.chain.run(self.client.round_info, self.task, action.round)
        stake = await self.chain.run(self.client.locked_deposit, self.task)
        ticket = await trio.to_thread.run_sync(
            committee_proof, self.keys.vrf_key, action.seed, action.round
        )
        selected = stake > 0 and is_selected(
            ticket.beta, self.params.committee_size, stake, info.total_stake
        )
        return ev.SortitionDrawn(action.round, ticket.proof if selected else None)

    def _progress_logger(self, round: int) -> Callable[[Any], None]:
        last = [0.0]

        def report(progress: Any) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or progress.step == progress.total_steps:
                last[0] = now
                self.log.info(
                    "round %d: training step %d/%d, loss %.3f",
                    round, progress.step, progress.total_steps, progress.loss,
                )

        return report

    async def _train(self, action: StartTraining) -> ev.Event:
        book = self.book
        assert book is not None
        if self.shard is None:
            self.shard = await trio.to_thread.run_sync(learning.load_worker_shard, self.config.data)
        shard = self.shard
        recipients = await self._recipients()
        seed = int.from_bytes(self.me[:4], "big") ^ action.round

        def work() -> bytes:
            base = book.global_state(action.base)
            state = learning.train_update(
                book, base, shard, self.config.training, self.config.behaviour, seed,
                self._progress_logger(action.round),
            )
            return book.crypto.seal(encode_state_dict(state), recipients)

        self.log.info("round %d: training on %d samples", action.round, len(shard))
        sealed = await trio.to_thread.run_sync(work)
        cid = await self.exchange.publish(sealed)
        return ev.TrainingDone(action.round, cid, len(shard))

    async def _validation_set(self, cid: str) -> Dataset:
        if self.validation is None:
            book = self.book
            assert book is not None

            def load() -> Dataset:
                blob = learning.read_blob(self.store, cid, learning.max_validation_size())
                return learning.decode_dataset(book.crypto.open(blob, learning.max_validation_size()))

            self.validation = await trio.to_thread.run_sync(load)
        return self.validation

    async def _evaluate(self, action: StartEvaluation) -> ev.Event:
        book, params = self.book, self.params
        assert book is not None and params is not None
        validation = await self._validation_set(action.validation_cid)

        def work() -> learning.Evaluation:
            base = book.global_state(action.base)
            return learning.evaluate_round(
                book, action.workers, action.candidates, base, validation,
                params.qualification_threshold,
            )

        self.log.info(
            "round %d: evaluating %d updates on %d samples",
            action.round, len(action.candidates), len(validation),
        )
        result = await trio.to_thread.run_sync(work)
        if self.config.behaviour.validator == "lying":
            result = learning.lie_about(result)
        self.log.info(
            "round %d: accuracies %s, accepted %d, global accuracy %.4f",
            action.round,
            ["-" if a is None else f"{a:.3f}" for a in result.accuracies],
            sum(result.accepts), result.global_accuracy / 1e6,
        )
        return ev.EvaluationDone(
            action.round, result.workers, result.scores, result.accepts,
            result.global_accuracy, os.urandom(32),
        )

    async def _aggregate(self, action: Aggregate) -> None:
        book, machine = self.book, self.machine
        assert book is not None and machine is not None
        model = machine.view.global_model
        if model is None or model.after_round != action.round:
            model = GlobalModel(self._initial_cid(), action.round, action.updates)
        state = await trio.to_thread.run_sync(book.global_state, model)
        self.log.info("round %d: averaged %d accepted updates", action.round, len(action.updates))
        validation_cid = machine.view.validation_cid
        if validation_cid and (self.validation is not None or validation_cid in machine.view.have):
            validation = await self._validation_set(validation_cid)
            images, labels = learning.to_tensors(validation)

            def accuracy() -> float:
                return learning.evaluate(book.module(state), images, labels).accuracy

            self.status.accuracy_by_round[action.round] = await trio.to_thread.run_sync(accuracy)
            self.log.info(
                "round %d: global model accuracy %.4f",
                action.round, self.status.accuracy_by_round[action.round],
            )
        return None

    def _initial_cid(self) -> str:
        machine = self.machine
        assert machine is not None and machine.view.global_model is not None
        return machine.view.global_model.initial_cid

    async def _prepare_task_data(self, action: PrepareTaskData) -> ev.Event:
        book = self.book
        assert book is not None
        samples = self.config.task.validation_samples
        dataset = await trio.to_thread.run_sync(
            learning.load_validation_set, self.config.data, samples, self.config.task.validation
        )
        self.validation = dataset
        keys = []
        for member in (*action.workers, *action.validators, self.me):
            participant = await self.chain.run(self.client.participant, checksum(member))
            keys.append(participant.encryption_key)
        sealed = await trio.to_thread.run_sync(
            book.crypto.seal, learning.encode_dataset(dataset), keys
        )
        cid = await self.exchange.publish(sealed)
        self.log.info("validation set of %d samples sealed for %d members", samples, len(keys) - 1)
        return ev.TaskDataReady(cid, action.workers, action.validators)

    async def _save_final_model(self, action: SaveFinalModel) -> None:
        book = self.book
        assert book is not None
        output = self.config.task.output or self.data_dir / "final-model.bin"

        def save() -> None:
            blob = encode_state_dict(book.global_state(action.model))
            output.parent.mkdir(parents=True, exist_ok=True)
            tmp = output.with_name(output.name + ".tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, output)

        await trio.to_thread.run_sync(save)
        self.status.final_model = output
        self.log.info("final model (after round %d) saved to %s", action.model.after_round, output)


@dataclass
class _Batch:
    """The events of one chain poll; `done` is set once handled (the cursor committed)."""

    events: list[ev.Event]
    done: trio.Event = field(default_factory=trio.Event)
