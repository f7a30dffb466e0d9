"""Parts of the in-process localnet that let a hundred nodes share one process: the
embedded chain builds each mined block and receipt once and runs each view call once a block, the chain polls thin out as nodes
are added, and the workers share one read of the training split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

from node.chain import ChainClient, dev
from node.datasets import default_data_root, load_worker_shard, mnist_available
from node.datasets.builtin import load_builtin, shared_loads
from node.localnet.inprocess import (
    VIEW_CONTRACTS,
    _build_mined_reads_once,
    _seeded_key,
    poll_interval,
)
from tests.contracts.harness import register
from tests.vrf_test_keys import honest_keys

REPO = Path(__file__).resolve().parents[2]


def test_mined_blocks_and_receipts_are_built_once_and_read_alike() -> None:
    w3 = dev.embedded_web3()
    tester = dev.embedded_tester(w3)
    assert tester is not None
    built = {"receipts": 0, "blocks": 0}
    backend_receipt, backend_block = tester.get_transaction_receipt, tester.get_block_by_number

    def counting_receipt(tx: object) -> object:
        built["receipts"] += 1
        return backend_receipt(tx)

    def counting_block(number: object = "latest", full: bool = False) -> object:
        built["blocks"] += 1
        return backend_block(number, full)

    tester.get_transaction_receipt = counting_receipt
    tester.get_block_by_number = counting_block
    _build_mined_reads_once(w3)
    for _ in range(3):
        dev.fund(w3, Account.create().address, 10**18)
    head = w3.eth.block_number
    first = w3.eth.get_logs({"fromBlock": 0, "toBlock": head})
    receipts, blocks = built["receipts"], built["blocks"]
    assert receipts >= 3 and blocks >= 3  # the first read built them
    for _ in range(5):  # every node of the process polling the same blocks
        assert w3.eth.get_logs({"fromBlock": 0, "toBlock": head}) == first
    assert (built["receipts"], built["blocks"]) == (receipts, blocks)
    # the latest block is read afresh: a new block shows at once
    dev.mine(w3)
    assert w3.eth.get_block("latest")["number"] == head + 1


def test_chain_polls_thin_out_as_nodes_are_added() -> None:
    assert poll_interval(5) == poll_interval(1)  # a small localnet reacts at once
    assert poll_interval(121) > poll_interval(25) > poll_interval(5)
    # the process's chain reads per second stay bounded
    assert 121 / poll_interval(121) == pytest.approx(25 / poll_interval(25))


@pytest.mark.skipif(not mnist_available(default_data_root(), "train"), reason="MNIST not found")
def test_workers_of_one_process_share_one_read_of_the_training_split() -> None:
    root = default_data_root()
    with shared_loads():
        first = load_builtin("mnist", "train", root, allow_download=False)
        assert load_builtin("mnist", "train", root, allow_download=False) is first
        assert not first.images.flags.writeable and not first.labels.flags.writeable
        from node.config import DataConfig

        shards = [
            load_worker_shard(DataConfig(root=root, num_parts=2, part_index=i, max_samples=2000))
            for i in range(2)
        ]
    # a shard is the worker's own copy, and the split is not kept outside
    assert not any(np.shares_memory(shard.images, first.images) for shard in shards)
    assert load_builtin("mnist", "train", root, allow_download=False) is not first
    assert sum(len(s) for s in shards) == 2000


def test_shared_loads_nest_and_end_with_the_outermost() -> None:
    from node.datasets import builtin

    with shared_loads():
        with shared_loads():
            assert builtin._shared is not None
        assert builtin._shared is not None
    assert builtin._shared is None


def test_a_view_call_runs_once_per_block_and_sees_the_next_block() -> None:
    """A hundred nodes reading the same registry record between two blocks run it once; a
    transaction (a new block) makes the next read see the new state."""
    w3 = dev.embedded_web3()
    _build_mined_reads_once(w3)
    tester = dev.embedded_tester(w3)
    assert tester is not None
    executed = {"calls": 0}
    backend_call = tester.backend.call

    def counting_call(transaction: object, block_number: object) -> object:
        executed["calls"] += 1
        return backend_call(transaction, block_number)

    tester.backend.call = counting_call
    key = "0x" + "11" * 32
    dev.fund(w3, Account.from_key(key).address, 10**20)
    client = ChainClient(w3, key)
    client.deploy_registry()
    assert not client.is_registered()
    before = executed["calls"]
    for _ in range(100):
        assert not client.is_registered()
    assert executed["calls"] == before  # served from the first read of this block
    other = ChainClient(w3, "0x" + "22" * 32, registry=client.registry_address)
    assert not other.is_registered(client.address)  # another node asks the same view
    assert executed["calls"] == before
    register(client, honest_keys()[0])
    registered_at = executed["calls"]
    assert client.is_registered()  # the registration's block: read afresh
    assert executed["calls"] == registered_at + 1
    # other arguments, other results, at the same block
    assert not client.is_registered(Account.create().address)


def test_views_do_not_read_the_sender() -> None:
    """The in-process chain shares a view's result among all callers of a block: that holds
    only while no view or pure function of the contracts reads msg.sender or tx.origin."""
    scanned = 0
    for name in VIEW_CONTRACTS:
        source = (REPO / "contracts" / f"{name}.sol").read_text()
        for match in re.finditer(r"function\s+(\w+)\s*\([^)]*\)[^{;]*\b(?:view|pure)\b[^{;]*\{", source):
            depth, end = 1, match.end()
            while depth:
                depth += {"{": 1, "}": -1}.get(source[end], 0)
                end += 1
            body = source[match.end() : end]
            assert "msg.sender" not in body and "tx.origin" not in body, (
                f"{name}.{match.group(1)} reads the sender: the in-process call cache must key it"
            )
            scanned += 1
    assert scanned >= 10  # the pattern still finds the contracts' views


def test_a_key_seed_gives_every_node_its_own_key_the_same_in_every_run() -> None:
    names = ["requester", "worker0", "worker1", "validator0"]
    keys = [_seeded_key(0, name) for name in names]
    assert keys == [_seeded_key(0, name) for name in names]  # another run, the same keys
    assert len(set(keys)) == len(names)
    assert _seeded_key(1, "worker0") != keys[1]
    assert all(Account.from_key(key).address for key in keys)  # valid secp256k1 keys
