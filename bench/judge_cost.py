"""One validator's evaluation of a round, the runtime's way (`learning.evaluate_round`)
against the plain computation of the same verdict (every update measured; leave-one-out,
whose reference is the aggregate of all qualified updates; that aggregate measured once
more for the global accuracy), on the same sealed updates of mnist_cnn and 1,000 real MNIST
validation samples, one torch thread as a validator runs. Both must reveal the same scores,
accepts and accuracies (checked); the ratio is plain / runtime CPU seconds. Last, the
runtime's way again once `learning.keep_freed_memory` has kept glibc from unmapping and
refaulting the forward passes' large blocks.

    FL_NODE_DATA_ROOT=/work/shared/datasets/mnist python -m bench.judge_cost [--updates 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from node.blocks import BlockStore, build_file_dag
from node.datasets import default_data_root, load_mnist
from node.runtime import learning
from protocol import verdict as verdicts
from protocol.codec import encode_state_dict
from protocol.contribution import leave_one_out
from protocol.data import Dataset, to_tensors
from protocol.envelope import generate_keypair, public_key_of
from protocol.models import build_model
from protocol.state.records import Update
from protocol.training import TrainConfig, evaluate, train_local

THRESHOLD = 500_000  # 0.5: every honest update qualifies, so leave-one-out runs on all
Outcome = tuple[tuple[int, ...], tuple[bool, ...], int, tuple[float | None, ...]]


def plain_verdict(
    book: learning.ModelBook,
    updates: list[Update],
    base: learning.StateDict,
    validation: Dataset,
) -> Outcome:
    images, labels = to_tensors(validation)
    workers = [u.worker for u in updates]
    states = [book.update(u.cid) for u in updates]
    accuracies: list[float | None] = [
        evaluate(book.module(s), images, labels).accuracy for s in states
    ]
    chosen = verdicts.qualified_indices(accuracies, THRESHOLD)
    kept = [states[i] for i in chosen]
    counts = [updates[i].n_samples for i in chosen]
    contributions = leave_one_out(
        kept, counts, lambda s: evaluate(book.module(dict(s)), images, labels).loss,
        book.rule, baseline=base,
    )  # fmt: skip
    whole = evaluate(book.module(book.rule(kept, counts)), images, labels).accuracy
    verdict = verdicts.verdict(workers, accuracies, THRESHOLD, contributions, whole)
    return verdict.scores, verdict.accepts, verdict.global_accuracy, tuple(accuracies)


def runtime_verdict(
    book: learning.ModelBook,
    updates: list[Update],
    base: learning.StateDict,
    validation: Dataset,
) -> Outcome:
    workers = [u.worker for u in updates]
    result = learning.evaluate_round(book, workers, updates, base, validation, THRESHOLD)
    return result.scores, result.accepts, result.global_accuracy, result.accuracies


def cpu_seconds(judge: Callable[[], Outcome], repeats: int) -> tuple[float, Outcome]:
    """The least CPU time of `repeats` runs (the first also pays for lazy initialisation)."""
    best, outcome = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        with torch.no_grad():
            outcome = judge()
        best = min(best, time.process_time() - start)
    assert outcome is not None
    return best, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    test = load_mnist(default_data_root(), "test")
    torch.manual_seed(0)
    net = build_model("mnist_cnn", seed=0)
    torch.set_num_threads(1)
    train_local(
        net, *to_tensors(Dataset(test.images[:2000], test.labels[:2000])),
        TrainConfig(epochs=1, batch_size=32, lr=0.02, momentum=0.9, prox_mu=0.0, seed=0),
    )  # fmt: skip
    base = net.state_dict()
    validation = Dataset(test.images[5000:6000], test.labels[5000:6000])
    private, _ = generate_keypair()
    with tempfile.TemporaryDirectory(prefix="judge-cost-") as folder:
        book = learning.ModelBook(
            "mnist_cnn", BlockStore(Path(folder) / "blocks"), learning.TaskCrypto(private, b"\x42" * 20)
        )
        updates = []
        for index in range(args.updates):  # honest: the base and a little noise of its own
            state = {
                name: t + 0.01 * t.std() * torch.randn_like(t) if t.is_floating_point() else t
                for name, t in base.items()
            }
            sealed = book.crypto.seal(encode_state_dict(state), [public_key_of(private)])
            root, blocks = build_file_dag(sealed)
            for block in blocks:
                book.store.put(block.cid, block.data)
            updates.append(Update(bytes([index + 1]) * 20, root, 1000 + index))
        plain, expected = cpu_seconds(lambda: plain_verdict(book, updates, base, validation), args.repeats)
        runtime, got = cpu_seconds(lambda: runtime_verdict(book, updates, base, validation), args.repeats)
        # last: it changes this process's malloc for good
        kept = learning.keep_freed_memory()
        reused, again = cpu_seconds(lambda: runtime_verdict(book, updates, base, validation), args.repeats)
    if got != expected or again != expected:
        print(f"MISMATCH: plain {expected}, evaluate_round {got}, with freed memory kept {again}")
        return 1
    print(f"scores {got[0]}, accepts {got[1]}: identical in all three")
    print(f"plain verdict {plain:.2f} CPU s; evaluate_round {runtime:.2f} CPU s; "
          f"ratio plain/runtime {plain / runtime:.2f}x ({args.updates} updates, 1000 samples, 1 thread)")
    print(f"evaluate_round after keep_freed_memory() ({'applied' if kept else 'no glibc: unchanged'}): "
          f"{reused:.2f} CPU s; ratio plain/that {plain / reused:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
