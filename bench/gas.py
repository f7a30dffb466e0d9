"""Gas per contract function and per round, from real runs on the embedded chain.

    python -m bench.gas [--workers 1,4,8] [--committees 1,3,5] [--rounds 2]
                        [--policy contribution|topk|work]

Each configuration deploys nothing new: one registry, fresh tasks, honest parties (every
phase ends early), the --policy's rewards (contribution by default). Gas is what the receipts say; the ratio column is
against a plain ether transfer measured in the same run (21,000 gas on any EVM).

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
from collections import defaultdict

from eth_account import Account

from node.chain import ChainClient, TaskParams, dev
from protocol import keycert, sortition, vrf
from protocol.rewards import RewardPolicy

ETHER = 10**18


def _participant(w3: object, label: str) -> ChainClient:
    key = hashlib.sha256(f"fl-node gas bench {label}".encode()).digest()  # bench keys only
    dev.fund(w3, Account.from_key(key).address, 50 * ETHER)  # type: ignore[arg-type]
    return ChainClient(w3, key)  # type: ignore[arg-type]


def _params(
    now: int, n_workers: int, n_validators: int, rounds: int, policy: RewardPolicy
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
    )


def run(
    worker_counts: list[int],
    committee_sizes: list[int],
    rounds: int,
    policy: RewardPolicy = RewardPolicy.CONTRIBUTION,
) -> None:
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

    per_round: list[tuple[int, int, int, int, int, int]] = []
    for n_workers in worker_counts:
        for n_validators in committee_sizes:
            workers, validators = pool_w[:n_workers], pool_v[:n_validators]
            params = _params(dev.latest_timestamp(w3), n_workers, n_validators, rounds, policy)
            task, created = requester.create_task(params)
            gas["createTask"].append(created.gas_used)
            for worker in workers:
                gas["joinAsWorker"].append(
                    worker.join_as_worker(task, params.worker_deposit).gas_used
                )
            for validator in validators:
                gas["joinAsValidator"].append(
                    validator.join_as_validator(task, params.validator_stake).gas_used
                )
            gas["start"].append(requester.start(task, "bafkreivalidationset").gas_used)
            for round in range(1, rounds + 1):
                seed = requester.round_info(task, round).seed
                submit = [
                    w.submit_update(task, round, f"bafkrei-{round}-{i}", 600 + i).gas_used
                    for i, w in enumerate(workers)
                ]
                addresses = [w.address for w in workers]
                scores = [10_000 * (i + 1) for i in range(n_workers)]
                accepts = [True] * n_workers
                commit, reveal = [], []
                salts = {}
                for validator in validators:
                    salt = hashlib.sha256(f"{task}{round}{validator.address}".encode()).digest()
                    salts[validator.address] = salt
                    commitment = validator.manifest_commitment(
                        task, round, addresses, scores, accepts, 900_000, salt
                    )
                    ticket = sortition.committee_proof(vrf_keys[validator.address], seed, round)
                    commit.append(
                        validator.commit_manifest(task, round, commitment, ticket.proof).gas_used
                    )
                for validator in validators:  # every member committed: the reveal phase is open
                    reveal.append(
                        validator.reveal_manifest(
                            task,
                            round,
                            addresses,
                            scores,
                            accepts,
                            900_000,
                            salts[validator.address],
                        ).gas_used
                    )
                finalize = requester.finalize_round(task, round).gas_used
                gas["submitUpdate"] += submit
                gas["commitManifest (VRF proof + seat)"] += commit
                gas[f"revealManifest ({n_workers} workers)"] += reveal
                gas[f"finalizeRound ({n_workers}x{n_validators})"].append(finalize)
                total = sum(submit) + sum(commit) + sum(reveal) + finalize
                per_round.append(
                    (n_workers, n_validators, total, int(statistics.mean(submit)),
                     int(statistics.mean(commit)) + int(statistics.mean(reveal)), finalize)
                )  # fmt: skip
            for client in [*workers, *validators]:
                gas["withdraw"].append(client.withdraw(task).gas_used)
            escrow = requester.escrow(task)
            if escrow:
                gas["reclaimEscrow"].append(requester.reclaim_escrow(task, escrow).gas_used)

    # The two early-exit paths, once each.
    task, _ = requester.create_task(_params(dev.latest_timestamp(w3), 1, 1, 1, policy))
    gas["joinAsWorker"].append(pool_w[0].join_as_worker(task).gas_used)
    gas["leaveTask"].append(pool_w[0].leave_task(task).gas_used)
    gas["cancel"].append(requester.cancel(task).gas_used)
    task, _ = requester.create_task(_params(dev.latest_timestamp(w3), 1, 1, 1, policy))
    pool_w[0].join_as_worker(task)
    pool_v[0].join_as_validator(task)
    requester.start(task, "bafkreivalidationset")
    gas["stopTraining"].append(requester.stop_training(task).gas_used)

    print(f"baseline: plain ether transfer = {transfer} gas (ratio = gas / baseline)\n")
    print(f"{'function':<34}{'n':>4}{'min':>11}{'median':>11}{'max':>11}{'ratio':>8}")
    for name in sorted(gas):
        values = gas[name]
        median = int(statistics.median(values))
        print(
            f"{name:<34}{len(values):>4}{min(values):>11,}{median:>11,}{max(values):>11,}"
            f"{median / transfer:>8.1f}"
        )
    print(f"\nper round (honest parties, {rounds} rounds per configuration, all rounds listed)")
    print(
        f"{'workers':>8}{'committee':>10}{'round total':>13}{'per worker':>12}"
        f"{'per member':>12}{'finalize':>11}{'total/base':>12}"
    )
    for n_workers, n_validators, total, worker, member, finalize in per_round:
        print(
            f"{n_workers:>8}{n_validators:>10}{total:>13,}{worker:>12,}{member:>12,}"
            f"{finalize:>11,}{total / transfer:>12.1f}"
        )


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers", type=_ints, default=[1, 4, 8], help="worker counts, e.g. 1,4,8"
    )
    parser.add_argument("--committees", type=_ints, default=[1, 3, 5], help="committee sizes")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per configuration")
    parser.add_argument(
        "--policy", choices=[p.name.lower() for p in RewardPolicy], default="contribution",
        help="the tasks' reward policy",
    )
    args = parser.parse_args()
    run(args.workers, args.committees, args.rounds, RewardPolicy[args.policy.upper()])


if __name__ == "__main__":
    main()
