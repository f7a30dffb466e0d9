"""`fl-node run` against anvil: a worker told to work on a task it cannot do
(an architecture it cannot reproduce, samples the model cannot take, a built-in dataset it
cannot fetch) exits with status 2 and one line naming the problem and the fix, having
joined nothing and deposited nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

from node.anvil import Anvil
from node.chain import ChainClient, dev
from node.chain.types import Role
from node.cli import main
from node.models import architecture_of
from tests.contracts.conftest import anvil_chain  # noqa: F401 - a fixture: anvil, or a skip
from tests.contracts.harness import FUNDING, World, make_world

pytestmark = pytest.mark.anvil

TABULAR = "tabular_mlp(features=6, classes=2)"
# A closed port on this host: every download through it is refused at once, as offline.
NO_NETWORK = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def world(anvil_chain: Anvil) -> World:  # noqa: F811 - the imported fixture
    return make_world(anvil_chain.web3(), n_workers=1, n_validators=1)


def run_worker(
    world: World, folder: Path, task: str, data: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    """`fl-node run` on a worker config for `task`: its exit status and stderr lines."""
    config = folder / "worker.toml"
    rpc_url = world.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    config.write_text(
        f'[node]\nrole = "worker"\ndata_dir = "data"\n'
        f'[chain]\nrpc_url = "{rpc_url}"\nprivate_key_file = "chain.key"\n'
        f'registry = "{world.deployment.registry}"\ntask = "{task}"\n'
        f"[data]\n{data}\n"
    )
    capsys.readouterr()
    status = main(["run", "--config", str(config)])
    return status, capsys.readouterr().err.splitlines()


def test_a_worker_stops_on_a_task_it_cannot_do_before_any_deposit(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, NO_NETWORK)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # the chain is reached directly
    key = os.urandom(32)
    address = Account.from_key(key).address
    dev.fund(world.w3, address, FUNDING)
    (tmp_path / "chain.key").write_text("0x" + key.hex())
    (tmp_path / "chain.key").chmod(0o600)
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.zeros((8, 6), np.float32), y=np.arange(8) % 2)
    (tmp_path / "empty").mkdir()
    worker = ChainClient(world.w3, key, registry=world.deployment.registry)

    ours = architecture_of(TABULAR).hash()
    other = architecture_of("tabular_mlp(features=6, classes=2, hidden=32)").hash()
    cases = [  # (task, [data], what the one line must name)
        (
            world.create_task(model_arch=TABULAR, model_spec_hash=other),
            f'source = "{rows}"',
            (f"0x{other.hex()}", f"0x{ours.hex()}", "install the model version"),
        ),
        (
            world.create_task(model_arch="mnist_2nn", model_spec_hash=architecture_of(
                "mnist_2nn").hash()),
            f'source = "{rows}"',
            (str(rows), "(6,)", "mnist_2nn", "point [data] source at"),
        ),
        (
            world.create_task(model_arch="mnist_cnn"),
            f'source = "kmnist"\nroot = "{tmp_path / "empty"}"',
            ("kmnist", "download failed", "train-images-idx3-ubyte.gz",
             "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
             "Put these files into one of", str(tmp_path / "empty")),
        ),
    ]
    for index, (task, data, named) in enumerate(cases):
        before = worker.balance()
        status, stderr = run_worker(world, tmp_path, task, data, capsys)
        tail = "\n".join(stderr[-30:])
        assert status == 2, tail
        reasons = [line for line in stderr if line.startswith("fl-node run:")]
        assert len(reasons) == 1, tail
        (reason,) = reasons
        assert f"task {task.lower()}" in reason.lower()
        for name in named:
            assert name in reason, (name, reason)
        assert worker.role_of(task) == Role.NONE
        assert worker.locked_deposit(task) == 0
        if index == 0:  # its first run registered it on the registry: that gas only
            (registration,) = sent_by(world, address)
            assert registration["to"] == world.deployment.registry
            assert before - worker.balance() == fee(world, registration["hash"])
        else:  # later runs send nothing at all
            assert worker.balance() == before
        assert len(sent_by(world, address)) == 1


def sent_by(world: World, address: str) -> list[dict[str, object]]:
    """Every transaction `address` sent (anvil mines one block per transaction)."""
    sent = []
    for number in range(world.w3.eth.block_number + 1):
        block = world.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if isinstance(tx, Mapping) and tx["from"] == address:
                sent.append(dict(tx))
    return sent


def fee(world: World, tx_hash: object) -> int:
    receipt = world.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
