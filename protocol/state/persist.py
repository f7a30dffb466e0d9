"""A machine's state to and from plain JSON-ready dicts (pure: the caller writes files).

    data = to_dict(machine)            # json.dumps(data) works
    machine = from_dict(data, **opts)  # opts: the constructor's keyword options
    machine.handle(Restarted())        # re-asks for the jobs and fetches that were lost

The state dataclasses are converted field by field from their type hints: bytes become
"0x..." hex, enums their value, sets sorted lists, dataclasses dicts. Anything that does
not fit its type raises ProtocolError naming the field, so a damaged file is never half
loaded.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from protocol.errors import ProtocolError
from protocol.state.phases import RoundMachine, RoundView
from protocol.state.records import Role
from protocol.state.requester import RequesterMachine
from protocol.state.validator import ValidatorMachine
from protocol.state.worker import WorkerMachine

FORMAT_VERSION = 8

MACHINES: dict[Role, type[RoundMachine[Any]]] = {
    Role.WORKER: WorkerMachine,
    Role.VALIDATOR: ValidatorMachine,
    Role.REQUESTER: RequesterMachine,
}


class PersistError(ProtocolError):
    """Persisted machine state is malformed or from another format version."""


def to_dict(machine: RoundMachine[Any]) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "role": machine.role.value,
        "me": encode(machine.me),
        "now": machine.now,
        "view": encode(machine.view),
        "local": encode(machine.local),
    }


def from_dict(data: dict[str, Any], **options: Any) -> RoundMachine[Any]:
    """Rebuild a machine; `options` are its constructor's keyword options (commitment
    functions, timings, ...) but not `me` and `task`, which come from the data."""
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        found = data.get("version") if isinstance(data, dict) else type(data).__name__
        raise PersistError(
            f"machine state has format version {found!r}, expected {FORMAT_VERSION}; "
            "delete the state file to start the task over"
        )
    try:
        role = Role(data["role"])
        cls = MACHINES[role]
        me = decode(bytes, data["me"], "me")
        view = decode(RoundView, data["view"], "view")
        machine = cls(me, task=view.task, **options)
        machine.view = view
        machine.now = decode(int, data["now"], "now")
        machine.local = decode(type(machine.local), data["local"], "local")
    except KeyError as missing:
        raise PersistError(f"machine state lacks {missing}") from None
    except ValueError as bad:  # includes PersistError from decode
        raise PersistError(f"machine state is malformed: {bad}") from None
    return machine


def encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_key(encode(k)): encode(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(encode(v) for v in value)
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"cannot persist a {type(value).__name__}")


def _key(encoded: Any) -> str:
    if not isinstance(encoded, str):
        raise TypeError(f"cannot persist a dict key of type {type(encoded).__name__}")
    return encoded


def decode(hint: Any, raw: Any, path: str) -> Any:
    """The value of type `hint` encoded as `raw`; `path` names it in errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return decode(inner, raw, path)
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length, one type each
        items = _expect(list, raw, path)
        if len(items) != len(args):
            raise PersistError(f"{path}: expected {len(args)} items, got {len(items)}")
        pairs = enumerate(zip(args, items, strict=True))
        return tuple(decode(a, item, f"{path}[{i}]") for i, (a, item) in pairs)
    if origin in (tuple, list, set, frozenset):
        items = _expect(list, raw, path)
        inner = args[0] if args else Any
        return origin(decode(inner, item, f"{path}[{i}]") for i, item in enumerate(items))
    if origin is dict:
        key_hint, value_hint = args
        mapping = _expect(dict, raw, path)
        return {
            decode(key_hint, k, f"{path} key"): decode(value_hint, v, f"{path}[{k}]")
            for k, v in mapping.items()
        }
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, raw, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(raw)
        except ValueError:
            raise PersistError(f"{path}: {raw!r} is not a {hint.__name__}") from None
    if hint is bytes:
        text = _expect(str, raw, path)
        if not text.startswith("0x"):
            raise PersistError(f"{path}: bytes must be 0x-prefixed hex, got {text[:20]!r}")
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise PersistError(f"{path}: {text[:20]!r}... is not hex") from None
    if hint is bool or hint is str:
        return _expect(hint, raw, path)
    if hint is int:
        if isinstance(raw, bool):
            raise PersistError(f"{path}: expected an int, got a bool")
        return _expect(int, raw, path)
    raise PersistError(f"{path}: no decoder for {hint!r}")


def _decode_dataclass(cls: type, raw: Any, path: str) -> Any:
    fields = _expect(dict, raw, path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if set(fields) != set(names):
        missing, extra = set(names) - set(fields), set(fields) - set(names)
        raise PersistError(f"{path}: missing fields {sorted(missing)}, unknown {sorted(extra)}")
    values = {name: decode(hints[name], fields[name], f"{path}.{name}") for name in names}
    return cls(**values)


def _expect(kind: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, kind):
        raise PersistError(f"{path}: expected {kind.__name__}, got {type(raw).__name__}")
    return raw
