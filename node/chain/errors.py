"""Chain errors: one base class, and one class for a contract revert decoded from any backend."""

from __future__ import annotations

from typing import Any


class ChainError(RuntimeError):
    """Talking to the chain failed (connection, configuration, a timed-out receipt, ...)."""


class ChainRevert(ChainError):
    """The contract reverted. ``name`` is its custom error (``"WrongPhase"``), or ``"Error"`` for a
    revert string, ``"Panic"`` for an assert/overflow, ``"Unknown"`` when the data matches no ABI.
    ``args`` maps the error's parameter names to decoded values."""

    def __init__(self, function: str, name: str, args: dict[str, Any], data: bytes) -> None:
        self.function = function
        self.name = name
        self.args_by_name = args
        self.data = data
        rendered = ", ".join(f"{key}={value!r}" for key, value in args.items())
        super().__init__(f"{function} reverted with {name}({rendered})")

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(self.args_by_name.values())
