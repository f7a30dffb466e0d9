"""Block fetch latency from a node that is training, against the same node idle, measured
in the same run.

    python -m bench.fetch_under_training [--size-mb 2] [--repeat 5] [--samples 3000]

A provider process (this module with ``--serve``) publishes blobs in its block store and,
when told, trains mnist_cnn on real MNIST (``FL_NODE_DATA_ROOT``) in a thread of its own
process, as a worker's training job does, over and over until told to stop. This process
fetches a fresh blob through one long-lived ``BlockExchange`` while the provider is idle,
then while it trains, and prints the median fetch time of each with their ratio: whether
a training thread starves the serving node's trio loop (of the GIL or of CPU). Numbers
swing with machine load; compare the ratio, which comes from the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

MB = 1_000_000


# --- the provider process -------------------------------------------------------------------


def _train_until(stop: threading.Event, samples: int, steps: list[int]) -> None:
    import torch

    from node.datasets import default_data_root, load_mnist
    from protocol.data import to_tensors
    from protocol.models import build_model
    from protocol.training import TrainConfig, train_local

    data = load_mnist(default_data_root(), "train")
    images, labels = to_tensors(data)
    images, labels = images[:samples], labels[:samples]
    torch.set_num_threads(1)

    def count(_: Any) -> None:
        steps[0] += 1
        if stop.is_set():
            raise InterruptedError

    while not stop.is_set():
        model = build_model("mnist_cnn", seed=1)
        try:
            train_local(model, images, labels, TrainConfig(epochs=1, batch_size=32, lr=0.02,
                                                           momentum=0.9), count)
        except InterruptedError:
            return


async def serve(workdir: Path, size_mb: int, blobs: int, samples: int) -> None:
    from node.blocks import BlockExchange, BlockStore
    from node.host import HostConfig, host_multiaddrs, open_host

    async with open_host(HostConfig(workdir / "provider.key")) as host:
        store = BlockStore(workdir / "provider" / "blocks", max_bytes=2 * blobs * size_mb * MB)
        exchange = BlockExchange(host, store)
        exchange.start()
        # random bytes: equal chunks would be one block, fetched once
        roots = [await exchange.publish(random.Random(i).randbytes(size_mb * MB))
                 for i in range(blobs)]
        print(json.dumps({"addr": host_multiaddrs(host)[0], "roots": roots,
                          "switch_interval": sys.getswitchinterval()}), flush=True)
        stop = threading.Event()
        steps = [0]
        trainer: threading.Thread | None = None
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            command = line.strip()
            if command == "train":
                stop.clear()
                trainer = threading.Thread(target=_train_until, args=(stop, samples, steps))
                trainer.start()
                while steps[0] == 0:  # the data is loaded and the first step ran
                    await trio.sleep(0.05)
                print(json.dumps({"training": True}), flush=True)
            elif command == "idle" and trainer is not None:
                stop.set()
                await trio.to_thread.run_sync(trainer.join)
                print(json.dumps({"steps": steps[0]}), flush=True)
            else:
                break
        stop.set()  # the parent is gone: never train on alone
        store.close()


# --- the measuring process ------------------------------------------------------------------


async def measure(provider: subprocess.Popen[str], info: dict[str, Any], size_mb: int,
                  repeat: int, workdir: Path) -> dict[str, float]:
    from node.blocks import BlockExchange, BlockStore
    from node.host import HostConfig, open_host

    assert provider.stdin is not None and provider.stdout is not None
    roots = iter(info["roots"])

    def tell(command: str) -> dict[str, Any]:
        assert provider.stdin is not None and provider.stdout is not None
        provider.stdin.write(command + "\n")
        provider.stdin.flush()
        return dict(json.loads(provider.stdout.readline()))

    async with open_host(HostConfig(workdir / f"fetcher-{info['switch_interval']}.key")) as host:
        store = BlockStore(workdir / f"fetched-{info['switch_interval']}",
                           max_bytes=2 * len(info["roots"]) * size_mb * MB)
        exchange = BlockExchange(host, store)
        exchange.start()

        async def fetch_times() -> list[float]:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                await exchange.fetch(next(roots), size_mb * MB, providers=[info["addr"]],
                                     timeout_s=600)
                times.append(time.perf_counter() - start)
            return times

        await fetch_times()  # first contact: opens the pooled streams
        idle = await fetch_times()
        await trio.to_thread.run_sync(tell, "train")
        training = await fetch_times()
        steps = await trio.to_thread.run_sync(tell, "idle")
        await exchange.close_idle_streams()
        store.close()
    return {"idle": statistics.median(idle), "training": statistics.median(training),
            "steps": float(steps["steps"]), "switch_interval": info["switch_interval"]}


def run_once(size_mb: int, repeat: int, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp:
        command = [sys.executable, "-m", "bench.fetch_under_training", "--serve", tmp,
                   "--size-mb", str(size_mb), "--repeat", str(repeat), "--samples", str(samples)]
        provider = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
        try:
            assert provider.stdout is not None
            info = json.loads(provider.stdout.readline())
            return trio.run(measure, provider, info, size_mb, repeat, Path(tmp))
        finally:
            if provider.stdin is not None:
                provider.stdin.close()
            try:
                provider.wait(timeout=60)
            except subprocess.TimeoutExpired:
                provider.kill()
                raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=2, help="blob size in MB")
    parser.add_argument("--repeat", type=int, default=5, help="fetches per condition")
    parser.add_argument("--samples", type=int, default=3000, help="MNIST samples trained on")
    parser.add_argument("--serve", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size_mb < 1 or args.repeat < 1 or args.samples < 32:
        parser.error("--size-mb and --repeat need at least 1, --samples at least 32")
    from node.host import configure_libp2p_logging

    configure_libp2p_logging()
    if args.serve:
        blobs = 3 * args.repeat  # first contact, idle, training
        trio.run(serve, Path(args.serve), args.size_mb, blobs, args.samples)
        return
    row = run_once(args.size_mb, args.repeat, args.samples)
    print(f"fetch {args.size_mb} MB from a node: idle {row['idle']:.3f} s, while it trains "
          f"{row['training']:.3f} s; training/idle {row['training'] / row['idle']:.2f} "
          f"({row['steps']:.0f} training steps ran; GIL switch interval "
          f"{row['switch_interval'] * 1000:.1f} ms)", flush=True)

if __name__ == "__main__":
    main()
