"""`fl-node run`: an error raised deep inside the node's nurseries (wrapped in exception
groups by trio) still ends as one clear line and the right exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import cli
from node.chain import ChainError
from node.chain.errors import InsufficientFunds
from node.runtime import node as runtime_node
from node.runtime.driver import NodeStopped

REPO = Path(__file__).resolve().parents[2]


def nested(exc: Exception) -> BaseExceptionGroup[Exception]:
    return ExceptionGroup("host", [ExceptionGroup("driver", [exc])])


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (NodeStopped("task 0xabc: model 'resnet50' is not one this node knows"), 2, "model 'resnet50'"),
        (ChainError("the chain at http://127.0.0.1:8545 stopped answering"), 1, "stopped answering"),
        (
            InsufficientFunds("joinAsWorker", "0xA11CE", 10**18, 10**15),
            2,
            "fund the account with at least",
        ),
    ],
)
def test_a_wrapped_known_error_is_one_line(
    raised: Exception,
    status: int,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def failing_node(config: object) -> None:
        raise nested(raised)

    monkeypatch.setattr(runtime_node, "run_node_until_signal", failing_node)
    assert cli.main(["run", "--config", str(REPO / "node.toml")]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fl-node run: ") and line in err[0]


def test_an_unexpected_error_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing_node(config: object) -> None:
        raise nested(RuntimeError("a bug"))

    monkeypatch.setattr(runtime_node, "run_node_until_signal", failing_node)
    with pytest.raises(ExceptionGroup):
        cli.main(["run", "--config", str(REPO / "node.toml")])


def test_sole_error_unwraps_only_single_member_groups() -> None:
    inner = ValueError("x")
    assert cli.sole_error(nested(inner)) is inner
    pair = ExceptionGroup("two", [ValueError("a"), ValueError("b")])
    assert cli.sole_error(pair) is pair
