"""Every transaction a machine asks for goes out through the chain client's typed method
(the ones the contract tests drive), with the machine's arguments in web3's shapes."""

from __future__ import annotations

from typing import Any

import pytest

from node.chain import ChainError
from node.runtime.chainside import checksum
from node.runtime.effects_chain import send_task_tx
from protocol.manifest import WorkerVerdict
from protocol.state.actions import SendTx
from protocol.state.records import Role, TxKind

TASK = checksum(b"\xaa" * 20)
WORKERS = (b"\x10" * 20, b"\x11" * 20)


class RecordingClient:
    """Stands in for ChainClient: records which typed method was called with what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        if name == "transact":
            raise AssertionError("the generic string-keyed transact is not a production path")

        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


@pytest.mark.parametrize(
    ("tx", "method", "args"),
    [
        (SendTx(TxKind.JOIN_TASK, 0, (b"\xaa" * 20, Role.WORKER)), "join_as_worker", (TASK,)),
        (SendTx(TxKind.JOIN_TASK, 0, (b"\xaa" * 20, Role.VALIDATOR)), "join_as_validator", (TASK,)),
        (SendTx(TxKind.START_TASK, 0, ("bafyvalidation",)), "start", (TASK, "bafyvalidation")),
        (SendTx(TxKind.CANCEL_TASK, 0), "cancel", (TASK,)),
        (
            SendTx(TxKind.SUBMIT_UPDATE, 1, (1, b"c" * 32, 100)),
            "submit_update_commitment",
            (TASK, 1, b"c" * 32, 100),
        ),
        (
            SendTx(TxKind.COMMIT_MANIFEST, 1, (1, b"c" * 32, b"proof")),
            "commit_manifest",
            (TASK, 1, b"c" * 32, b"proof"),
        ),
        (
            SendTx(TxKind.REVEAL_MANIFEST, 1, (1, WORKERS, (5, 0), (1, 2), 900, b"s" * 32)),
            "reveal_manifest",
            (
                TASK, 1, [checksum(w) for w in WORKERS], [5, 0],
                [WorkerVerdict.ACCEPT, WorkerVerdict.UNAVAILABLE], 900, b"s" * 32,
            ),
        ),
        (SendTx(TxKind.FINALIZE_ROUND, 1, (1,)), "finalize_round", (TASK, 1)),
    ],
)
def test_each_machine_transaction_uses_its_typed_client_method(
    tx: SendTx, method: str, args: tuple[Any, ...]
) -> None:
    client = RecordingClient()
    send_task_tx(client, TASK, tx)  # type: ignore[arg-type]
    assert client.calls == [(method, args)]


def test_a_task_transaction_before_any_task_is_refused_by_name() -> None:
    with pytest.raises(ChainError, match="submitUpdate needs a task"):
        send_task_tx(RecordingClient(), None, SendTx(TxKind.SUBMIT_UPDATE, 1, (1, b"", 1)))  # type: ignore[arg-type]
