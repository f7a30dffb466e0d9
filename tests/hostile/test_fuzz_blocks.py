"""Property-based fuzzing of every block-layer decoder a peer's bytes reach.

- block requests (``decode_request``): a server reads them from any peer;
- dag-pb / UnixFS file nodes (``decode_file_node``): a publisher chooses them, and their
  hash is all a fetcher checks before decoding;
- block responses: a provider's bytes, read by a real fetch over real hosts.

Each must raise only its documented error type and never allocate more than a bound
proportional to the bytes it was given, whatever lengths those bytes declare.
"""

from __future__ import annotations

import os
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from libp2p.abc import INetStream

from node.blocks.exchange import (
    PROTOCOL_ID,
    RESPONSE_HEADER,
    STATUS_BLOCK,
    BlockExchange,
    BlockFetchError,
    ExchangeLimits,
    decode_request,
)
from node.blocks.store import BlockStore
from node.blocks.unixfs import (
    MAX_LINKS_DECODED,
    DagError,
    FileNode,
    Link,
    build_file_dag,
    decode_file_node,
    encode_file_node,
)
from node.host import host_multiaddrs
from protocol.cid import cid_of
from protocol.errors import CIDError
from tests.network.conftest import open_network
from tests.network.test_blockexchange import read_request

# Bytes a decoder may allocate beyond a small multiple of its input: parsing state,
# exception text, interpreter noise. Far below any declared length the fuzzers write.
ALLOCATION_SLACK = 256 * 1024


def peak_allocation(decode: Callable[[], object]) -> tuple[int, object]:
    """(peak bytes traced while ``decode()`` ran, its result or the exception it raised)."""
    tracemalloc.start()
    try:
        try:
            outcome: object = decode()
        except Exception as exc:  # returned for the caller to judge
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, outcome


def assert_bounded(peak: int, given_bytes: int, factor: int = 8) -> None:
    bound = factor * given_bytes + ALLOCATION_SLACK
    assert peak <= bound, f"allocated {peak} bytes decoding {given_bytes} bytes (bound {bound})"


# --- block requests ------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=70)
    | st.binary(max_size=8) | st.sampled_from([cid_of(b"a"), cid_of(b"b", "dag-pb")]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=4),
    max_leaves=12,
)
requests = (
    st.binary(max_size=600)
    | st.builds(msgpack.packb, msgpack_values)
    | st.builds(lambda want: msgpack.packb({"v": 1, "want": want}), st.lists(msgpack_values))
)
# msgpack headers that declare 2^32 - 1 elements or bytes and carry none of them.
HUGE_DECLARATIONS = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                     b"\xdb\xff\xff\xff\xff", b"\x82\xa1v\x01\xa4want\xdd\xff\xff\xff\xff"]


@settings(max_examples=200, deadline=None)
@given(requests)
@example(HUGE_DECLARATIONS[0])
@example(HUGE_DECLARATIONS[1])
@example(HUGE_DECLARATIONS[2])
@example(HUGE_DECLARATIONS[3])
@example(HUGE_DECLARATIONS[4])
def test_block_request_decoder_raises_only_cid_errors_within_bounds(body: bytes) -> None:
    peak, outcome = peak_allocation(lambda: decode_request(body, max_cids=32))
    assert_bounded(peak, len(body))
    if isinstance(outcome, Exception):
        assert isinstance(outcome, CIDError), f"{type(outcome).__name__}: {outcome}"
        return
    assert isinstance(outcome, list) and 1 <= len(outcome) <= 32
    assert decode_request(msgpack.packb({"v": 1, "want": outcome}), max_cids=32) == outcome


# --- dag-pb / UnixFS file nodes -------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, wire: int, payload: int | bytes) -> bytes:
    key = varint(number << 3 | wire)
    if isinstance(payload, int):
        return key + varint(payload)
    return key + varint(len(payload)) + payload


leaf_cids = st.binary(min_size=1, max_size=64).map(lambda data: cid_of(data))
valid_nodes = st.lists(
    st.tuples(leaf_cids, st.integers(1, 2**20)), min_size=1, max_size=8
).map(lambda links: encode_file_node([Link(cid, size, size) for cid, size in links]))


