"""Each round's global model, rebuilt after the run from the chain and the requester's blocks.

The requester (a recipient of every sealed update) fetched and averaged each round's accepted
updates into its block store. The chain says which workers were accepted with how many
samples, and binds each worker's update CID with keccak(cid, worker); so the launcher, which
set the localnet up and owns its data folders, finds each accepted update in that store by
its commitment, opens it with the requester's key, and averages it as every node does
(node.runtime.learning.ModelBook: data-size weighted FedAvg; a round without accepted
updates carries the model over). Nothing here trusts a file it cannot check: the store
verifies every block's hash, the CID must match the on-chain commitment, the envelope is
authenticated, and the model is decoded against the task's architecture (never pickle).

Runs only once the requester has stopped: a block store is locked by its process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from node.blocks import BlockStore
from node.chain.client import ChainClient
from node.localnet.tracker import RoundRecord
from node.runtime.driver import BLOCKS_DIR
from node.runtime.keys import ENCRYPTION_KEY_FILE, read_secret
from node.runtime.learning import ModelBook, StateDict, TaskCrypto
from protocol.manifest import update_commitment
from protocol.state.records import GlobalModel, Update

__all__ = ["RebuildError", "rebuild_global_models"]


class RebuildError(RuntimeError):
    """A round's global model cannot be rebuilt (an update is missing from the store...)."""


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def rebuild_global_models(
    data_dir: Path,
    reader: ChainClient,
    task: str,
    rounds: Sequence[RoundRecord],
) -> Iterator[tuple[int, StateDict | RebuildError]]:
    """(round, global model after it) for each finalized round, in order; a round that cannot
    be rebuilt yields its RebuildError instead (later rounds can still be rebuilt)."""
    params = reader.task_params(task)
    key = read_secret(data_dir / ENCRYPTION_KEY_FILE, "requester encryption key")
    with BlockStore(data_dir / BLOCKS_DIR) as store:
        book = ModelBook(params.model_arch, store, TaskCrypto(key, _address_bytes(task)))
        stored = store.cids()
        current = GlobalModel(params.initial_model_cid)
        for record in rounds:
            try:
                updates = _accepted_updates(reader, task, record, stored)
            except RebuildError as exc:
                yield record.round, exc
                continue
            if updates:
                current = GlobalModel(params.initial_model_cid, record.round, updates)
            try:
                yield record.round, book.global_state(current)
            except Exception as exc:  # a bad blob is reported for its round, never fatal
                yield record.round, RebuildError(f"round {record.round}: {exc}")


def _accepted_updates(
    reader: ChainClient, task: str, record: RoundRecord, stored: list[str]
) -> tuple[Update, ...]:
    updates = []
    for worker in record.accepted:
        commitment, n_samples = reader.update_commitment_of(task, record.round, worker)
        worker_bytes = _address_bytes(worker)
        found = [cid for cid in stored if update_commitment(cid, worker_bytes) == commitment]
        if not found:
            raise RebuildError(
                f"round {record.round}: the update of {worker} is not in the requester's "
                "block store"
            )
        updates.append(Update(worker_bytes, found[0], n_samples))
    return tuple(updates)
