"""Development-chain helpers for both backends: the embedded eth-tester chain and anvil.

Time and snapshots are not part of the JSON-RPC standard; each backend has its own way.
"""

from __future__ import annotations

from typing import Any

from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import to_checksum_address
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import Wei

from node.chain.errors import ChainError


def embedded_web3() -> Web3:
    """A fresh in-process chain (py-evm, Prague rules) with ten funded, unlocked accounts."""
    return Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))


def embedded_tester(w3: Web3) -> EthereumTester | None:
    provider = w3.provider
    if isinstance(provider, EthereumTesterProvider):
        tester = provider.ethereum_tester
        if isinstance(tester, EthereumTester):
            return tester
    return None


def is_embedded(w3: Web3) -> bool:
    return embedded_tester(w3) is not None


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if "error" in response:
        raise ChainError(f"{method} failed: {response['error']}; is this a dev chain (anvil)?")
    return response.get("result")


def latest_timestamp(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def mine(w3: Web3, blocks: int = 1) -> None:
    tester = embedded_tester(w3)
    if tester is not None:
        tester.mine_blocks(blocks)
        return
    for _ in range(blocks):
        _rpc(w3, "evm_mine", [])


def advance_time(w3: Web3, seconds: int) -> int:
    """Mine a block `seconds` after the latest one and return its timestamp.

    eth-tester: time_travel(T) mines a block at T - 1 and makes T the pending time, hence the
    + 1; later blocks add 1 s each. anvil: later blocks keep wall-clock time plus the offset.
    """
    if seconds < 0:
        raise ValueError("chain time only moves forward")
    if seconds == 0:
        mine(w3)
        return latest_timestamp(w3)
    tester = embedded_tester(w3)
    if tester is not None:
        tester.time_travel(latest_timestamp(w3) + seconds + 1)
        return latest_timestamp(w3)
    _rpc(w3, "evm_increaseTime", [seconds])
    _rpc(w3, "evm_mine", [])
    return latest_timestamp(w3)


def snapshot(w3: Web3) -> Any:
    tester = embedded_tester(w3)
    if tester is not None:
        return tester.take_snapshot()
    return _rpc(w3, "evm_snapshot", [])


def revert(w3: Web3, snapshot_id: Any) -> None:
    """Return the chain to `snapshot_id` (anvil consumes the snapshot; take a new one after)."""
    tester = embedded_tester(w3)
    if tester is not None:
        tester.revert_to_snapshot(snapshot_id)
        return
    if not _rpc(w3, "evm_revert", [snapshot_id]):
        raise ChainError(f"evm_revert to {snapshot_id} failed")


def fund(w3: Web3, to: str, amount: int) -> None:
    """Send `amount` wei from the dev chain's first unlocked account (eth-tester and anvil
    both pre-fund and unlock it). One process at a time: it shares that account's nonce."""
    funder = w3.eth.accounts[0]
    tx_hash = w3.eth.send_transaction(
        {"from": funder, "to": to_checksum_address(to), "value": Wei(amount)}
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise ChainError(f"funding {to} with {amount} wei failed")


def deploy_from_dev_account(w3: Web3, name: str, libraries: dict[str, str] | None = None) -> str:
    """Deploy the artifact `name` (no constructor arguments) from the dev chain's first
    unlocked account, linking `libraries` by name; its address. Test and benchmark contracts
    (VRFHarness needs the VRF library) on a bare chain, without a ChainClient key."""
    from node.chain.artifacts import load_artifact

    code = load_artifact(name).linked_bytecode(libraries or {})
    tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[0], "data": code})  # type: ignore[typeddict-item]
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1 or receipt["contractAddress"] is None:
        raise ChainError(f"deploying {name} failed")
    return str(receipt["contractAddress"])
