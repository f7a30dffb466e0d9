"""The two on-chain commitments the machines compute, as injectable callables.

Defaults call `protocol.manifest` (the exact Python twin of the contract's keccak);
tests or other chains may inject their own.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.state.records import Manifest

UpdateCommitment = Callable[[str, bytes], bytes]
"""(cid, worker) -> keccak256(abi.encodePacked(cid, worker))"""

ManifestCommitment = Callable[[bytes, int, bytes, Manifest], bytes]
"""(task, round, validator, manifest) -> the commitManifest commitment"""


def default_update_commitment(cid: str, worker: bytes) -> bytes:
    # Imported on use so the state package imports without protocol.manifest.
    from protocol.manifest import update_commitment

    return bytes(update_commitment(cid, worker))


def default_manifest_commitment(task: bytes, round: int, validator: bytes, m: Manifest) -> bytes:
    from protocol.manifest import manifest_commitment

    return bytes(
        manifest_commitment(
            task, round, validator, m.workers, m.scores, m.verdicts, m.global_accuracy, m.salt
        )
    )
