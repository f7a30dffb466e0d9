"""Compiled contract artifacts (contracts/artifacts/*.json, committed) and ABI-level decoding.

Python needs no Node at run time: everything comes from the committed JSON written by
contracts/compile.js. This module also decodes revert data and logs against every ABI.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak
from eth_utils.abi import collapse_if_tuple

from node.chain.bounds import check_event
from node.chain.errors import ChainError

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
# Contracts whose errors and events a client decodes (the interfaces add nothing new). VRF is
# linked into Task, whose ABI therefore lacks the errors the library reverts with.
DECODED_CONTRACTS = ("Registry", "Task", "RewardMath", "VRF")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    link_references: dict[str, dict[str, list[dict[str, int]]]]
    compiler: str

    def linked_bytecode(self, libraries: dict[str, str]) -> str:
        """The creation code with each library placeholder replaced by its deployed address."""
        code = self.bytecode.removeprefix("0x")
        for per_source in self.link_references.values():
            for library, refs in per_source.items():
                if library not in libraries:
                    raise ChainError(
                        f"{self.name} needs library {library} deployed and linked first"
                    )
                address = libraries[library].removeprefix("0x").lower()
                for ref in refs:
                    start = 2 * ref["start"]
                    code = code[:start] + address + code[start + 2 * ref["length"] :]
        if "__$" in code:
            raise ChainError(f"{self.name} bytecode still has an unlinked library placeholder")
        return "0x" + code


@cache
def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    path = directory / f"{name}.json"
    if not path.is_file():
        raise ChainError(
            f"contract artifact {path} is missing; run `node contracts/compile.js` "
            "(after `npm ci`) and commit contracts/artifacts/"
        )
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        link_references=raw.get("linkReferences", {}),
        compiler=raw["compiler"]["version"],
    )


@dataclass(frozen=True)
class AbiFunction:
    """One contract function, encoded and decoded with eth_abi directly (web3's Contract
    objects rebuild every function of a large ABI per instance: most of a call's CPU time)."""

    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def encode(self, args: tuple[Any, ...]) -> str:
        if len(args) != len(self.inputs):
            raise ChainError(f"{self.name} takes {len(self.inputs)} arguments, got {len(args)}")
        return "0x" + (self.selector + abi_encode(list(self.inputs), list(args))).hex()

    def decode(self, data: bytes) -> Any:
        values = abi_decode(list(self.outputs), bytes(data))
        return values[0] if len(values) == 1 else values


@cache
def abi_functions(contract: str) -> dict[str, AbiFunction]:
    table = {}
    for entry in load_artifact(contract).abi:
        if entry["type"] != "function":
            continue
        if entry["name"] in table:
            raise ChainError(
                f"{contract}.{entry['name']} is overloaded; the client needs unique names"
            )
        table[entry["name"]] = AbiFunction(
            name=entry["name"],
            selector=keccak(text=_signature(entry))[:4],
            inputs=tuple(collapse_if_tuple(i) for i in entry["inputs"]),
            outputs=tuple(collapse_if_tuple(o) for o in entry["outputs"]),
        )
    return table


def abi_function(contract: str, name: str) -> AbiFunction:
    try:
        return abi_functions(contract)[name]
    except KeyError:
        raise ChainError(f"{contract} has no function {name!r}") from None


def constructor_data(artifact: Artifact, bytecode: str, args: tuple[Any, ...]) -> str:
    """Creation code followed by the ABI-encoded constructor arguments."""
    types = [
        collapse_if_tuple(i)
        for e in artifact.abi
        if e["type"] == "constructor"
        for i in e["inputs"]
    ]
    if len(types) != len(args):
        raise ChainError(
            f"{artifact.name}'s constructor takes {len(types)} arguments, got {len(args)}"
        )
    return bytecode + abi_encode(types, list(args)).hex()


def _signature(entry: dict[str, Any]) -> str:
    types = ",".join(collapse_if_tuple(i) for i in entry["inputs"])
    return f"{entry['name']}({types})"


@dataclass(frozen=True)
class _AbiItem:
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]
    indexed: tuple[bool, ...]


