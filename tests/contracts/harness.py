"""Test harness for the contracts: a deployed registry with registered, funded participants,
task creation with sensible defaults, and a driver that plays one round end to end.

Each participant has its own key and ChainClient (anvil hands out duplicate nonces to
concurrent senders of one account, and it mirrors how nodes run), and its own committed
test VRF key (tests/data/vrf_test_keys.json), registered with a real certificate; committee
members commit with real VRF proofs for the round's seed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_account import Account
from web3 import Web3

from node.chain import (
    ChainClient,
    ChainRevert,
    Deployment,
    Phase,
    Receipt,
    RoundResult,
    TaskParams,
    dev,
)
from protocol import keycert, sortition
from protocol.manifest import WorkerVerdict
from protocol.rewards import CommitteeMember, Policy, RewardPolicy, Settlement
from protocol.vrf import VRFPrivateKey
from tests.vrf_test_keys import honest_keys

ETHER = 10**18
FUNDING = 100 * ETHER
DURATION = 1_000  # seconds per phase: far above the 1 s per block of eth-tester
MAX_SAMPLES = 60_000  # the tasks' maxSamplesPerWorker
SAMPLES_CLAIMED = 100  # play_round's submitter i claims SAMPLES_CLAIMED + i samples


def _deterministic_key(label: str) -> bytes:
    # Test keys only: derived from a label so failures are reproducible across runs.
    return hashlib.sha256(f"fl-node contract tests {label}".encode()).digest()


def peer_id_for(address: str) -> bytes:
    return b"\x00\x24\x08\x01\x12\x20" + hashlib.sha256(address.encode()).digest()


def encryption_key_for(address: str) -> bytes:
    return hashlib.sha256(b"x25519" + address.encode()).digest()


@functools.cache
def certificate(key: VRFPrivateKey, owner: str) -> bytes:
    """The key's certificate for `owner` (about 0.14 s each: cached for the session, so the
    embedded and the anvil world, which use the same addresses, share them)."""
    return keycert.certify(key, bytes.fromhex(owner.removeprefix("0x")))


def register(client: ChainClient, key: VRFPrivateKey, peer_id: bytes | None = None) -> Receipt:
    """Register `client` with `key` and a real certificate bound to its address."""
    return client.register(
        peer_id if peer_id is not None else peer_id_for(client.address),
        encryption_key_for(client.address),
        key.public_key.modulus_bytes(),
        certificate(key, client.address),
    )


# Everyone selected: tau * w >= W for every positive stake a test uses, so each staked
# validator's threshold min(1, tau * w / W) is 1 (the largest committeeSize, uint32).
EVERYONE = 2**32 - 1


@dataclass
class World:
    w3: Web3
    deployment: Deployment
    requester: ChainClient
    workers: list[ChainClient]
    validators: list[ChainClient]
    outsider: ChainClient  # registered, never joins
    unregistered: ChainClient
    settlement_harness: str  # RewardMathHarness, linked to the deployment's RewardMath
    vrf_keys: dict[str, VRFPrivateKey]  # address -> the VRF key it registered
    spare_vrf_keys: tuple[VRFPrivateKey, ...]  # test keys nobody registered (yet)
    snapshot_id: Any = None
    _member_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    _seeds: dict[tuple[str, int], bytes] = field(default_factory=dict)

    @property
    def everyone(self) -> list[ChainClient]:
        return [self.requester, *self.workers, *self.validators, self.outsider, self.unregistered]

    def reset(self) -> None:
        """Back to the freshly registered state (eth-tester: cheap; anvil: re-snapshots)."""
        dev.revert(self.w3, self.snapshot_id)
        if not dev.is_embedded(self.w3):
            self.snapshot_id = dev.snapshot(self.w3)  # anvil consumes a snapshot on revert
        for client in self.everyone:
            client.forget_cached_state()
        self._member_counts.clear()
        self._seeds.clear()  # a task created after the revert may reuse an address

    def params(self, **overrides: Any) -> TaskParams:
        base = TaskParams(
            model_arch="mnist-cnn",
            aggregator="fedavg",
            initial_model_cid="bafkreiinitialmodel",
            rounds=3,
            worker_reward_per_round=3 * ETHER,
            validator_reward_per_round=ETHER,
            worker_deposit=ETHER,
            validator_stake=2 * ETHER,
            committee_size=EVERYONE,
            qualification_threshold=500_000,
            tolerance=10_000,
            target_accuracy=0,
            training_duration=DURATION,
            commit_duration=DURATION,
            reveal_duration=DURATION,
            reward_policy=RewardPolicy.CONTRIBUTION,
            top_k=0,
            slash_fraction_bps=5_000,
            max_workers=len(self.workers),
            max_validators=len(self.validators),
            min_workers=1,
            min_validators=1,
            recruit_deadline=dev.latest_timestamp(self.w3) + 10 * DURATION,
            max_samples_per_worker=MAX_SAMPLES,
        )
        return replace(base, **overrides)

    def create_task(self, **overrides: Any) -> str:
        task, _ = self.requester.create_task(self.params(**overrides))
        return task

    def started_task(
        self, n_workers: int | None = None, n_validators: int | None = None, **overrides: Any
    ) -> str:
        task = self.create_task(**overrides)
        for worker in self.workers[: n_workers if n_workers is not None else len(self.workers)]:
            worker.join_as_worker(task)
        for validator in self.validators[
            : n_validators if n_validators is not None else len(self.validators)
        ]:
            validator.join_as_validator(task)
        self.requester.start(task, "bafkreivalidationset")
        return task

    def member_counts(self, task: str) -> tuple[int, int]:
        """(workers, validators) of a started task (fixed once running, so cached)."""
        if task not in self._member_counts:
            workers, validators = self.requester.members(task)
            self._member_counts[task] = (len(workers), len(validators))
        return self._member_counts[task]

    def seed(self, task: str, round: int) -> bytes:
        """The round's sortition seed, as the Task stores it (fixed once the round started)."""
        if (task, round) not in self._seeds:
            self._seeds[(task, round)] = self.requester.round_info(task, round).seed
        return self._seeds[(task, round)]

    def ticket(self, validator: ChainClient, task: str, round: int) -> sortition.CommitteeTicket:
        """`validator`'s VRF evaluation for the round (proof and beta)."""
        key = self.vrf_keys[validator.address]
        return sortition.committee_proof(key, self.seed(task, round), round)

    def commit(self, validator: ChainClient, task: str, round: int, commitment: bytes) -> Receipt:
        """commitManifest with `validator`'s real VRF proof for the round."""
        proof = self.ticket(validator, task, round).proof
        return validator.commit_manifest(task, round, commitment, proof)

    def advance_to(self, timestamp: int) -> None:
        now = dev.latest_timestamp(self.w3)
        if timestamp > now:
            dev.advance_time(self.w3, timestamp - now)

    def accounted(self, task: str) -> int:
        """escrow + locked deposits + credited balances, summed address by address over every
        address that could hold any (independent of the contract's own totals)."""
        reader = self.requester
        total = reader.escrow(task)
        for client in self.everyone:
            total += reader.locked_deposit(task, client.address)
            total += reader.credited_balance(task, client.address)
        return total


