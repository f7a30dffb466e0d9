"""protocol/manifest.py computes exactly the commitments Solidity computes."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.manifest import (
    MAX_ABS_SCORE,
    MAX_ACCURACY,
    WorkerVerdict,
    manifest_commitment,
    update_commitment,
)
from tests.contracts.harness import World

addresses = st.binary(min_size=20, max_size=20)


@pytest.fixture(scope="module")
def harness(embedded_world_session: World) -> str:
    world = embedded_world_session
    world.reset()
    deployed = world.requester.deploy("CommitmentHarness")
    assert deployed.contract_address is not None
    return deployed.contract_address


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cid=st.text(min_size=1, max_size=80), worker=addresses)
def test_update_commitment_equals_abi_encode_packed(
    embedded_world_session: World, harness: str, cid: str, worker: bytes
) -> None:
    on_chain = embedded_world_session.requester.call(
        "CommitmentHarness", harness, "updateCommitment", cid, to_checksum_address(worker)
    )
    assert bytes(on_chain) == update_commitment(cid, worker)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_manifest_commitment_equals_abi_encode(
    embedded_world_session: World, harness: str, data: Any
) -> None:
    n = data.draw(st.integers(0, 5))
    task, validator = data.draw(addresses), data.draw(addresses)
    workers = data.draw(st.lists(addresses, min_size=n, max_size=n))
    scores = data.draw(st.lists(st.integers(-MAX_ABS_SCORE, MAX_ABS_SCORE), min_size=n, max_size=n))
    # Bools (ACCEPT / REJECT) and the enum, UNAVAILABLE included, hash like uint8[].
    verdicts = data.draw(
        st.lists(st.one_of(st.booleans(), st.sampled_from(WorkerVerdict)), min_size=n, max_size=n)
    )
    round_ = data.draw(st.integers(1, 2**64))
    accuracy = data.draw(st.integers(0, MAX_ACCURACY))
    salt = data.draw(st.binary(min_size=32, max_size=32))
    hexed = [to_checksum_address(w) for w in workers]
    on_chain = embedded_world_session.requester.call(
        "CommitmentHarness", harness, "manifestCommitment",
        to_checksum_address(task), round_, to_checksum_address(validator), hexed, scores, [int(v) for v in verdicts], accuracy, salt,
    )  # fmt: skip
    expected = manifest_commitment(
        task, round_, validator, workers, scores, verdicts, accuracy, salt
    )
    assert bytes(on_chain) == expected
