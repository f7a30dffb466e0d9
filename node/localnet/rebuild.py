"""Each round's global model, rebuilt after the run from the chain and the nodes' blocks.

The chain says which workers each round accepted with how many samples, and binds each
worker's update CID with keccak(cid, worker). Every participant is a recipient of every
sealed update, and each node keeps the blobs it fetched (the requester and the committee
fetch all of them; a worker keeps its own). So the launcher, which set the localnet up and
owns its data folders, finds each accepted update by its on-chain commitment in some node's
block store, opens it with that node's key, and combines the round's updates as every node
does (the task's aggregation rule; a round without accepted updates carries the model over).
Nothing unchecked is used: the store verifies every block's hash, the CID must match the
commitment, the envelope is authenticated, and the model is decoded against the task's
architecture (never pickle).

Runs only once the nodes have stopped: a block store is locked by its process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from node.blocks import BlockStore
from node.chain.client import ChainClient
from node.chain.tracker import RoundRecord
from node.runtime.driver import BLOCKS_DIR
from node.runtime.keys import ENCRYPTION_KEY_FILE, read_secret
from node.runtime.learning import ModelBook, StateDict, TaskCrypto
from protocol.aggregation.rule import AggregationRule
from protocol.manifest import update_commitment

__all__ = ["RebuildError", "rebuild_global_models"]


class RebuildError(RuntimeError):
    """A round's global model cannot be rebuilt (an update is in no node's store...)."""


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def rebuild_global_models(
    data_dirs: Sequence[Path],
    reader: ChainClient,
    task: str,
    rounds: Sequence[RoundRecord],
) -> Iterator[tuple[int, StateDict | RebuildError]]:
    """(round, global model after it) for each finalized round, in order; a round that cannot
    be rebuilt yields its RebuildError instead. `data_dirs`: the nodes' data folders, the
    requester's first (it holds the initial model)."""
    params = reader.task_params(task)
    rule = AggregationRule.parse(params.aggregator)
    with ExitStack() as stack:
        books = []
        for data_dir in data_dirs:
            if not (data_dir / ENCRYPTION_KEY_FILE).exists() or not (data_dir / BLOCKS_DIR).is_dir():
                continue  # a node that never got that far
            key = read_secret(data_dir / ENCRYPTION_KEY_FILE, "node encryption key")
            store = stack.enter_context(BlockStore(data_dir / BLOCKS_DIR))
            crypto = TaskCrypto(key, _address_bytes(task))
            books.append((ModelBook(params.model_arch, store, crypto), store.cids()))
        if not books:
            raise RebuildError(f"no node data folder with keys and blocks among {list(data_dirs)}")
        current: StateDict | None = books[0][0].initial(params.initial_model_cid)
        for record in rounds:
            try:
                states, weights = _accepted_updates(reader, task, record, books)
                if states:
                    current = rule(states, weights)
                elif current is None:
                    raise RebuildError(
                        f"round {record.round} accepted no update and carries over the model "
                        "of a round that could not be rebuilt"
                    )
            except Exception as exc:  # reported for its round, never fatal
                current = None
                yield record.round, exc if isinstance(exc, RebuildError) else RebuildError(
                    f"round {record.round}: {exc}"
                )
                continue
            yield record.round, current


def _accepted_updates(
    reader: ChainClient,
    task: str,
    record: RoundRecord,
    books: list[tuple[ModelBook, list[str]]],
) -> tuple[list[StateDict], list[int]]:
    states, weights = [], []
    for worker in record.accepted:
        commitment, n_samples = reader.update_commitment_of(task, record.round, worker)
        worker_bytes = _address_bytes(worker)
        for book, stored in books:
            found = [cid for cid in stored if update_commitment(cid, worker_bytes) == commitment]
            if found:
                states.append(book.update(found[0]))
                weights.append(n_samples)
                break
        else:
            raise RebuildError(
                f"round {record.round}: the accepted update of {worker} is in no node's block store"
            )
    return states, weights