def make_world(w3: Web3, n_workers: int = 4, n_validators: int = 4) -> World:
    def client(label: str) -> ChainClient:
        key = _deterministic_key(label)
        dev.fund(w3, Account.from_key(key).address, FUNDING)
        return ChainClient(w3, key)

    requester = client("requester")
    deployment = requester.deploy_registry()
    workers = [client(f"worker{i}") for i in range(n_workers)]
    validators = [client(f"validator{i}") for i in range(n_validators)]
    outsider = client("outsider")
    unregistered = client("unregistered")
    for member in [requester, *workers, *validators, outsider, unregistered]:
        member.registry_address = deployment.registry
    registered = [*workers, *validators, outsider]
    keys = honest_keys()
    if len(keys) <= len(registered):
        raise ValueError(f"{len(registered)} participants need more than {len(keys)} test VRF keys")
    vrf_keys: dict[str, VRFPrivateKey] = dict(
        zip((m.address for m in registered), keys, strict=False)
    )
    for member in registered:
        register(member, vrf_keys[member.address])
    harness = requester.deploy(
        "RewardMathHarness", libraries={"RewardMath": deployment.reward_math}
    )
    assert harness.contract_address is not None
    world = World(
        w3,
        deployment,
        requester,
        workers,
        validators,
        outsider,
        unregistered,
        harness.contract_address,
        vrf_keys,
        keys[len(registered) :],
    )
    world.snapshot_id = dev.snapshot(w3)
    return world


@dataclass(frozen=True)
class Vote:
    """What one committee member does in a round."""

    scores: tuple[int, ...] = ()
    verdicts: tuple[WorkerVerdict | bool, ...] = ()  # a bool is ACCEPT / REJECT
    accuracy: int = 0
    reveal: bool = True


