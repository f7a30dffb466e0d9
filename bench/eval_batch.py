"""What a validator's evaluation pass costs with `protocol.training.EVALUATION_BATCH`
samples a forward pass against one batch of 1,000, in the same process on the same model
and data, and that both give the same accuracy (the loss, summed over other batches, differs
in its last bits).

    python -m bench.eval_batch [--model mnist_cnn] [--validation 1000] [--repeats 5]
                               [--threads 1] [--data-root DIR]

Real MNIST when --data-root has it, else random images of its shape (the cost is the same).
Prints CPU seconds (process time, median of --repeats) and the ratio 1,000 / library.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from node.datasets import default_data_root, load_mnist, mnist_available
from node.models import build_model
from protocol.data import to_tensors
from protocol.training import EVALUATION_BATCH, Metrics, evaluate

ONE_BATCH = 1000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_batch")
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if mnist_available(args.data_root, "test"):
        images, labels = to_tensors(load_mnist(args.data_root, "test").subset(range(args.validation)))
    else:
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.validation, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (args.validation,), generator=generator)
    model = build_model(args.model, seed=0)
    spent: dict[int, list[float]] = {ONE_BATCH: [], EVALUATION_BATCH: []}
    metrics: dict[int, Metrics] = {}
    for _ in range(args.repeats):  # interleaved, so drifting load hits both alike
        for batch in spent:
            start = time.process_time()
            metrics[batch] = evaluate(model, images, labels, batch_size=batch)
            spent[batch].append(time.process_time() - start)
    slow, fast = (statistics.median(spent[b]) for b in (ONE_BATCH, EVALUATION_BATCH))
    print(
        f"{args.model}, {args.validation} validation samples, {args.threads} thread(s), "
        f"median of {args.repeats}: batches of {ONE_BATCH} {slow:.3f} CPU s a pass, of "
        f"{EVALUATION_BATCH} {fast:.3f} CPU s: {slow / fast:.2f}x"
    )
    old, new = metrics[ONE_BATCH], metrics[EVALUATION_BATCH]
    print(f"accuracy {old.accuracy} / {new.accuracy}, loss {old.loss!r} / {new.loss!r}")
    return 0 if old.accuracy == new.accuracy else 1


if __name__ == "__main__":
    raise SystemExit(main())
