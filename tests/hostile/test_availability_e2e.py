"""Availability is not disagreement, end to end: whole tasks in one process (the embedded
chain, real libp2p hosts on 127.0.0.1, real MNIST) while hostile peers attack the network,
with the money read from the chain's round results.

- A flood of forged-signature gossip on the task's topics and 64 held block streams on an
  honest worker's node, both running through the whole task: every honest worker is
  accepted and paid, nobody honest is slashed, every node finishes.
- A worker that serves its update to one validator only: the others fetch it through that
  validator (it provides what it fetched) or mark it UNAVAILABLE, which never counts as
  disagreement; no honest validator is slashed and the books balance.

run_node builds each node's host and gossip stack itself, so the tests reach them through
``Tap``, which wraps the two openers node.runtime.node calls (the nodes still run the real
ones). Every wait is a bounded hang guard, never a timing assertion.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from eth_account import Account
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

import node.runtime.node as node_module
from node.blocks.bitswap import PROTOCOLS as BITSWAP_PROTOCOLS
from node.blocks.exchange import PROTOCOL_ID as BLOCKS_PROTOCOL
from node.datasets import mnist_available
from node.gossip import GossipNode
from node.host import HostConfig, connect, host_multiaddrs, open_host
from node.localnet.inprocess import InProcessResult, run_inprocess
from node.runtime.keys import read_chain_key
from protocol.cid import cid_of
from protocol.messages import ModelAnnouncement, encode_message
from tests.hostile.attacks import forged_signature_flood, open_raw_stream
from tests.hostile.test_blocks_hold import Holder, total_opened
from tests.node.test_inprocess import assert_paid_as_credited

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("FL_NODE_DATA_ROOT", REPO.parent / "shared/datasets/mnist"))
HANG_GUARD_S = 120.0  # waits for a node to come up or subscribe; a hang guard only

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not mnist_available(DATA_ROOT, "train"), reason=f"MNIST not found under {DATA_ROOT}"
    ),
]

# Small and quick: 300 samples a worker, a 2-layer MLP, one round. A threshold of 0.3 keeps
# an honest update trained on 300 samples above qualification, so only the attack can fail it;
# top-2 pays both accepted workers (a leave-one-out contribution of one of two small updates
# can be 0, which the contribution policy pays nothing for).
TASK_KEYS: dict[str, Any] = {"qualification_threshold": 0.3, "reward_policy": "topk", "top_k": 2}
BLOCK_PROTOCOLS = frozenset({BLOCKS_PROTOCOL, *BITSWAP_PROTOCOLS})

StreamHandler = Callable[[INetStream], Awaitable[None]]


@dataclass
class Withholding:
    """A node's block servers (the block exchange and bitswap) answer only ``favourite``;
    every other peer's stream is reset before a byte is read."""

    favourite: str  # node name
    refused: list[PeerID] = field(default_factory=list)
    served: list[PeerID] = field(default_factory=list)


@dataclass
class Tap:
    """The hosts and gossip stacks of an in-process task's nodes, by node name (the name is
    the node's data folder, where its identity key lives)."""

    hosts: dict[str, IHost] = field(default_factory=dict)
    gossip: dict[str, GossipNode] = field(default_factory=dict)
    withholding: dict[str, Withholding] = field(default_factory=dict)

    def name_of(self, host: IHost) -> str:
        return next(name for name, known in self.hosts.items() if known is host)

    async def host_of(self, name: str) -> IHost:
        with trio.fail_after(HANG_GUARD_S):
            while name not in self.hosts:
                await trio.sleep(0.05)
        return self.hosts[name]

    async def task_topics(self, name: str) -> list[str]:
        """The task topics ``name`` subscribed to, once it has."""
        with trio.fail_after(HANG_GUARD_S):
            while True:
                gossip = self.gossip.get(name)
                topics = sorted(t for t in gossip.pubsub.topic_ids if t.startswith("/fl/")) if gossip else []
                if topics:
                    return topics
                await trio.sleep(0.05)

    def _withhold(self, name: str, host: IHost) -> None:
        rule = self.withholding.get(name)
        if rule is None:
            return
        # the exchange and bitswap register their handlers after the host opens
        register = host.set_stream_handler

        def set_stream_handler(protocol: TProtocol, handler: StreamHandler) -> None:
            register(protocol, self._only_favourite(rule, handler) if protocol in BLOCK_PROTOCOLS else handler)

        host.set_stream_handler = set_stream_handler  # type: ignore[method-assign, assignment]

    def _only_favourite(self, rule: Withholding, handler: StreamHandler) -> StreamHandler:
        async def serve(stream: INetStream) -> None:
            peer = stream.muxed_conn.peer_id
            favourite = self.hosts.get(rule.favourite)
            if favourite is None or peer != favourite.get_id():
                rule.refused.append(peer)
                await stream.reset()
                return
            rule.served.append(peer)
            await handler(stream)

        return serve


