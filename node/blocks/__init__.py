"""Content-addressed block store and block exchange (design section 5, issue 4).

- :mod:`node.blocks.unixfs`: blobs as Kubo-compatible UnixFS DAGs (raw leaves, dag-pb nodes).
- :mod:`node.blocks.store`: the filesystem block store under ``<data>/blocks/``.
- :mod:`node.blocks.exchange`: publish / fetch blobs by CID between peers.
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
