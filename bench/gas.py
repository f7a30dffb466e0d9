"""Gas per contract function and per round, from real runs on the embedded chain.

    python -m bench.gas [--workers 8,32,128,256] [--committees 3,7] [--rounds 1]
                        [--policy contribution|topk|work] [--workers-per-round K]

Each configuration deploys nothing new: one registry, fresh tasks, honest parties (every
phase ends early), the --policy's rewards (contribution by default). Gas is what the
receipts say; the ratio columns are against a plain ether transfer measured in the same run
(21,000 gas on any EVM). The run ends with the largest single transaction it saw and exits
1 if that is over 15,000,000 gas (half a mainnet block): at 256 workers (Registry.MAX_MEMBERS)
and a committee of 7 no call of a round may need more.

Every participant registers a fresh 2048-bit VRF key with its certificate (register includes
VRF.verifyKeyCertificate), and every committee member commits with its real VRF proof for the
round (commitManifest includes the proof check and the seat check, through the linked VRF
library). The committee size tau equals the validator count, so with equal stakes everyone is
seated (threshold min(1, tau * w / W) = 1) and the commit phase ends early.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field

from eth_account import Account

from node.chain import ChainClient, TaskParams, dev
from protocol import keycert, sortition, vrf
from protocol.rewards import RewardPolicy

ETHER = 10**18
# Half a mainnet block (30M): no single transaction of a round may need more, so a round
# still fits beside other traffic.
TX_GAS_LIMIT = 15_000_000


def _participant(w3: object, label: str) -> ChainClient:
    key = hashlib.sha256(f"fl-node gas bench {label}".encode()).digest()  # bench keys only
    dev.fund(w3, Account.from_key(key).address, 50 * ETHER)  # type: ignore[arg-type]
    return ChainClient(w3, key)  # type: ignore[arg-type]


def _params(
    now: int,
    n_workers: int,
    n_validators: int,
    rounds: int,
    policy: RewardPolicy,
    workers_per_round: int = 0,
) -> TaskParams:
    return TaskParams(
        model_arch="mnist-cnn",
        aggregator="fedavg",
        initial_model_cid="bafkreiinitialmodel",
        rounds=rounds,
        worker_reward_per_round=ETHER,
        validator_reward_per_round=ETHER // 10,
        worker_deposit=ETHER // 10,
        validator_stake=ETHER // 5,
        committee_size=n_validators,
        qualification_threshold=500_000,
        tolerance=1_000,
        target_accuracy=0,
        training_duration=3_600,
        commit_duration=3_600,
        reveal_duration=3_600,
        reward_policy=policy,
        top_k=n_workers,
        slash_fraction_bps=1_000,
        max_workers=n_workers,
        max_validators=n_validators,
        min_workers=n_workers,
        min_validators=n_validators,
        recruit_deadline=now + 3_600,
        max_samples_per_worker=60_000,
        workers_per_round=workers_per_round,
    )


@dataclass
class RoundGas:
    """Gas of one configuration's calls: lists hold one entry per transaction."""

    workers: int
    committee: int
    join: list[int] = field(default_factory=list)
    start: int = 0
    submit: list[int] = field(default_factory=list)
    commit: list[int] = field(default_factory=list)
    reveal: list[int] = field(default_factory=list)
    finalize: list[int] = field(default_factory=list)
    withdraw: list[int] = field(default_factory=list)
    drawn: list[int] = field(default_factory=list)  # workers drawn per round (all when k = 0)
    rounds: int = 0

    def calls(self) -> list[int]:
        return [
            *self.join, self.start, *self.submit, *self.commit, *self.reveal,
            *self.finalize, *self.withdraw,
        ]  # fmt: skip

    def per_round(self) -> int:
        per_round_calls = [*self.submit, *self.commit, *self.reveal, *self.finalize]
        return sum(per_round_calls) // max(self.rounds, 1)