@pytest.fixture
def tap(monkeypatch: pytest.MonkeyPatch) -> Tap:
    tapped = Tap()
    real_open_host = node_module.open_host
    real_open_pubsub = node_module.open_pubsub

    @asynccontextmanager
    async def open_host_tapped(config: HostConfig) -> AsyncIterator[IHost]:
        async with real_open_host(config) as host:
            name = Path(config.key_path).parent.name
            tapped.hosts[name] = host
            tapped._withhold(name, host)
            yield host

    @asynccontextmanager
    async def open_pubsub_tapped(host: IHost, *args: Any) -> AsyncIterator[GossipNode]:
        async with real_open_pubsub(host, *args) as gossip:
            tapped.gossip[tapped.name_of(host)] = gossip
            yield gossip

    monkeypatch.setattr(node_module, "open_host", open_host_tapped)
    monkeypatch.setattr(node_module, "open_pubsub", open_pubsub_tapped)
    return tapped


async def run_task_while(
    attack: Callable[[], Awaitable[None]], task: Callable[[], Awaitable[InProcessResult]]
) -> InProcessResult:
    """Run ``task`` with ``attack`` beside it; the attack is stopped when the task is over."""
    out: list[InProcessResult] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            out.append(await task())
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        nursery.start_soon(attack)
    return out[0]


def assert_books_balance(result: InProcessResult) -> None:
    """Every round paid out exactly its pools and slashes, less what went back to escrow,
    and the task holds nothing at the end."""
    params = result.reader.task_params(result.task)
    for r in result.rounds:
        paid = sum(r.worker_payouts) + sum(r.validator_payouts) + r.returned_to_escrow
        pools = params.worker_reward_per_round + params.validator_reward_per_round
        assert paid == pools + sum(r.worker_slashes) + sum(r.validator_slashes)
    assert result.reader.escrow(result.task) == 0


def assert_every_node_finished(result: InProcessResult) -> None:
    assert all(node.done and node.phase == "terminated" for node in result.nodes)
    assert [node.failed_txs for node in result.nodes] == [[]] * len(result.nodes)


# --- the flood and the fetch in one test ----------------------------------------------------

FLOOD_PER_IDENTITY = 1000
FLOOD_LINGER_S = 2.0  # an identity stays at most this long after its share, to be cut off
FLOOD_PAUSE_S = 0.5  # before the next identity takes over
FLOOD_MAX_IDENTITIES = 100  # per target; the flood is meant to outlast the task
HOLDERS = 8
STREAMS_PER_HOLDER = 8


@dataclass
class Flood:
    sent: int = 0
    identities: list[PeerID] = field(default_factory=list)
    exhausted: bool = False  # the flood ran out of identities before the task ended


async def flood_gossip(stack: AsyncExitStack, key_dir: Path, target: IHost, topics: Sequence[str],
                       impersonated: PeerID, body: bytes, flood: Flood) -> None:
    """Until cancelled: a fresh identity writes ``FLOOD_PER_IDENTITY`` messages in
    ``impersonated``'s name with random signatures across ``topics``, stays until the target
    disconnects it (at most ``FLOOD_LINGER_S``), and the next one takes over."""
    target_addr = host_multiaddrs(target)[0]
    per_topic = FLOOD_PER_IDENTITY // len(topics)
    for index in range(FLOOD_MAX_IDENTITIES):
        frames = [
            frame
            for number, topic in enumerate(topics)
            for frame in forged_signature_flood(
                topic, impersonated, body, per_topic,
                first_seqno=(index * len(topics) + number) * per_topic,
            )
        ]  # fmt: skip
        key_path = key_dir / f"flooder-{target.get_id().to_base58()[-8:]}-{index}.key"
        attacker = await stack.enter_async_context(open_host(HostConfig(key_path=key_path)))
        flood.identities.append(attacker.get_id())
        try:
            peer = await connect(attacker, target_addr)
            stream = await open_raw_stream(attacker, peer)
            for start in range(0, len(frames), 50):
                await stream.write(b"".join(frames[start : start + 50]))
                flood.sent += len(frames[start : start + 50])
                await trio.sleep(0.05)  # a steady flood, not one burst
        except Exception:  # the target reset the stream or closed the connection
            pass
        with trio.move_on_after(FLOOD_LINGER_S):
            while attacker.get_network().connections.get(target.get_id()):
                await trio.sleep(0.05)
        await trio.sleep(FLOOD_PAUSE_S)
    flood.exhausted = True


