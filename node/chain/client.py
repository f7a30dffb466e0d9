"""ChainClient: a typed client for the Registry and Task contracts over web3 (sync API).

Works the same on the embedded chain (web3's EthereumTesterProvider, in process) and on any
JSON-RPC endpoint (anvil, a testnet). Every transaction is signed locally with the node's own
key; nonces are tracked locally (one client per key and process) and re-synced from the chain
after any send error. Before sending, each transaction is simulated (gas estimation), so a
revert surfaces as ChainRevert with the contract's error name without spending a nonce.

A transaction no retry can fix raises a TransactionCannotSucceed: InsufficientFunds (checked
against the balance before anything is sent) or DeterministicRevert (a custom error fixed by
the transaction's own inputs). Every integer a view returns is range-checked
(node/chain/bounds.py; events are checked where they are decoded).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from node.chain.artifacts import (
    abi_function,
    constructor_data,
    decode_log,
    decode_revert,
    load_artifact,
    revert_data_from_exception,
)
from node.chain.bounds import check_view
from node.chain.dev import embedded_tester
from node.chain.errors import ChainError, ChainRevert, InsufficientFunds, revert_error
from node.chain.types import (
    ChainEvent,
    Participant,
    Phase,
    Receipt,
    Role,
    RoundInfo,
    RoundResult,
    TaskParams,
    TaskStatus,
    Termination,
)
from protocol.manifest import WorkerVerdict, manifest_commitment, to_verdicts, update_commitment

PRIORITY_FEE_WEI = 10**9
GAS_HEADROOM = 1.2  # estimates are exact for the simulated state; leave room for drift
GAS_FLOOR = 30_000
EMBEDDED_GAS_LIMIT = 15_000_000  # half of eth-tester's block gas limit
# The events that carry a round's settlement (round is their first indexed argument).
_SETTLEMENT_TOPICS = tuple(
    "0x" + keccak(text=signature).hex()
    for signature in (
        "WorkerSettled(uint256,address,int256,bool,uint256,uint256)",
        "ValidatorSettled(uint256,address,bool,bool,uint256,uint256)",
        "RoundFinalized(uint256,uint256,uint256,uint256,uint256)",
    )
)
_FUNDS_ERRORS = ("insufficient funds", "not enough balance", "sender does not have enough balance")
_NONCE_ERRORS = (
    "nonce too low",
    "nonce too high",
    "invalid transaction nonce",
    "already known",
    "replacement transaction",
)


@dataclass(frozen=True)
class Target:
    """A deployed contract: which artifact's ABI, at which address."""

    contract: str
    address: str


@dataclass(frozen=True)
class Deployment:
    """Addresses of one deployment: the registry plus what it was built from."""

    registry: str
    task_implementation: str
    reward_math: str
    vrf: str
    receipts: tuple[Receipt, ...]


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def _is_funds_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _FUNDS_ERRORS)


