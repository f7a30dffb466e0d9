"""Content-addressed block store and block exchange.

- :mod:`node.blocks.unixfs`: blobs as Kubo-compatible UnixFS DAGs (raw leaves, dag-pb nodes).
- :mod:`node.blocks.store`: the filesystem block store under ``<data>/blocks/``.
- :mod:`node.blocks.exchange`: publish / fetch blobs by CID between peers.

Typical use on a node::

    store = BlockStore(data_dir / "blocks", max_bytes=cap)
    async with BlockExchange(host, store, find_providers=discovery.find_providers,
                             provide=discovery.provide, on_bad_peer=score_down) as blocks:
        cid = await blocks.publish(sealed_model)            # stored, pinned, announced
        blob = await blocks.fetch(cid, max_size=limit,       # verified, size-bounded
                                  providers=[announcer_multiaddr], timeout_s=120)
        store.unpin(old_cid); store.gc()                     # free an old round's blobs
"""

from .exchange import (
    PROTOCOL_ID,
    BlobTooLargeError,
    BlockExchange,
    BlockFetchError,
    BlockUnavailableError,
    ExchangeLimits,
    FetchTimeoutError,
)
from .store import (
    BlockCorruptError,
    BlockNotFoundError,
    BlockStore,
    BlockStoreError,
    BlockStoreFullError,
    BlockStoreLockedError,
)
from .unixfs import CHUNK_SIZE, MAX_BLOCK_SIZE, DagError, build_file_dag, decode_file_node

__all__ = [
    "CHUNK_SIZE",
    "MAX_BLOCK_SIZE",
    "PROTOCOL_ID",
    "BlobTooLargeError",
    "BlockCorruptError",
    "BlockExchange",
    "BlockFetchError",
    "BlockNotFoundError",
    "BlockStore",
    "BlockStoreError",
    "BlockStoreFullError",
    "BlockStoreLockedError",
    "BlockUnavailableError",
    "DagError",
    "ExchangeLimits",
    "FetchTimeoutError",
    "build_file_dag",
    "decode_file_node",
]
