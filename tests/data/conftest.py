from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def empty_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees (or fills) the user's download cache."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "fl-node"


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture modules (a model factory, a data loader) importable by name, as a
    package the node's operator installed would be; they live outside fl-node."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    return FIXTURES


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()
