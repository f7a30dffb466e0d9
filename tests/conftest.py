"""What tests in several packages share: the local MNIST copy (tests never download it),
the mark that skips a test without it, and a whole in-process task on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from node.datasets import default_data_root, mnist_available

if TYPE_CHECKING:
    from node.localnet.inprocess import InProcessResult

MNIST_ROOT = default_data_root()  # $FL_NODE_DATA_ROOT, else ../shared/datasets/mnist


def needs_mnist(split: Literal["train", "test"] = "train") -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not mnist_available(MNIST_ROOT, split),
        reason=f"MNIST not found under {MNIST_ROOT} (set FL_NODE_DATA_ROOT)",
    )


async def run_mnist_task(workdir: Path, **options: Any) -> InProcessResult:
    """node.localnet.inprocess.run_inprocess on MNIST_ROOT's copy: a task from creation to
    termination in this process (embedded chain, real libp2p hosts on 127.0.0.1)."""
    from node.localnet.inprocess import run_inprocess  # only the tests that run one pay for it

    return await run_inprocess(workdir, MNIST_ROOT, **options)