class ChainClient:
    def __init__(
        self,
        w3: Web3,
        private_key: str | bytes,
        *,
        registry: str | None = None,
        receipt_timeout: float = 120.0,
        validator_stake: int | None = None,
    ) -> None:
        """`validator_stake`: what join_as_validator stakes when not told (None: each task's
        minimum, its validator_stake parameter)."""
        self.w3 = w3
        self.validator_stake = validator_stake
        self._account = Account.from_key(private_key)
        self.address: ChecksumAddress = self._account.address
        self.chain_id: int = w3.eth.chain_id
        self.receipt_timeout = receipt_timeout
        self.registry_address: str | None = to_checksum_address(registry) if registry else None
        self._nonce: int | None = None
        self._send_lock = threading.Lock()
        self._params_cache: dict[str, TaskParams] = {}

    # ------------------------------------------------------------------ plumbing

    def forget_cached_state(self) -> None:
        """Forget the cached nonce and task parameters: after a chain snapshot revert (a new
        task may then reuse an old address) or when another sender used our key."""
        with self._send_lock:
            self._nonce = None
            self._params_cache.clear()

    @property
    def registry(self) -> Target:
        if self.registry_address is None:
            raise ChainError(
                "no registry address: pass registry=... or call deploy_registry() first"
            )
        return Target("Registry", self.registry_address)

    def task(self, address: str) -> Target:
        return Target("Task", to_checksum_address(address))

    def _fees(self) -> dict[str, int]:
        base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        return {
            "maxFeePerGas": 2 * base_fee + PRIORITY_FEE_WEI,
            "maxPriorityFeePerGas": PRIORITY_FEE_WEI,
        }

    def _simulate(self, label: str, tx: dict[str, Any]) -> int:
        """The gas limit to send `tx` with; a revert becomes ChainRevert (nothing is sent).

        JSON-RPC chains: the node's estimate plus headroom. Embedded chain: py-evm estimates
        by binary search (a dozen executions per call, most of a test's time), so run the
        transaction once to catch reverts and send it with a fixed limit; only gas used is paid.
        """
        tester = embedded_tester(self.w3)
        try:
            if tester is not None:
                tester.call({k: tx[k] for k in ("from", "to", "data", "value") if k in tx})
                return EMBEDDED_GAS_LIMIT
            estimate = int(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
            return max(GAS_FLOOR, int(estimate * GAS_HEADROOM))
        except Exception as exc:
            if _is_funds_error(exc):
                raise self._insufficient(label, int(tx.get("value", 0))) from exc
            data = self._embedded_revert_data(tx) or revert_data_from_exception(exc)
            if data is None:
                raise ChainError(f"{label}: could not simulate the transaction: {exc}") from exc
            name, args = decode_revert(data)
            raise revert_error(label, name, args, data) from None

    def _insufficient(self, label: str, needed: int) -> InsufficientFunds:
        return InsufficientFunds(label, self.address, needed, self.balance())

    def _check_funds(self, label: str, tx: dict[str, Any]) -> None:
        """Refuse a transaction our balance cannot pay for (EIP-1559: value + gas limit x max
        fee): the chain would refuse it too, and no retry helps until someone funds us."""
        needed = int(tx.get("value", 0)) + int(tx["gas"]) * int(tx["maxFeePerGas"])
        if self.balance() < needed:
            raise self._insufficient(label, needed)

    def _send(self, label: str, tx: dict[str, Any]) -> Receipt:
        """Simulate, sign with our key, send with our nonce, wait for the receipt."""
        tx = {"from": self.address, "chainId": self.chain_id, "value": 0, **tx}
        fees = self._fees()
        if embedded_tester(self.w3) is not None:
            # The embedded chain simulates without a balance check and sends with a fixed limit.
            self._check_funds(label, {**tx, "gas": EMBEDDED_GAS_LIMIT, **fees})
        elif int(tx["value"]) > self.balance():
            raise self._insufficient(label, int(tx["value"]))
        gas = self._simulate(label, tx)
        tx = {**tx, "gas": gas, **fees}
        self._check_funds(label, tx)
        with self._send_lock:
            tx_hash = self._sign_and_send(label, tx)
        try:
            raw = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=self.receipt_timeout
            )
        except Exception as exc:
            raise ChainError(
                f"{label}: no receipt for {tx_hash.hex()} after {self.receipt_timeout}s: {exc}"
            ) from exc
        if raw["status"] != 1:
            self._explain_failure(label, tx, raw["blockNumber"])
        return Receipt(
            function=label,
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
            block_number=raw["blockNumber"],
            gas_used=raw["gasUsed"],
            fee_wei=raw["gasUsed"] * raw["effectiveGasPrice"],
            contract_address=raw.get("contractAddress"),
            events=tuple(self._decode_logs(raw["logs"])),
        )

    def _sign_and_send(self, label: str, tx: dict[str, Any]) -> bytes:
        for attempt in (1, 2):
            if self._nonce is None:
                self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
            signed = self._account.sign_transaction({**tx, "nonce": self._nonce})
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:
                self._nonce = None  # re-sync from the chain on the next send
                if attempt == 1 and any(marker in str(exc).lower() for marker in _NONCE_ERRORS):
                    continue  # the chain refused the nonce, so nothing was sent: safe to retry
                if _is_funds_error(exc):
                    raise self._insufficient(label, int(tx["value"]) + tx["gas"] * tx["maxFeePerGas"]) from exc
                raise ChainError(f"{label}: sending failed: {exc}") from exc
            self._nonce += 1
            return bytes(tx_hash)
        raise AssertionError("unreachable")

    def _explain_failure(self, label: str, tx: dict[str, Any], block_number: int) -> None:
        """A mined transaction failed although its simulation passed: the state or the time
        moved in between (a deadline passed, another party acted first). Replay it on its
        block (same timestamp) and on the one before to recover the revert reason."""
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        for block in (block_number, max(block_number - 1, 0)):
            try:
                self.w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
            except Exception as exc:
                data = revert_data_from_exception(exc)
                if data is not None:
                    name, args = decode_revert(data)
                    raise revert_error(label, name, args, data) from None
        raise ChainError(
            f"{label}: transaction reverted in block {block_number}; replay gave no reason"
        )

    def _decode_logs(self, logs: Any) -> list[ChainEvent]:
        events = []
        for log in logs:
            decoded = decode_log([bytes(t) for t in log["topics"]], bytes(log["data"]))
            if decoded is None:
                continue
            name, args = decoded
            events.append(
                ChainEvent(
                    name=name,
                    address=to_checksum_address(log["address"]),
                    args=args,
                    block_number=log["blockNumber"],
                    log_index=log["logIndex"],
                    tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                )
            )
        return events

    def _transact(self, target: Target, function: str, *args: Any, value: int = 0) -> Receipt:
        data = abi_function(target.contract, function).encode(args)
        return self._send(function, {"to": target.address, "data": data, "value": value})

    def _call(self, target: Target, function: str, *args: Any) -> Any:
        abi = abi_function(target.contract, function)
        tx = {"from": self.address, "to": target.address, "data": abi.encode(args)}
        try:
            return abi.decode(self.w3.eth.call(tx))  # type: ignore[arg-type]
        except Exception as exc:
            data = self._embedded_revert_data(tx) or revert_data_from_exception(exc)
            if data is None:
                raise ChainError(f"{function}: call failed: {exc}") from exc
            name, decoded = decode_revert(data)
            raise ChainRevert(function, name, decoded, data) from None

    def _embedded_revert_data(self, tx: dict[str, Any]) -> bytes | None:
        """Exact revert data on the embedded chain. web3's eth-tester provider decodes any revert
        whose payload looks like one string as Error(string), dropping the custom error's
        selector (InvalidParameter("rounds") would come back as a bare "rounds"), so re-run
        the transaction on eth-tester's own API, which raises the raw bytes."""
        tester = embedded_tester(self.w3)
        if tester is None:
            return None
        fields = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            tester.estimate_gas(fields)
        except TransactionFailed as exc:
            reason = exc.args[0] if exc.args else None
            if isinstance(reason, Exception) and reason.args:
                reason = reason.args[0]
            return bytes(reason) if isinstance(reason, bytes | bytearray) else None
        return None

    def deploy(
        self,
        name: str,
        *args: Any,
        libraries: dict[str, str] | None = None,
        value: int = 0,
    ) -> Receipt:
        """Deploy the artifact `name` (libraries linked by name); the receipt has its address."""
        artifact = load_artifact(name)
        data = constructor_data(artifact, artifact.linked_bytecode(libraries or {}), args)
        receipt = self._send(f"deploy {name}", {"data": data, "value": value})
        if receipt.contract_address is None:
            raise ChainError(f"deploying {name} produced no contract address")
        return receipt

    def transact(
        self, contract_name: str, address: str, function: str, *args: Any, value: int = 0
    ) -> Receipt:
        """Send any function of any of our artifacts (tests, tools)."""
        target = Target(contract_name, to_checksum_address(address))
        return self._transact(target, function, *args, value=value)

    def call(self, contract_name: str, address: str, function: str, *args: Any) -> Any:
        """Call any view of any of our artifacts (tests, tools)."""
        return self._call(Target(contract_name, to_checksum_address(address)), function, *args)

    # ------------------------------------------------------------------ accounts and deployment

    def balance(self, address: str | None = None) -> int:
        return int(self.w3.eth.get_balance(to_checksum_address(address or self.address)))

    def send_value(self, to: str, amount: int) -> Receipt:
        return self._send("transfer", {"to": to_checksum_address(to), "value": amount})

    def deploy_registry(self) -> Deployment:
        """Deploy the libraries RewardMath and VRF, the Task implementation (linked to both) and
        the Registry; use it."""
        math = self.deploy("RewardMath")
        vrf = self.deploy("VRF")
        assert math.contract_address is not None and vrf.contract_address is not None
        implementation = self.deploy(
            "Task", libraries={"RewardMath": math.contract_address, "VRF": vrf.contract_address}
        )
        assert implementation.contract_address is not None
        registry = self.deploy("Registry", implementation.contract_address)
        assert registry.contract_address is not None
        self.registry_address = registry.contract_address
        return Deployment(
            registry=registry.contract_address,
            task_implementation=implementation.contract_address,
            reward_math=math.contract_address,
            vrf=vrf.contract_address,
            receipts=(math, vrf, implementation, registry),
        )

    # ------------------------------------------------------------------ registry

    def register(
        self, peer_id: bytes, encryption_key: bytes, vrf_modulus: bytes, vrf_proof: bytes
    ) -> Receipt:
        """Register our peer ID, X25519 key and VRF key: `vrf_modulus` is the 256-byte modulus
        (e = 65537) and `vrf_proof` its certificate bound to this client's address,
        protocol.keycert.certify(key, address bytes); the registry reverts otherwise."""
        if len(encryption_key) != 32:
            raise ValueError("encryption_key must be the 32-byte X25519 public key")
        return self._transact(
            self.registry, "register", peer_id, encryption_key, vrf_modulus, vrf_proof
        )

    def is_registered(self, address: str | None = None) -> bool:
        return bool(self._call(self.registry, "isRegistered", address or self.address))

    def participant(self, address: str) -> Participant:
        peer_id, key, modulus, at = self._call(self.registry, "participant", address)
        check_view("participant", registered_at=at)
        return Participant(
            to_checksum_address(address), bytes(peer_id), bytes(key), bytes(modulus), at
        )

    def account_of_peer(self, peer_id: bytes) -> str | None:
        found = self._call(self.registry, "accountOfPeer", peer_id)
        return None if int(found, 16) == 0 else to_checksum_address(found)

    def validate_params(self, params: TaskParams) -> None:
        """Raise ChainRevert(InvalidParameter(name)) if the registry would refuse `params`."""
        self._call(self.registry, "validateParams", params.to_abi())

    def create_task(self, params: TaskParams) -> tuple[str, Receipt]:
        """Create a task escrowing exactly params.escrow; returns (task address, receipt)."""
        receipt = self._transact(self.registry, "createTask", params.to_abi(), value=params.escrow)
        return to_checksum_address(receipt.event("TaskCreated").args["task"]), receipt

    def task_count(self) -> int:
        return self._int_view(self.registry, "taskCount", "count")

    def task_at(self, index: int) -> str:
        return to_checksum_address(self._call(self.registry, "taskAt", index))

    def open_tasks(self, limit: int = 100) -> list[str]:
        return [to_checksum_address(a) for a in self._call(self.registry, "openTasks", limit)]

    # ------------------------------------------------------------------ task: recruiting

    def join_as_worker(self, task: str, deposit: int | None = None) -> Receipt:
        """Join with the task's worker deposit (read from the task unless given)."""
        amount = self.task_params(task).worker_deposit if deposit is None else deposit
        return self._transact(self.task(task), "joinAsWorker", value=amount)

    def join_as_validator(self, task: str, stake: int | None = None) -> Receipt:
        """Join with `stake` wei, else the client's own validator_stake, else the task's minimum
        (its validator_stake parameter); the task accepts any stake in [validator_stake,
        MAX_STAKE] (StakeOutOfRange otherwise) and sortition weighs this validator by it."""
        amount = stake if stake is not None else self.validator_stake
        if amount is None:
            amount = self.task_params(task).validator_stake
        return self._transact(self.task(task), "joinAsValidator", value=amount)

    def leave_task(self, task: str) -> Receipt:
        return self._transact(self.task(task), "leaveTask")

    def start(self, task: str, validation_set_cid: str) -> Receipt:
        return self._transact(self.task(task), "start", validation_set_cid)

    def cancel(self, task: str) -> Receipt:
        return self._transact(self.task(task), "cancel")

    # ------------------------------------------------------------------ task: rounds

    def submit_update(self, task: str, round: int, cid: str, n_samples: int) -> Receipt:
        commitment = update_commitment(cid, _address_bytes(self.address))
        return self.submit_update_commitment(task, round, commitment, n_samples)

    def submit_update_commitment(
        self, task: str, round: int, commitment: bytes, n_samples: int
    ) -> Receipt:
        return self._transact(self.task(task), "submitUpdate", round, commitment, n_samples)

    def manifest_commitment(
        self,
        task: str,
        round: int,
        workers: Sequence[str],
        scores: Sequence[int],
        verdicts: Sequence[WorkerVerdict | bool],
        global_accuracy: int,
        salt: bytes,
    ) -> bytes:
        """The commitment this client (as validator) commits for the given manifest; a bool
        verdict is ACCEPT (True) or REJECT (False)."""
        return manifest_commitment(
            _address_bytes(task),
            round,
            _address_bytes(self.address),
            [_address_bytes(w) for w in workers],
            list(scores),
            verdicts,
            global_accuracy,
            salt,
        )

    def commit_manifest(
        self, task: str, round: int, commitment: bytes, vrf_proof: bytes
    ) -> Receipt:
        """Commit as a committee member: `vrf_proof` is our VRF proof for the round,
        protocol.sortition.committee_proof(key, round seed, round).proof, selected under the
        round's stake snapshot (round_info().seed and .total_stake)."""
        return self._transact(self.task(task), "commitManifest", round, commitment, vrf_proof)

    def end_commit_phase(
        self, task: str, round: int, unseated: Sequence[tuple[str, bytes]]
    ) -> Receipt:
        """End the round's commit phase once every validator has committed or is in
        `unseated` with its VRF proof for the round showing it is not seated
        (Task.endCommitPhase; the contract wants them in ascending address order)."""
        ordered = sorted(unseated, key=lambda entry: int(entry[0], 16))
        return self._transact(
            self.task(task), "endCommitPhase", round,
            [to_checksum_address(a) for a, _ in ordered], [proof for _, proof in ordered],
        )  # fmt: skip

    def reveal_manifest(
        self,
        task: str,
        round: int,
        workers: Sequence[str],
        scores: Sequence[int],
        verdicts: Sequence[WorkerVerdict | bool],
        global_accuracy: int,
        salt: bytes,
    ) -> Receipt:
        """Open our commitment: one verdict per worker (protocol.manifest.WorkerVerdict:
        REJECT, ACCEPT, UNAVAILABLE; a bool is ACCEPT or REJECT), as committed."""
        checksummed = [to_checksum_address(w) for w in workers]
        return self._transact(
            self.task(task),
            "revealManifest",
            round,
            checksummed,
            list(scores),
            [int(v) for v in to_verdicts(verdicts)],
            global_accuracy,
            salt,
        )

    def finalize_round(self, task: str, round: int) -> Receipt:
        return self._transact(self.task(task), "finalizeRound", round)

    def stop_training(self, task: str) -> Receipt:
        return self._transact(self.task(task), "stopTraining")

    def reclaim_escrow(self, task: str, amount: int) -> Receipt:
        return self._transact(self.task(task), "reclaimEscrow", amount)

    def withdraw(self, task: str) -> Receipt:
        return self._transact(self.task(task), "withdraw")

    # ------------------------------------------------------------------ task: views

    def task_params(self, task: str) -> TaskParams:
        """A task's parameters (immutable once created, so cached per client)."""
        key = to_checksum_address(task)
        if key not in self._params_cache:
            raw = tuple(self._call(self.task(task), "params"))
            check_view("params", **{f.name: v for f, v in zip(fields(TaskParams), raw, strict=True)})
            self._params_cache[key] = TaskParams.from_abi(raw)
        return self._params_cache[key]

    def _int_view(self, target: Target, function: str, field: str, *args: Any) -> int:
        """An integer view, range-checked (node/chain/bounds.py) under the name `field`."""
        value = int(self._call(target, function, *args))
        check_view(function, **{field: value})
        return value

    def requester(self, task: str) -> str:
        return to_checksum_address(self._call(self.task(task), "requester"))

    def status(self, task: str) -> TaskStatus:
        return TaskStatus(self._int_view(self.task(task), "status", "status"))

    def termination(self, task: str) -> Termination:
        return Termination(self._int_view(self.task(task), "termination", "termination"))

    def phase(self, task: str) -> Phase:
        return Phase(self._int_view(self.task(task), "phase", "phase"))

    def current_round(self, task: str) -> int:
        return self._int_view(self.task(task), "currentRound", "round")

    def params_hash(self, task: str) -> bytes:
        return bytes(self._call(self.task(task), "paramsHash"))

    def validation_set_cid(self, task: str) -> str:
        return str(self._call(self.task(task), "validationSetCid"))

    def escrow(self, task: str) -> int:
        return self._int_view(self.task(task), "escrow", "escrow")

    def books(self, task: str) -> tuple[int, int, int]:
        """(escrow, total locked deposits, total credited balances); their sum always equals
        the task's ether balance."""
        escrow, locked, credited = self._call(self.task(task), "books")
        check_view("books", escrow=escrow, locked=locked, credited=credited)
        return int(escrow), int(locked), int(credited)

    def total_stake(self, task: str) -> int:
        return self._int_view(self.task(task), "totalStake", "total_stake")

    def members(self, task: str) -> tuple[list[str], list[str]]:
        workers, validators = self._call(self.task(task), "members")
        return [to_checksum_address(a) for a in workers], [
            to_checksum_address(a) for a in validators
        ]

    def role_of(self, task: str, address: str | None = None) -> Role:
        return Role(self._int_view(self.task(task), "roleOf", "role", address or self.address))

    def locked_deposit(self, task: str, address: str | None = None) -> int:
        """A member's deposit or stake minus slashes: a validator's weight in the sortition
        of every round it is constant in (slashes happen at finalize)."""
        return self._int_view(self.task(task), "lockedDeposit", "amount", address or self.address)

    def stake_of(self, task: str, address: str | None = None) -> int:
        """A validator's stake as it joined (0 for anyone else): the base of its slashes."""
        return self._int_view(self.task(task), "stakeOf", "amount", address or self.address)

    def credited_balance(self, task: str, address: str | None = None) -> int:
        """Credited and not yet withdrawn (rewards, refunds), excluding the locked deposit."""
        return self._int_view(self.task(task), "balanceOf", "amount", address or self.address)

    def withdrawable(self, task: str, address: str | None = None) -> int:
        return self._int_view(self.task(task), "withdrawable", "amount", address or self.address)

    def round_info(self, task: str, round: int) -> RoundInfo:
        raw = tuple(self._call(self.task(task), "roundInfo", round))
        check_view("roundInfo", **{f.name: v for f, v in zip(fields(RoundInfo), raw, strict=True)})
        return RoundInfo.from_abi(raw)

    def round_opening_block(self, task: str, round: int) -> int:
        """The first block whose timestamp is at least the round's training start: the block
        that opened the round, or an earlier one of the same second (block timestamps never
        decrease). Found by bisecting block headers, which every node serves (no old state or
        log index needed); the head when the round has not started."""
        start = self.round_info(task, round).training_start
        head = int(self.w3.eth.block_number)
        if start == 0:
            return head
        low, high = 0, head
        while low < high:
            middle = (low + high) // 2
            if int(self.w3.eth.get_block(middle)["timestamp"]) >= start:
                high = middle
            else:
                low = middle + 1
        return low

    def round_result(self, task: str, round: int, from_block: int | None = None) -> RoundResult:
        """The outcome of a round, from its settlement events (WorkerSettled, ValidatorSettled,
        RoundFinalized): the contract keeps no per-member outcome in storage, so that settling
        costs a few thousand gas per member. Before finalization every outcome is zero.
        `from_block`: where to start looking (the finalizeRound's block, when known); by
        default the round's opening block, since a log query's cost grows with the blocks it
        spans and providers refuse long spans."""
        if from_block is None:
            from_block = self.round_opening_block(task, round)
        workers = tuple(self.submitted_workers(task, round))
        validators = tuple(
            to_checksum_address(a) for a in self._call(self.task(task), "committedValidators", round)
        )
        settled: dict[str, dict[str, tuple[Any, ...]]] = {
            "WorkerSettled": {w: (0, False, 0, 0) for w in workers},
            "ValidatorSettled": {v: (False, False, 0, 0) for v in validators},
        }
        totals = (0, 0, 0)
        topic_round = round.to_bytes(32, "big")
        logs = self.w3.eth.get_logs(
            {
                "address": to_checksum_address(task),
                "fromBlock": from_block,
                "toBlock": "latest",
                "topics": [list(_SETTLEMENT_TOPICS), "0x" + topic_round.hex()],
            }
        )
        for event in self._decode_logs(logs):
            args = event.args
            if event.name == "WorkerSettled":
                member = to_checksum_address(args["worker"])
                outcome: tuple[Any, ...] = (
                    args["consensusScore"], args["accepted"], args["payout"], args["slash"]
                )
            elif event.name == "ValidatorSettled":
                member = to_checksum_address(args["validator"])
                outcome = (args["revealed"], args["agreed"], args["payout"], args["slash"])
            else:
                totals = (args["reveals"], args["consensusAccuracy"], args["returnedToEscrow"])
                continue
            if member not in settled[event.name]:
                raise ChainError(f"{event.name} in round {round} for {member}, not a member of it")
            settled[event.name][member] = outcome
        w = [settled["WorkerSettled"][a] for a in workers]
        v = [settled["ValidatorSettled"][a] for a in validators]
        return RoundResult(
            finalized=self.round_info(task, round).finalized,
            workers=workers,
            consensus_scores=tuple(o[0] for o in w),
            accepted=tuple(o[1] for o in w),
            worker_payouts=tuple(o[2] for o in w),
            worker_slashes=tuple(o[3] for o in w),
            validators=validators,
            revealed=tuple(o[0] for o in v),
            agreed=tuple(o[1] for o in v),
            validator_payouts=tuple(o[2] for o in v),
            validator_slashes=tuple(o[3] for o in v),
            reveals=totals[0],
            consensus_accuracy=totals[1],
            returned_to_escrow=totals[2],
        )

    def worker_selected(self, task: str, round: int, worker: str | None = None) -> bool:
        """Whether `worker` (default: us) is drawn to train in `round` (Params.workersPerRound;
        protocol.sortition.worker_selected is the same rule)."""
        return bool(self._call(self.task(task), "workerSelected", round, worker or self.address))

    def submitted_workers(self, task: str, round: int) -> list[str]:
        found = self._call(self.task(task), "submittedWorkers", round)
        return [to_checksum_address(a) for a in found]

    def update_commitment_of(self, task: str, round: int, worker: str) -> tuple[bytes, int]:
        commitment, n_samples = self._call(self.task(task), "updateCommitment", round, worker)
        check_view("updateCommitment", n_samples=n_samples)
        return bytes(commitment), int(n_samples)

    def latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])