_BUILTIN_ERRORS = {
    keccak(text="Error(string)")[:4]: _AbiItem("Error", ("string",), ("message",), (False,)),
    keccak(text="Panic(uint256)")[:4]: _AbiItem("Panic", ("uint256",), ("code",), (False,)),
}


@cache
def _errors_by_selector() -> dict[bytes, _AbiItem]:
    table = dict(_BUILTIN_ERRORS)
    for contract in DECODED_CONTRACTS:
        for entry in load_artifact(contract).abi:
            if entry["type"] == "error":
                table[keccak(text=_signature(entry))[:4]] = _item(entry)
    return table


@cache
def _events_by_topic() -> dict[bytes, _AbiItem]:
    table: dict[bytes, _AbiItem] = {}
    for contract in DECODED_CONTRACTS:
        for entry in load_artifact(contract).abi:
            if entry["type"] == "event" and not entry.get("anonymous", False):
                table[keccak(text=_signature(entry))] = _item(entry)
    return table


def _item(entry: dict[str, Any]) -> _AbiItem:
    inputs = entry["inputs"]
    return _AbiItem(
        name=entry["name"],
        types=tuple(collapse_if_tuple(i) for i in inputs),
        names=tuple(i["name"] for i in inputs),
        indexed=tuple(bool(i.get("indexed", False)) for i in inputs),
    )


def decode_revert(data: bytes) -> tuple[str, dict[str, Any]]:
    """(error name, {param: value}) for revert data from any of our contracts."""
    item = _errors_by_selector().get(bytes(data[:4]))
    if item is None:
        return "Unknown", {"data": "0x" + bytes(data).hex()}
    try:
        values = abi_decode(list(item.types), bytes(data[4:]))
    except Exception as exc:  # malformed data from a foreign contract: keep it visible
        return item.name, {"undecodable": "0x" + bytes(data).hex(), "reason": str(exc)}
    return item.name, dict(zip(item.names, values, strict=True))


_TESTER_REVERT = re.compile(r"execution reverted: (b(['\"]).*\2)\s*$", re.DOTALL)


def revert_data_from_exception(exc: BaseException) -> bytes | None:
    """The raw revert data carried by a web3 or eth-tester exception, or None if it has none.

    anvil (JSON-RPC): web3 raises ContractCustomError/ContractLogicError with ``.data`` as hex.
    eth-tester: TransactionFailed("execution reverted: b'...'") holding a Python bytes literal
    (web3's own provider code parses it the same way), or a decoded revert string.
    """
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    message = str(exc.args[0]) if exc.args else str(exc)
    match = _TESTER_REVERT.search(message)
    if match:
        value = ast.literal_eval(match.group(1))  # a bytes literal only, by the regex
        return bytes(value) if isinstance(value, bytes) else None
    if message.startswith("execution reverted: "):
        # eth-tester already decoded an Error(string) reason; re-encode it as Error(string).
        reason = message.removeprefix("execution reverted: ")
        return keccak(text="Error(string)")[:4] + abi_encode(["string"], [reason])
    return None


def decode_log(topics: list[bytes], data: bytes) -> tuple[str, dict[str, Any]] | None:
    """(event name, {param: value}) for a log of our contracts, None for a foreign event.
    Raises ChainValueOutOfRange if an integer in it is outside its range (node/chain/bounds)."""
    if not topics:
        return None
    item = _events_by_topic().get(bytes(topics[0]))
    if item is None:
        return None
    indexed_values = iter(topics[1:])
    data_types = [t for t, ix in zip(item.types, item.indexed, strict=True) if not ix]
    data_values = iter(abi_decode(data_types, bytes(data)))
    args: dict[str, Any] = {}
    for name, type_, is_indexed in zip(item.names, item.types, item.indexed, strict=True):
        if is_indexed:
            args[name] = abi_decode([type_], bytes(next(indexed_values)))[0]
        else:
            args[name] = next(data_values)
    check_event(item.name, args)
    return item.name, args