@st.composite
def mutated_nodes(draw: st.DrawFn) -> bytes:
    node = bytearray(draw(valid_nodes))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        position = draw(st.integers(0, max(len(node) - 1, 0)))
        if action == "flip" and node:
            node[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del node[position:]
        else:
            node[position:position] = draw(st.binary(min_size=1, max_size=12))
    return bytes(node)


# Protobuf fields of any number, wire type and (often absurd) declared length.
raw_fields = st.lists(
    st.builds(field, st.integers(0, 20), st.sampled_from([0, 2]),
              st.integers(0, 2**64 - 1) | st.binary(max_size=40))
    | st.builds(lambda key, claimed: varint(key) + varint(claimed),
                st.integers(0, 200), st.integers(0, 2**64 - 1)),
    max_size=10,
).map(b"".join)

file_nodes = st.binary(max_size=2048) | valid_nodes | mutated_nodes() | raw_fields


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file_nodes)
@example(field(1, 2, b"\x08\x02\x18" + varint(2**63)) + field(2, 2, field(1, 2, b"\x01")))
@example(b"\x12" + varint(2**62))  # a link declaring an exabyte, then nothing
def test_file_node_decoder_raises_only_dag_errors_within_bounds(data: bytes) -> None:
    peak, outcome = peak_allocation(lambda: decode_file_node(data))
    assert_bounded(peak, len(data), factor=16)
    if isinstance(outcome, Exception):
        assert isinstance(outcome, DagError), f"{type(outcome).__name__}: {outcome}"
        return
    assert isinstance(outcome, FileNode)
    assert 1 <= len(outcome.links) <= MAX_LINKS_DECODED
    assert outcome.file_size == sum(link.file_size for link in outcome.links)
    assert all(link.file_size > 0 for link in outcome.links)


def test_a_node_listing_more_links_than_decoded_is_refused_cheaply() -> None:
    link = field(2, 2, field(1, 2, bytes.fromhex("01551220") + bytes(32)))
    data = link * (MAX_LINKS_DECODED + 1)
    peak, outcome = peak_allocation(lambda: decode_file_node(data))
    assert isinstance(outcome, DagError) and "more than" in str(outcome)
    assert_bounded(peak, len(data), factor=16)


# --- block responses, read by a real fetch over real hosts ---------------------------------


class HostileProvider:
    """A provider host answering every request with ``response`` bytes, then closing, and a
    fetcher, both on one trio loop in a background thread so that hypothesis (sync) can
    drive many fetches over the same real connection."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.response = b""
        self.blob = b""
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._fetcher: BlockExchange | None = None
        self._provider_addr = ""
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hostile-provider", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        limits = ExchangeLimits(read_timeout_s=2.0, busy_retries=1, provider_strikes=1)
        async with open_network(self.tmp_path) as net:
            provider = await net.host(echo=False)
            provider.set_stream_handler(PROTOCOL_ID, self._answer)
            store = BlockStore(self.tmp_path / "fetcher")
            net.stack.callback(store.close)
            self._fetcher = await net.stack.enter_async_context(
                BlockExchange(await net.host(echo=False), store, limits=limits))
            self._provider_addr = host_multiaddrs(provider)[0]
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    async def _answer(self, stream: INetStream) -> None:
        try:
            await read_request(stream)
            await stream.write(self.response)
            await stream.close()
        except Exception:  # the fetcher hung up first: fine
            await stream.reset()

    async def _fetch(self, root: str) -> Any:
        assert self._fetcher is not None
        # A pooled stream may still hold an earlier example's trailing bytes.
        await self._fetcher.close_idle_streams()
        try:
            return await self._fetcher.fetch(root, 1 << 20, providers=[self._provider_addr],
                                             timeout_s=20.0)
        except Exception as exc:
            return exc

    def fetch(self, root: str, response: bytes) -> Any:
        """The fetched blob, or the exception the fetch raised."""
        self.response = response
        return trio.from_thread.run(self._fetch, root, trio_token=self._token)

    def __enter__(self) -> HostileProvider:
        self._thread.start()
        self._ready.wait(60)
        if self._failure is not None or self._token is None:
            raise RuntimeError(f"the hosts did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(60)


@pytest.fixture(scope="module")
def hostile_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileProvider]:
    with HostileProvider(tmp_path_factory.mktemp("hostile-provider")) as provider:
        yield provider


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(the blob asked for, what the provider answers): garbage, or a true answer mangled."""
    blob = draw(st.binary(min_size=1, max_size=64)) + os.urandom(8)  # a fresh CID each time
    honest = RESPONSE_HEADER.pack(STATUS_BLOCK, len(blob)) + blob
    kind = draw(st.sampled_from(["garbage", "status", "length", "body", "truncated", "honest"]))
    if kind == "garbage":
        return blob, draw(st.binary(max_size=80))
    if kind == "status":
        return blob, bytes([draw(st.integers(1, 255))]) + honest[1:]
    if kind == "length":
        length = draw(st.integers(0, 2**32 - 1))
        return blob, RESPONSE_HEADER.pack(STATUS_BLOCK, length) + blob
    if kind == "body":
        return blob, honest[:-1] + bytes([honest[-1] ^ draw(st.integers(1, 255))])
    if kind == "truncated":
        return blob, honest[: draw(st.integers(0, len(honest) - 1))]
    return blob, honest


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(responses())
def test_block_responses_fail_a_fetch_only_with_fetch_errors(
    hostile_provider: HostileProvider, case: tuple[bytes, bytes]
) -> None:
    blob, response = case
    root, _ = build_file_dag(blob)
    outcome = hostile_provider.fetch(root, response)
    honest = RESPONSE_HEADER.pack(STATUS_BLOCK, len(blob)) + blob
    if response.startswith(honest):
        assert outcome == blob
    else:
        assert isinstance(outcome, BlockFetchError), f"{type(outcome).__name__}: {outcome}"