async def test_an_honest_worker_under_flood_and_held_streams_is_accepted_and_paid(
    tmp_path: Path, tap: Tap
) -> None:
    """A hostile peer floods worker0's and validator0's task topics with forged signatures
    in worker0's name (its announcement, with another CID) and holds 8 x 8 block streams on
    worker0 (trickling, re-opened when dropped) from before worker0 publishes to the end."""
    floods = {"worker0": Flood(), "validator0": Flood()}
    holders: list[Holder] = []

    async def attack() -> None:
        async with AsyncExitStack() as stack:
            worker0 = await tap.host_of("worker0")
            for index in range(HOLDERS):
                key = HostConfig(key_path=tmp_path / f"holder{index}.key")
                holders.append(Holder(await stack.enter_async_context(open_host(key))))
            async with trio.open_nursery() as nursery:
                target = PeerInfo(worker0.get_id(), worker0.get_addrs())
                for holder in holders:
                    nursery.start_soon(holder.hold, target, STREAMS_PER_HOLDER, 0.3)
                topics = await tap.task_topics("worker0")
                chain_id, task = topics[0].split("/")[2:4]
                worker = Account.from_key(read_chain_key(tmp_path / "task" / "worker0" / "chain.key")).address
                forged = ModelAnnouncement(int(chain_id), bytes.fromhex(task[2:]), 1,
                                           bytes.fromhex(worker[2:]), cid_of(b"forged update"), 300)
                for name, flood in floods.items():
                    nursery.start_soon(flood_gossip, stack, tmp_path, await tap.host_of(name), topics,
                                       worker0.get_id(), encode_message(forged), flood)

    result = await run_task_while(attack, lambda: run_inprocess(
        tmp_path / "task", DATA_ROOT, workers=2, validators=2, rounds=1, model="mnist_2nn",
        max_samples=600, validation_samples=100, task=TASK_KEYS, timeout_s=540,
    ))

    print(
        f"\n{total_opened(holders)} block streams held on worker0; forged messages sent: "
        + ", ".join(f"{n} {f.sent} from {len(f.identities)} identities" for n, f in floods.items())
    )
    # the attack ran through the whole task: the holders from the start, each flood from the
    # task's subscription on (it stops only when cancelled, after the task), with fresh
    # identities replacing banned ones; how much got written before each ban depends on the
    # defence and the load, so it is printed, not asserted
    assert total_opened(holders) >= HOLDERS * STREAMS_PER_HOLDER
    assert all(len(f.identities) >= 2 and not f.exhausted for f in floods.values()), floods

    assert_every_node_finished(result)
    (r,) = result.rounds
    attacked = r.workers.index(result.workers[0].address)
    assert r.finalized and r.accepted[attacked] and r.worker_payouts[attacked] > 0
    assert all(r.accepted) and all(p > 0 for p in r.worker_payouts)
    assert not any(r.worker_slashes) and not any(r.validator_slashes)
    assert all(r.revealed) and all(r.agreed) and all(r.validator_payouts)

    # each target banned flooders and no honest node
    honest = {host.get_id() for host in tap.hosts.values()}
    for name, flood in floods.items():
        banned = set(tap.gossip[name].guard.banned_until)
        assert banned & set(flood.identities), f"{name} banned no flooder"
        assert not banned & honest, f"{name} banned an honest node"
    assert_paid_as_credited(result)
    assert_books_balance(result)


# --- a worker that serves one validator only ------------------------------------------------


async def test_a_worker_serving_one_validator_only_costs_no_honest_validator(
    tmp_path: Path, tap: Tap
) -> None:
    """worker1's block servers answer validator0 only: the other validators and the requester
    get its update through validator0, which provides what it fetched, or mark it
    UNAVAILABLE. Either way no validator disagrees and nobody honest loses money."""
    withholding = tap.withholding["worker1"] = Withholding(favourite="validator0")
    result = await run_inprocess(
        tmp_path / "task", DATA_ROOT, workers=2, validators=3, rounds=1, model="mnist_2nn",
        max_samples=600, validation_samples=100, task=TASK_KEYS, timeout_s=540,
    )

    # the withholding bit: others were refused, and nobody but validator0 was ever served
    favourite = tap.hosts["validator0"].get_id()
    assert withholding.refused and favourite not in withholding.refused
    assert set(withholding.served) <= {favourite}

    assert_every_node_finished(result)
    (r,) = result.rounds
    honest, withholder = (r.workers.index(w.address) for w in result.workers)
    assert r.finalized and all(r.revealed) and all(r.agreed)
    assert not any(r.validator_slashes) and all(p > 0 for p in r.validator_payouts)
    assert r.accepted[honest] and r.worker_payouts[honest] > 0 and not r.worker_slashes[honest]
    # fetched through validator0 (accepted and paid) or unavailable to most (neither)
    assert not r.worker_slashes[withholder]
    assert r.accepted[withholder] == (r.worker_payouts[withholder] > 0)
    print(
        f"\nthe withheld update was {'accepted' if r.accepted[withholder] else 'not accepted'}; "
        f"{len(withholding.refused)} block streams refused; validator payouts "
        f"{[p / 10**18 for p in r.validator_payouts]} ETH"
    )
    assert_paid_as_credited(result)
    assert_books_balance(result)
