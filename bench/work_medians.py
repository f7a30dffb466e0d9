"""What the WORK policy's agreement scores cost a validator: `protocol.work`'s leave-one-out
medians from one sort of a round's deltas, against a median computed for each update on its
own (the definition), in the same process on the same deltas; both must give the same
scores.

    python -m bench.work_medians [--updates 5,10,20] [--parameters 1663370] [--repeats 3]
                                 [--threads 1]

The deltas are random (the cost does not depend on their values); 1,663,370 numbers is
mnist_cnn. Prints CPU seconds (process time, median of --repeats) per round and the ratio
one-at-a-time / one sort.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch

from protocol import work


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.work_medians")
    parser.add_argument("--updates", default="5,10,20", help="deltas in a round, comma-separated")
    parser.add_argument("--parameters", type=int, default=1_663_370)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def one_at_a_time(deltas: Mapping[int, torch.Tensor], references: Sequence[int]) -> dict[int, int]:
    """The scores by their definition: each update against the median of the others (0
    when it is alone)."""
    scores = {}
    for i in references:
        others = [deltas[j] for j in references if j != i]
        scores[i] = work.sign_agreement(deltas[i], work.coordinate_median(others)) if others else 0
    return scores


def cpu_seconds(run: Callable[[], dict[int, int]], repeats: int) -> tuple[float, dict[int, int]]:
    costs, result = [], {}
    for _ in range(repeats):
        start = time.process_time()
        result = run()
        costs.append(time.process_time() - start)
    return statistics.median(costs), result


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'updates':>7} {'one at a time s':>16} {'one sort s':>11} {'ratio':>7}  same scores")
    for count in (int(n) for n in args.updates.split(",")):
        generator = torch.Generator().manual_seed(count)
        deltas = {i: torch.randn(args.parameters, generator=generator) for i in range(count)}
        references = list(deltas)
        slow, expected = cpu_seconds(partial(one_at_a_time, deltas, references), args.repeats)
        fast, got = cpu_seconds(
            partial(work._qualities, deltas, references, references), args.repeats
        )
        print(f"{count:>7} {slow:>16.3f} {fast:>11.3f} {slow / fast:>6.1f}x  {got == expected}")


if __name__ == "__main__":
    main()