@dataclass
class RoundPlay:
    """The outcome of play_round: the chain's result, gas per function, fees per sender."""

    result: RoundResult
    finalize: Receipt
    gas: dict[str, list[int]] = field(default_factory=dict)
    fees: dict[str, int] = field(default_factory=dict)  # wei paid for gas, per sender


def play_round(
    world: World,
    task: str,
    round: int,
    submitters: list[ChainClient],
    votes: list[tuple[ChainClient, Vote]],
    unseated: Sequence[ChainClient] = (),
) -> RoundPlay:
    """Submit, commit, reveal and finalize one round, jumping over a deadline whenever someone
    stays silent (otherwise the phase ended early). Views are read only when needed: every
    call costs a py-evm execution. Each of `unseated` (validators the sortition did not pick,
    or without stake) must fail to commit with its real VRF proof."""
    gas: dict[str, list[int]] = {}
    fees: dict[str, int] = {}

    def paid(sender: ChainClient, receipt: Receipt) -> None:
        gas.setdefault(receipt.function, []).append(receipt.gas_used)
        fees[sender.address] = fees.get(sender.address, 0) + receipt.fee_wei

    def finish_phase(still_open: Phase, deadline: str) -> None:
        info = world.requester.round_info(task, round)
        if info.phase == still_open:
            world.advance_to(getattr(info, deadline))

    n_workers, n_validators = world.member_counts(task)
    for index, worker in enumerate(submitters):
        cid = f"bafkrei-r{round}-w{index}"
        paid(worker, worker.submit_update(task, round, cid, SAMPLES_CLAIMED + index))
    if len(submitters) < n_workers:
        finish_phase(Phase.TRAINING, "training_end")
    workers = [w.address for w in submitters]  # submission order
    for validator in unseated:
        try:
            world.commit(validator, task, round, b"\x01" * 32)
        except ChainRevert as exc:
            assert exc.name in ("NotSelected", "NotCommitteeMember"), str(exc)
        else:
            raise AssertionError(f"{validator.address} was seated in round {round}")
    salts = {}
    for validator, vote in votes:
        salt = hashlib.sha256(f"salt {task} {round} {validator.address}".encode()).digest()
        salts[validator.address] = salt
        commitment = validator.manifest_commitment(
            task, round, workers, list(vote.scores), list(vote.verdicts), vote.accuracy, salt
        )
        paid(validator, world.commit(validator, task, round, commitment))
    if len(votes) < n_validators:
        finish_phase(Phase.COMMIT, "commit_end")
    for validator, vote in votes:
        if vote.reveal:
            receipt = validator.reveal_manifest(
                task, round, workers, list(vote.scores), list(vote.verdicts), vote.accuracy,
                salts[validator.address],
            )  # fmt: skip
            paid(validator, receipt)
    if not all(vote.reveal for _, vote in votes):
        finish_phase(Phase.REVEAL, "reveal_end")
    finalize = world.outsider.finalize_round(task, round)
    paid(world.outsider, finalize)
    return RoundPlay(
        result=world.requester.round_result(task, round, from_block=finalize.block_number),
        finalize=finalize,
        gas=gas,
        fees=fees,
    )


def policy_of(params: TaskParams) -> Policy:
    return Policy.for_task(
        worker_reward_per_round=params.worker_reward_per_round,
        validator_reward_per_round=params.validator_reward_per_round,
        worker_deposit=params.worker_deposit,
        slash_fraction_bps=params.slash_fraction_bps,
        tolerance=params.tolerance,
        reward_policy=params.reward_policy,
        top_k=params.top_k,
    )


def settle_on_chain(
    world: World,
    policy: Policy,
    deposits: Sequence[int],
    claims: Sequence[int],
    committee: Sequence[CommitteeMember],
) -> Settlement:
    """RewardMath.settle run by the deployed harness on these inputs, read back as the
    reference's Settlement so the two compare field by field."""
    out = world.requester.call(
        "RewardMathHarness",
        world.settlement_harness,
        "settle",
        (
            policy.worker_reward, policy.validator_reward, policy.worker_slash,
            policy.slash_fraction_bps, policy.tolerance, int(policy.reward_policy), policy.top_k,
        ),
        list(deposits),
        list(claims),
        [
            (m.revealed, list(m.scores), list(m.verdicts), m.global_accuracy, m.stake_left, m.own_stake)
            for m in committee
        ],
    )  # fmt: skip
    fields: list[Any] = [tuple(v) if isinstance(v, list | tuple) else v for v in out]
    return Settlement(*fields)
