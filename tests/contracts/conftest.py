"""Fixtures: one registered world per backend per session, reset to a snapshot for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.anvil import Anvil, AnvilNotFound, find_anvil
from node.chain import dev
from tests.contracts.harness import World, make_world


@pytest.fixture(scope="session")
def embedded_world_session() -> World:
    return make_world(dev.embedded_web3())


@pytest.fixture(scope="session")
def anvil_chain() -> Iterator[Anvil]:
    try:
        find_anvil()
    except AnvilNotFound as exc:
        pytest.skip(f"anvil tests need the npm anvil binary: {exc}")
    with Anvil() as chain:
        yield chain


@pytest.fixture(scope="session")
def anvil_world_session(anvil_chain: Anvil) -> World:
    return make_world(anvil_chain.web3())


@pytest.fixture
def world(embedded_world_session: World) -> World:
    embedded_world_session.reset()
    return embedded_world_session


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def any_world(request: pytest.FixtureRequest) -> World:
    """The same test on the embedded chain and on a real anvil."""
    chosen: World = request.getfixturevalue(f"{request.param}_world_session")
    chosen.reset()
    return chosen
