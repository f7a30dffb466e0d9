"""NetworkEffects on libp2p: the task's gossip (with the committee-seat rule for proofs),
its members' peer ids and keys, publishing and fetching blobs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from node.blocks import BlockExchange, BlockFetchError, BlockStoreError
from node.chain import ChainError, ChainRevert, Participant, TaskParams
from node.config import BehaviourConfig
from node.discovery import Discovery, task_namespace
from node.gossip import (
    GossipIgnored,
    GossipNode,
    GossipRejected,
    TaskGossip,
    open_task_gossip,
)
from node.models import build_model
from node.runtime import learning, timing
from node.runtime.chainside import ChainAccess, address_bytes, checksum
from node.runtime.effects import Deliver
from protocol.codec import ModelSpec
from protocol.errors import ProtocolError, VRFError
from protocol.gossip_rules import member_roles, update_readers
from protocol.messages import CommitteeProof, KeyRelease, Message, ModelAnnouncement, UnseatedProof
from protocol.sortition import RegisteredKey, verify_committee_member, verify_unseated
from protocol.state import events as ev
from protocol.state.actions import Fetch, Publish, PublishScores
from protocol.state.records import BlobKind, Role, TaskTerms
from protocol.state.wire import (
    announcement_received,
    key_release_received,
    unseated_proof_received,
    wire_message,
)
from protocol.vrf import os2ip

FETCH_TIMEOUT_S = 120.0
COPY_POLL_S = 0.5


class TaskNetwork:
    """The network side of one node: what it knows of the followed task's members, and
    the gossip, discovery and block exchange it uses for the task."""

    def __init__(
        self,
        chain: ChainAccess,
        peer_id: PeerID,
        me: bytes,
        exchange: BlockExchange,
        discovery: Discovery,
        gossip_node: GossipNode,
        behaviour: BehaviourConfig,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.chain = chain
        self.client = chain.client
        self.peer_id = peer_id
        self.me = me
        self.exchange = exchange
        self.discovery = discovery
        self.gossip_node = gossip_node
        self.behaviour = behaviour
        self.log = log
        self.task: str | None = None  # followed task; None until FollowTask
        self.bounds: dict[BlobKind, int] = {BlobKind.VALIDATION_SET: learning.max_validation_size()}
        self.peers: dict[PeerID, bytes] = {}  # task members' peer ids -> addresses
        self.peer_of: dict[bytes, PeerID] = {}
        self.encryption_keys: dict[bytes, bytes] = {}
        self.vrf_keys: dict[bytes, bytes] = {}  # validators' registered VRF moduli
        self.roles: dict[bytes, Role] = {}  # members' roles: gossip checks who sends what
        self.round_seeds: dict[int, tuple[bytes, int]] = {}  # round -> (seed, total stake)
        self._params: TaskParams | None = None
        self._gossip: TaskGossip | None = None
        self._gossip_ready = trio.Event()
        # round -> worker -> the first CID it announced (what a copycat scenario copies)
        self.announced: dict[int, dict[bytes, str]] = {}
        self._ahead: dict[str, trio.Event] = {}  # CIDs fetched ahead -> set once done
        self._training_over: Callable[[int], bool] | None = None  # the machine's, per round

    def follow(self, task: bytes, terms: TaskTerms) -> None:
        self.task = checksum(task)
        spec = ModelSpec.of(build_model(terms.model_arch))
        self.bounds[BlobKind.MODEL] = learning.max_update_size(spec)

    def _followed(self) -> str:
        if self.task is None:
            raise ChainError("no task is followed yet")
        return self.task

    # --- members -------------------------------------------------------------------------

    async def load_members(self) -> None:
        """Peer ids and encryption keys of the task's members and requester.

        A registration never changes, so only members not loaded yet are read, all in one
        chain call (one thread hop and lock hold, not one per member): every node loads
        every member, and reloads when gossip names a signer it does not know yet."""
        task = self._followed()
        known = set(self.encryption_keys)

        def read() -> tuple[list[str], list[str], str, list[Participant]]:
            workers, validators = self.client.members(task)
            requester = self.client.requester(task)
            new = [a for a in (*workers, *validators, requester) if address_bytes(a) not in known]
            return workers, validators, requester, [self.client.participant(a) for a in new]

        workers, validators, requester, participants = await self.chain.run(read)
        self.roles.update(
            member_roles(
                map(address_bytes, workers), map(address_bytes, validators), address_bytes(requester)
            )
        )
        for participant in participants:
            address = participant.address
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

    async def member_recipients(self) -> list[bytes]:
        """X25519 keys of the task's members and requester: who may read a released key."""
        if not self.encryption_keys:
            await self.load_members()
        return list(self.encryption_keys.values())

    async def update_recipients(self) -> list[bytes]:
        """X25519 keys of who may read our update while training is open
        (`protocol.gossip_rules.update_readers`): the requester, every validator and us."""
        if not self.encryption_keys:
            await self.load_members()
        return update_readers(self.encryption_keys, self.roles, self.me)

    def _lookup(self, peer: PeerID) -> bytes | None:
        return self.peers.get(peer)

    # --- gossip --------------------------------------------------------------------------

    async def gossip(
        self,
        current_round: Callable[[], int],
        deliver: Deliver,
        training_over: Callable[[int], bool] | None = None,
    ) -> None:
        task_address = self._followed()
        chain_id = self.client.chain_id
        task = address_bytes(task_address)
        self._training_over = training_over
        self.discovery.join(task_namespace(chain_id, task))
        await self.load_members()
        if self._params is None:  # fetch_ahead asks whether the task samples its workers
            self._params = await self.chain.run(self.client.task_params, task_address)
        # load_members and _chain_round let gossip tell a member we have not loaded yet, or
        # a round our follower has not reached, from an invalid message (never penalize those)
        async with trio.open_nursery() as ahead, open_task_gossip(
            self.gossip_node, chain_id, task, current_round, self._lookup,
            self._check_committee_proof, refresh_members=self.load_members,
            chain_round=self._chain_round, role_of=self.roles.get, training_over=training_over,
        ) as gossip:
            self._gossip = gossip
            self._gossip_ready.set()
            ahead.start_soon(self._deliver_unseated, gossip, deliver)
            async with gossip.messages("models") as models:
                async for received in models:
                    if isinstance(received.message, ModelAnnouncement):
                        timing.point(
                            self.log, "announced", received.message.round,
                            cid=received.message.cid, worker=received.message.worker.hex(),
                        )
                        self._remember(received.message)
                        self.fetch_ahead(ahead, received.message)
                        await deliver(announcement_received(received.message))
                    elif isinstance(received.message, KeyRelease):
                        await deliver(key_release_received(received.message))

    async def _deliver_unseated(self, gossip: TaskGossip, deliver: Deliver) -> None:
        """Unseated validators' proofs (checked by `_check_committee_proof`) to the machine:
        the requester ends the commit phase with them."""
        async with gossip.messages("committee") as committee:
            async for received in committee:
                if isinstance(received.message, UnseatedProof):
                    await deliver(unseated_proof_received(received.message))

    def _remember(self, message: ModelAnnouncement) -> None:
        for old in [r for r in self.announced if r < message.round - 1]:
            del self.announced[old]
        self.announced.setdefault(message.round, {}).setdefault(message.worker, message.cid)

    def fetch_ahead(self, nursery: trio.Nursery, message: ModelAnnouncement) -> None:
        """A worker fetches another worker's update as soon as it is announced, so that the
        round's averaging, which it needs before it can train again, finds it in the store
        rather than fetching every update at once when the round is settled. Only the first
        CID a worker announces in a round (`announced`): a member announcing many cannot
        make us fetch more than one update per worker and round. An update announced once
        training has closed is left to the round's own fetch: the validators are fetching
        it then, to evaluate it, and the workers do not need it before the round is settled.
        Not under sampling: a worker builds a round's model only once a later round draws it
        (`protocol.state.worker`), and fetching every update would grow with W x updates."""
        if self.roles.get(self.me) != Role.WORKER or message.worker == self.me:
            return
        if self._samples_workers():
            return
        if self._training_over is not None and self._training_over(message.round):
            return
        if self.announced.get(message.round, {}).get(message.worker) != message.cid:
            return
        if message.cid in self._ahead:
            return
        kept = 2 * max(len(self.peers), 1)  # about two rounds' updates; older ones are done
        for cid in list(self._ahead)[: max(0, len(self._ahead) - kept)]:
            del self._ahead[cid]
        done = self._ahead[message.cid] = trio.Event()
        nursery.start_soon(self._fetch_ahead, message, done)

    def _samples_workers(self) -> bool:
        """Whether each round draws only some of the task's workers (`workers_per_round`)."""
        params = self._params
        workers = sum(1 for role in self.roles.values() if role == Role.WORKER)
        return params is not None and 0 < params.workers_per_round < workers

    async def _fetch_ahead(self, message: ModelAnnouncement, done: trio.Event) -> None:
        try:
            await self._fetch(Fetch(message.cid, (message.worker,), BlobKind.MODEL))
        finally:
            done.set()

    async def copied_update(self, round: int) -> str:
        """The copycat scenario: the first update another worker announces in `round`,
        fetched into our store so we can serve it, to be submitted as our own. Sealing
        keeps us from reading it; the validators can, which is what the copy counts on."""
        while True:
            for worker, cid in self.announced.get(round, {}).items():
                if worker != self.me:
                    answer = await self.fetch(Fetch(cid, (worker,), BlobKind.MODEL))
                    if isinstance(answer, ev.BlobFetched):
                        return cid
            await trio.sleep(COPY_POLL_S)

    async def _chain_round(self) -> int:
        return await self.chain.run(self.client.current_round, self._followed())

    async def _check_committee_proof(self, message: Message, signer: PeerID) -> bool:
        """Gossip rule for CommitteeProof: a valid VRF proof of a seat in that round, for
        the validator's registered key (the contract checks it again at commit); for
        UnseatedProof, a valid proof that shows the validator not seated (as
        Task.endCommitPhase checks it): a seated validator has no such proof.

        What only says that the chain, or our view of it, cannot judge the proof (a failed
        read, a round not started as far as our endpoint knows, a stake already slashed)
        raises GossipIgnored: the forwarder is not penalized."""
        if not isinstance(message, CommitteeProof | UnseatedProof):
            return True
        try:
            return await self._committee_seat_proven(message)
        except ChainRevert as revert:
            raise GossipRejected(
                f"the chain refused to read round {message.round}: {revert}"
            ) from revert
        except (ChainError, OSError) as problem:
            raise GossipIgnored(f"chain read failed: {problem}") from problem

    async def _committee_seat_proven(self, message: CommitteeProof | UnseatedProof) -> bool:
        task = self._followed()
        modulus = self.vrf_keys.get(message.validator)
        if modulus is None:  # loaded with the peer map that gossip's lookup just matched
            raise GossipRejected("the validator has no registered VRF key in this task")
        if self._params is None:
            self._params = await self.chain.run(self.client.task_params, task)
        if message.round not in self.round_seeds:
            info = await self.chain.run(self.client.round_info, task, message.round)
            if info.total_stake == 0:
                raise GossipIgnored(f"round {message.round} has not started on our chain view")
            self.round_seeds[message.round] = (info.seed, info.total_stake)
        seed, total_stake = self.round_seeds[message.round]
        # slashing happens at finalization, so during a round the locked deposit is the
        # stake the round's snapshot counted
        stake = await self.chain.run(self.client.locked_deposit, task, checksum(message.validator))
        key = RegisteredKey(os2ip(modulus), message.validator)
        check = verify_committee_member if isinstance(message, CommitteeProof) else verify_unseated
        try:
            check(
                key, seed, message.round, message.vrf_proof, stake, total_stake,
                self._params.committee_size,
            )
            return True
        except VRFError:
            pass
        info = await self.chain.run(self.client.round_info, task, message.round)
        if info.finalized:  # the stake read is today's, maybe slashed since the snapshot
            raise GossipIgnored(f"round {message.round} is finalized already", retry=False)
        return False

    async def publish(self, action: Publish) -> None:
        if isinstance(action, PublishScores) and self.behaviour.validator == "lazy":
            return
        await self._gossip_ready.wait()
        gossip = self._gossip
        if gossip is None:  # set before the event is; kept for the type checker
            return
        message = wire_message(action, self.client.chain_id, address_bytes(self._followed()), self.me)
        try:
            with timing.span(
                self.log, "publish", action.round, message=type(message).__name__,
                cid=getattr(action, "cid", None),
            ):
                await gossip.publish(message)
        except (GossipRejected, GossipIgnored) as problem:
            self.log.warning("not published: %s", problem)

    # --- blobs ---------------------------------------------------------------------------

    async def _provider_infos(self, addresses: tuple[bytes, ...]) -> list[PeerInfo]:
        """The hinted providers, dialable: a member we never connected to is looked up by
        peer id, since the DHT may hold no provider record for the blob (announcing is
        best effort) and then the hint is all the fetch has."""
        peers = [self.peer_of.get(address) for address in addresses]
        wanted = list(dict.fromkeys(p for p in peers if p is not None and p != self.peer_id))
        found: dict[PeerID, PeerInfo] = {}

        async def locate(peer: PeerID) -> None:
            info = await self.discovery.locate(peer)
            if info is not None:
                found[peer] = info

        async with trio.open_nursery() as lookups:
            for peer in wanted:
                lookups.start_soon(locate, peer)
        return [found[peer] for peer in wanted if peer in found]  # in the hint's order

    async def fetch(self, action: Fetch) -> ev.Event:
        ahead = self._ahead.get(action.cid)
        if ahead is not None:  # fetching it already: then it is local, or we try again
            await ahead.wait()
        return await self._fetch(action)

    async def _fetch(self, action: Fetch) -> ev.Event:
        if not self.peers and self.task is not None:
            await self.load_members()
        started = time.monotonic()
        try:
            with timing.span(self.log, "fetch", 0, cid=action.cid, kind=action.kind.value):
                await self.exchange.fetch(
                    action.cid,
                    self.bounds[action.kind],
                    providers=await self._provider_infos(action.providers),
                    timeout_s=FETCH_TIMEOUT_S,
                    pin=True,
                )
        except (BlockFetchError, BlockStoreError, ProtocolError, ValueError) as problem:
            connected, bootstrap = self.discovery.connectivity()
            self.log.warning(
                "fetching %s failed: %s (connected to %d peers, %d of them task members, "
                "%d of %d bootstrap peers)", action.cid, problem, len(connected),
                len(connected & self.peers.keys()), bootstrap,
                len(self.discovery.config.bootstrap_addrs),
            )
            return ev.FetchFailed(action.cid, str(problem))
        self.log.debug("fetched %s in %.1f s", action.cid, time.monotonic() - started)
        return ev.BlobFetched(action.cid)
