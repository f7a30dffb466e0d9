"""Between the machines and the gossip layer: Publish actions to protocol.messages
messages, and received messages to events."""

from __future__ import annotations

from protocol.messages import (
    CommitteeProof,
    EvaluationScores,
    KeyRelease,
    Message,
    ModelAnnouncement,
    UnseatedProof,
)
from protocol.state.actions import (
    Publish,
    PublishAnnouncement,
    PublishCommitteeProof,
    PublishKeyRelease,
    PublishScores,
    PublishUnseatedProof,
)
from protocol.state.events import AnnouncementReceived, KeyReleaseReceived, UnseatedProofReceived


def wire_message(publish: Publish, chain_id: int, task: bytes, sender: bytes) -> Message:
    """The signed-to-be gossip message for a Publish action of `sender` (our address)."""
    if isinstance(publish, PublishAnnouncement):
        return ModelAnnouncement(
            chain_id=chain_id,
            task=task,
            round=publish.round,
            worker=sender,
            cid=publish.cid,
            n_samples=publish.n_samples,
        )
    if isinstance(publish, PublishKeyRelease):
        return KeyRelease(
            chain_id=chain_id,
            task=task,
            round=publish.round,
            worker=sender,
            cid=publish.cid,
            sealed_key=publish.sealed_key,
        )
    if isinstance(publish, PublishCommitteeProof | PublishUnseatedProof):
        seated = isinstance(publish, PublishCommitteeProof)
        return (CommitteeProof if seated else UnseatedProof)(
            chain_id=chain_id,
            task=task,
            round=publish.round,
            validator=sender,
            vrf_proof=publish.vrf_proof,
        )
    if isinstance(publish, PublishScores):
        manifest = publish.manifest
        return EvaluationScores(
            chain_id=chain_id,
            task=task,
            round=publish.round,
            validator=sender,
            workers=manifest.workers,
            scores=manifest.scores,
            accepts=manifest.accepts,
            global_accuracy=manifest.global_accuracy,
            salt=manifest.salt,
        )
    raise TypeError(f"no gossip message for {type(publish).__name__}")


def announcement_received(message: ModelAnnouncement) -> AnnouncementReceived:
    """The event for a validated announcement from the models topic."""
    return AnnouncementReceived(message.round, message.worker, message.cid, message.n_samples)


def key_release_received(message: KeyRelease) -> KeyReleaseReceived:
    """The event for a validated key release from the models topic."""
    return KeyReleaseReceived(message.round, message.worker, message.cid, message.sealed_key)


def unseated_proof_received(message: UnseatedProof) -> UnseatedProofReceived:
    """The event for an unseated proof from the committee topic whose VRF check passed."""
    return UnseatedProofReceived(message.round, message.validator, message.vrf_proof)
