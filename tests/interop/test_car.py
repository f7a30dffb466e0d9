"""CARv1 export: byte-for-byte known answers from js ``@ipld/car`` (CarWriter 5.4.7),
reading back, the ``fl-node export`` command and its errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.blocks.car import CarError, car_header, dag_blocks, read_car, write_car
from node.blocks.store import BlockStore
from node.blocks.unixfs import Block, build_file_dag
from node.cli import main
from node.export import export_car

HELLO_RAW = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
# CarWriter.create([hello]) + put(hello, "hello")
CAR_HELLO = bytes.fromhex(
    "3aa265726f6f747381d82a582500015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e7304"
    "3362938b98246776657273696f6e0129015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e"
    "73043362938b982468656c6c6f"
)
# "hello world!" cut in 5-byte leaves: the dag-pb root, then its three leaves in link order
CAR_HELLO_WORLD_5 = bytes.fromhex(
    "3aa265726f6f747381d82a582500017012205ea761382a5e47b4abfca9350acf44193b19c8d0e2f54df748d6"
    "3901c8c8a87f6776657273696f6e01b401017012205ea761382a5e47b4abfca9350acf44193b19c8d0e2f54d"
    "f748d63901c8c8a87f122a0a24015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e730433"
    "62938b982412001805122a0a240155122043cf897720cc5a693b2508c9e95e8711942a96ed98d772fe37123d"
    "31603ce20f12001805122a0a24015512202615739d41db311a978c3232f5189cb5172f13ddc862712d4d750f"
    "f463b9cb8a120018020a0a0802180c20052005200229015512202cf24dba5fb0a30e26e83b2ac5b9e29e1b16"
    "1e5c1fa7425e73043362938b982468656c6c6f290155122043cf897720cc5a693b2508c9e95e8711942a96ed"
    "98d772fe37123d31603ce20f20776f726c26015512202615739d41db311a978c3232f5189cb5172f13ddc862"
    "712d4d750ff463b9cb8a6421"
)


def car_of(roots: list[str], blocks: list[Block]) -> bytes:
    out = io.BytesIO()
    assert write_car(out, roots, blocks) == len(out.getvalue())
    return out.getvalue()


def test_single_block_car_matches_ipld_car() -> None:
    assert car_of([HELLO_RAW], [Block(HELLO_RAW, b"hello")]) == CAR_HELLO
    assert car_header([HELLO_RAW]) == CAR_HELLO[:59]


def test_dag_car_matches_ipld_car_root_first_depth_first() -> None:
    root, blocks = build_file_dag(b"hello world!", chunk_size=5)
    in_memory = {block.cid: block.data for block in blocks}
    ordered = list(dag_blocks(root, in_memory.get, "memory"))
    assert [b.cid for b in ordered] == [root] + [b.cid for b in blocks[:-1]]
    assert car_of([root], ordered) == CAR_HELLO_WORLD_5


def test_read_car_round_trip_and_rejections() -> None:
    roots, blocks = read_car(CAR_HELLO_WORLD_5)
    assert roots == [build_file_dag(b"hello world!", chunk_size=5)[0]]
    assert b"".join(b.data for b in blocks[1:]) == b"hello world!"
    tampered = CAR_HELLO[:-1] + b"p"  # "hellp" under hello's CID
    with pytest.raises(CarError, match="does not match"):
        read_car(tampered)
    with pytest.raises(CarError, match="truncated"):
        read_car(CAR_HELLO[:-3])
    with pytest.raises(CarError, match="at least one root"):
        car_header([])


def test_duplicate_blocks_are_written_once() -> None:
    blob = b"abcd" * 3  # three identical 4-byte leaves
    root, blocks = build_file_dag(blob, chunk_size=4)
    in_memory = {block.cid: block.data for block in blocks}
    _, read = read_car(car_of([root], list(dag_blocks(root, in_memory.get, "memory"))))
    assert len(read) == 2  # the root and the one distinct leaf


def test_export_final_model_and_stored_blob(tmp_path: Path) -> None:
    model = os.urandom(700_000)
    update = os.urandom(300_000)
    (tmp_path / "final-model.bin").write_bytes(model)
    update_root, update_blocks = build_file_dag(update)
    with BlockStore(tmp_path / "blocks", durable=False) as store:
        for block in update_blocks:
            store.put(block.cid, block.data)
    out = tmp_path / "out.car"
    roots = export_car(out, tmp_path, final_model=tmp_path / "final-model.bin", cids=(update_root,))
    model_root = build_file_dag(model)[0]
    assert roots == [model_root, update_root]
    read_roots, blocks = read_car(out.read_bytes())
    assert read_roots == roots
    assert {b.cid for b in blocks} == {b.cid for b in build_file_dag(model)[1]} | {
        b.cid for b in update_blocks}


def test_export_refuses_an_incomplete_blob_and_writes_nothing(tmp_path: Path) -> None:
    root, blocks = build_file_dag(os.urandom(600_000))
    with BlockStore(tmp_path / "blocks", durable=False) as store:
        for block in blocks[1:]:  # the first leaf is missing
            store.put(block.cid, block.data)
    out = tmp_path / "out.car"
    with pytest.raises(CarError, match=f"block {blocks[0].cid} of {root} is not in"):
        export_car(out, tmp_path, cids=(root,))
    assert not out.exists()


def test_export_while_the_node_holds_the_store_says_stop_it(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "blocks", durable=False):
        with pytest.raises(CarError, match="is running"):
            export_car(tmp_path / "out.car", tmp_path, cids=(HELLO_RAW,))


CONFIG = """
[node]
role = "requester"
data_dir = "data"

[chain]
rpc_url = "http://127.0.0.1:8545"
private_key_file = "chain.key"
registry = "0x00000000000000000000000000000000000000aa"

[data]
root = "mnist"
"""


def test_fl_node_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(CONFIG)
    out = tmp_path / "model.car"
    assert main(["export", "--config", str(config), "--car", str(out)]) == 1
    assert "no final model at" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    model = os.urandom(400_000)
    (tmp_path / "data" / "final-model.bin").write_bytes(model)
    assert main(["export", "--config", str(config), "--car", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [build_file_dag(model)[0]]
    assert read_car(out.read_bytes())[0] == printed
    assert main(["export", "--config", str(config), "--car", str(out), "--cid", "nope"]) == 1
    assert "is not a CIDv1" in capsys.readouterr().err


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_read_car_raises_only_car_errors(data: bytes) -> None:
    try:
        read_car(data)
    except CarError:
        pass


@given(st.integers(0, len(CAR_HELLO_WORLD_5) - 1), st.integers(1, 255))
@settings(max_examples=300, deadline=None)
def test_read_car_flipped_byte_raises_only_car_errors(index: int, xor: int) -> None:
    data = bytearray(CAR_HELLO_WORLD_5)
    data[index] ^= xor
    try:
        read_car(bytes(data))
    except CarError:
        pass