def run(
    worker_counts: list[int],
    committee_sizes: list[int],
    rounds: int,
    policy: RewardPolicy = RewardPolicy.CONTRIBUTION,
    workers_per_round: int = 0,
) -> bool:
    """Measure and print; False when some transaction went over TX_GAS_LIMIT."""
    w3 = dev.embedded_web3()
    requester = _participant(w3, "requester")
    deployment = requester.deploy_registry()
    transfer = requester.send_value(requester.address, 1).gas_used
    pool_w = [_participant(w3, f"worker{i}") for i in range(max(worker_counts))]
    pool_v = [_participant(w3, f"validator{i}") for i in range(max(committee_sizes))]
    gas: dict[str, list[int]] = defaultdict(list)
    for receipt in deployment.receipts:
        gas[receipt.function].append(receipt.gas_used)
    vrf_keys = {}
    for client in [*pool_w, *pool_v]:
        client.registry_address = deployment.registry
        key = vrf_keys[client.address] = vrf.generate_private_key()
        receipt = client.register(
            b"\x00\x24" + hashlib.sha256(client.address.encode()).digest(),
            hashlib.sha256(b"x25519" + client.address.encode()).digest(),
            key.public_key.modulus_bytes(),
            keycert.certify(key, bytes.fromhex(client.address[2:])),
        )
        gas["register (VRF key certificate)"].append(receipt.gas_used)

    configurations: list[RoundGas] = []
    for n_workers in worker_counts:
        for n_validators in committee_sizes:
            measured = RoundGas(n_workers, n_validators, rounds=rounds)
            configurations.append(measured)
            workers, validators = pool_w[:n_workers], pool_v[:n_validators]
            params = _params(
                dev.latest_timestamp(w3), n_workers, n_validators, rounds, policy,
                min(workers_per_round, n_workers),
            )  # fmt: skip
            task, created = requester.create_task(params)
            gas["createTask"].append(created.gas_used)
            for worker in workers:
                measured.join.append(worker.join_as_worker(task, params.worker_deposit).gas_used)
            for validator in validators:
                measured.join.append(
                    validator.join_as_validator(task, params.validator_stake).gas_used
                )
            measured.start = requester.start(task, "bafkreivalidationset").gas_used
            for round in range(1, rounds + 1):
                seed = requester.round_info(task, round).seed
                drawn = [
                    w for w in workers
                    if sortition.worker_selected(
                        seed, bytes.fromhex(w.address[2:]), params.workers_per_round, n_workers
                    )
                ]  # fmt: skip
                measured.submit += [
                    w.submit_update(task, round, f"bafkrei-{round}-{i}", 600 + i).gas_used
                    for i, w in enumerate(drawn)
                ]
                measured.drawn.append(len(drawn))
                addresses: list[str] = [w.address for w in drawn]
                scores = [10_000 * (i + 1) for i in range(len(drawn))]
                accepts = [True] * len(drawn)
                salts = {}
                for validator in validators:
                    salt = hashlib.sha256(f"{task}{round}{validator.address}".encode()).digest()
                    salts[validator.address] = salt
                    commitment = validator.manifest_commitment(
                        task, round, addresses, scores, accepts, 900_000, salt
                    )
                    ticket = sortition.committee_proof(vrf_keys[validator.address], seed, round)
                    measured.commit.append(
                        validator.commit_manifest(task, round, commitment, ticket.proof).gas_used
                    )
                for validator in validators:  # every member committed: the reveal phase is open
                    measured.reveal.append(
                        validator.reveal_manifest(
                            task, round, addresses, scores, accepts, 900_000,
                            salts[validator.address],
                        ).gas_used
                    )  # fmt: skip
                measured.finalize.append(requester.finalize_round(task, round).gas_used)
            for member in [*workers, *validators]:
                measured.withdraw.append(member.withdraw(task).gas_used)
            escrow = requester.escrow(task)
            if escrow:
                gas["reclaimEscrow"].append(requester.reclaim_escrow(task, escrow).gas_used)
            gas["joinAsWorker / joinAsValidator"] += measured.join
            gas["start"].append(measured.start)
            gas["submitUpdate"] += measured.submit
            gas["commitManifest (VRF proof + seat)"] += measured.commit
            gas[f"revealManifest ({n_workers} workers)"] += measured.reveal
            gas[f"finalizeRound ({n_workers}x{n_validators})"] += measured.finalize
            gas["withdraw"] += measured.withdraw

    # The two early-exit paths, once each.
    task, _ = requester.create_task(_params(dev.latest_timestamp(w3), 1, 1, 1, policy))
    gas["joinAsWorker / joinAsValidator"].append(pool_w[0].join_as_worker(task).gas_used)
    gas["leaveTask"].append(pool_w[0].leave_task(task).gas_used)
    gas["cancel"].append(requester.cancel(task).gas_used)
    task, _ = requester.create_task(_params(dev.latest_timestamp(w3), 1, 1, 1, policy))
    pool_w[0].join_as_worker(task)
    pool_v[0].join_as_validator(task)
    requester.start(task, "bafkreivalidationset")
    gas["stopTraining"].append(requester.stop_training(task).gas_used)

    print(f"baseline: plain ether transfer = {transfer} gas (ratio = gas / baseline)\n")
    print(f"{'function':<34}{'n':>5}{'min':>11}{'median':>11}{'max':>11}{'ratio':>8}")
    for name in sorted(gas):
        values = gas[name]
        median = int(statistics.median(values))
        print(
            f"{name:<34}{len(values):>5}{min(values):>11,}{median:>11,}{max(values):>11,}"
            f"{median / transfer:>8.1f}"
        )
    print(
        f"\nper configuration ({policy.name.lower()} policy, {rounds} round(s), honest parties, "
        f"workers per round {workers_per_round or 'all'}; max over the calls of each kind; "
        "drawn = workers drawn per round; round = submits + commits + reveals + finalize)"
    )
    header = ("workers", "committee", "drawn", "join", "start", "submit", "commit", "reveal",
              "finalize", "withdraw", "round", "round/base", "largest tx")  # fmt: skip
    print("".join(f"{h:>11}" for h in header))
    largest = 0
    for c in configurations:
        biggest = max(c.calls())
        largest = max(largest, biggest)
        row = (c.workers, c.committee, max(c.drawn), max(c.join), c.start,
               max(c.submit, default=0), max(c.commit), max(c.reveal), max(c.finalize),
               max(c.withdraw), c.per_round())  # fmt: skip
        print(
            "".join(f"{v:>11,}" for v in row)
            + f"{c.per_round() / transfer:>11.1f}{biggest:>11,}"
        )
    verdict = "within" if largest <= TX_GAS_LIMIT else "OVER"
    print(f"\nlargest single transaction: {largest:,} gas, {verdict} the {TX_GAS_LIMIT:,} limit")
    return largest <= TX_GAS_LIMIT


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers", type=_ints, default=[8, 32, 128, 256], help="worker counts, e.g. 8,32"
    )
    parser.add_argument("--committees", type=_ints, default=[3, 7], help="committee sizes")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per configuration")
    parser.add_argument(
        "--policy", choices=[p.name.lower() for p in RewardPolicy], default="contribution",
        help="the tasks' reward policy",
    )
    parser.add_argument(
        "--workers-per-round", type=int, default=0,
        help="partial participation: workers drawn per round (0: all; capped at the task's)",
    )
    args = parser.parse_args()
    within = run(
        args.workers, args.committees, args.rounds, RewardPolicy[args.policy.upper()],
        args.workers_per_round,
    )  # fmt: skip
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    main()
