"""``fl-node export --car``: a node's blobs as a CARv1 file for any IPFS tool.

Exports the requester's final global model (the file the node saved at the end of its
task, laid out as the same UnixFS DAG ``ipfs add --cid-version=1`` builds, so the root CID
is Kubo's) and any blob held in the node's block store by its CID, e.g. a round's accepted
updates, still sealed. The block store belongs to one process at a time: run the export
while the node is stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from node.blocks.car import CarError, dag_blocks, store_reader, write_car_file
from node.blocks.cids import canonical_cid
from node.blocks.store import BlockStore, BlockStoreError, BlockStoreLockedError
from node.blocks.unixfs import Block, DagError, build_file_dag, is_raw
from protocol.errors import CIDError

__all__ = ["add_export_command", "export_car", "run_export_command"]

_BLOCKS_DIR = "blocks"  # node.runtime.driver.BLOCKS_DIR, without importing the runtime
_FINAL_MODEL = "final-model.bin"


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    from node.cli import add_config_command

    parser = add_config_command(
        subparsers,
        "export",
        "export the final model and stored blobs as a CAR file (ipfs dag import reads it)",
        "Write a CARv1 file holding the final global model (by default) and/or blobs from "
        "the node's block store named by CID, e.g. a round's accepted updates (still "
        "encrypted). Prints each root CID. Run it while the node is stopped.",
        config_help="the node's TOML config",
    )
    parser.add_argument("--car", required=True, type=Path, metavar="OUT.car",
                        help="CAR file to write (replaced if it exists)")
    parser.add_argument("--cid", action="append", default=[], metavar="CID",
                        help="a blob in the block store to include (repeatable)")
    parser.add_argument("--final-model", action="store_true",
                        help="include the final global model (the default when no --cid is given)")
    parser.set_defaults(func=run_export_command)


def export_car(out: Path, data_dir: Path, *, final_model: Path | None = None,
               cids: tuple[str, ...] = ()) -> list[str]:
    """Write ``out`` with the final model file (if given) and the stored blobs ``cids``;
    returns the root CIDs in the order written. Nothing is written when a blob is incomplete."""
    roots: list[str] = []
    in_memory: dict[str, bytes] = {}
    if final_model is not None:
        if not final_model.is_file():
            raise CarError(
                f"no final model at {final_model}: the task has not finished on this node, or "
                "[task] output names another file"
            )
        root, model_blocks = build_file_dag(final_model.read_bytes())
        in_memory = {block.cid: block.data for block in model_blocks}
        roots.append(root)
    stored = []
    for cid in cids:
        try:
            stored.append(canonical_cid(cid))
        except CIDError as exc:
            raise CarError(f"--cid {cid!r} is not a CIDv1 sha2-256: {exc}") from exc
    if not roots and not stored:
        raise CarError("nothing to export: give --final-model and/or --cid")
    if not stored:
        write_car_file(out, roots, dag_blocks(roots[0], in_memory.get, "the final model"))
        return roots
    try:
        store = BlockStore(data_dir / _BLOCKS_DIR)
    except BlockStoreLockedError as exc:
        raise CarError(
            f"the node using {data_dir} is running and holds its block store; stop it, then "
            "export (or fetch the CIDs from it over bitswap with any IPFS tool)"
        ) from exc
    with store:
        read = store_reader(store)

        def present(cid: str) -> bytes | None:  # a leaf's bytes are not needed to walk
            if is_raw(cid):
                return b"" if store.has(cid) else None
            return read(cid)

        for root in stored:  # walk each DAG first: an incomplete one fails before any write
            for _ in dag_blocks(root, present, f"the block store {store.root}"):
                pass

        def blocks() -> Iterator[Block]:
            if in_memory:
                yield from dag_blocks(roots[0], in_memory.get, "the final model")
            for root in stored:
                yield from dag_blocks(root, read, f"the block store {store.root}")

        write_car_file(out, [*roots, *stored], blocks())
    return [*roots, *stored]


def run_export_command(args: argparse.Namespace) -> int:
    from node.cli import EXIT_CONFIG_ERROR, load_node_config

    config = load_node_config(args.config, "export")
    if config is None:
        return EXIT_CONFIG_ERROR
    data_dir = Path(config.node.data_dir)
    final = None
    if args.final_model or not args.cid:
        final = config.task.output or data_dir / _FINAL_MODEL
    try:
        roots = export_car(args.car, data_dir, final_model=final, cids=tuple(args.cid))
    except (CarError, DagError, BlockStoreError, OSError) as exc:
        print(f"fl-node export: {exc}", file=sys.stderr)
        return 1
    for root in roots:
        print(root)
    print(f"wrote {args.car} ({len(roots)} root{'s' if len(roots) > 1 else ''}); import it with "
          "`ipfs dag import` or Helia's car().import", file=sys.stderr)
    return 0
