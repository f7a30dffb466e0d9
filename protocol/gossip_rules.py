"""Which gossip messages a node accepts: one pure function, ``validate(incoming, view)``.

The rules, in the order they are checked (the first one broken decides):

1. the topic is one of the task's three kinds;
2. size: at most ``MAX_MESSAGE_SIZE`` bytes;
3. schema: canonical msgpack of a known message type (``protocol.messages``), of the type
   the topic carries;
4. this task's chain id and task address;
5. registration: the libp2p signer (strict signing proved it holds the key of ``from``) is a
   member of the task;
6. signer binding: the member's registered address is the message's worker/validator;
7. role: the member's role may send on this topic (:data:`SENDER_ROLES`: announcements come
   from workers, committee proofs and scores from validators; the requester sends none);
8. round: within ``round_window`` of the view's round. Ahead of it: rejected (the node asks
   the chain first whether its own view lags); behind it: ignored without penalty, since an
   honest forwarder a round behind still relays it;
9. a :class:`~protocol.messages.KeyRelease` only once its round's training phase has closed
   (an earlier round, or ``view.training_over(round)``): before that it would let another
   worker read, copy and submit the update as its own. Too early is ignored (retried once
   our view moves on), not rejected: the sender's view of the chain may be a block ahead;
10. an :class:`~protocol.messages.UnseatedProof` only for our round or a later one: one for
   a round before ours can no longer end anything, so it is ignored (without penalty)
   rather than checked against the chain.

The verdict mirrors gossipsub's three results: :class:`Accept`, :class:`Reject` (drop, never
forward, charge the forwarder) and :class:`Ignore` (drop without charging anyone). Rules
that need the chain (a committee seat's VRF proof, or an unseated validator's) run after this,
in node/.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

from protocol.errors import MessageError
from protocol.messages import (
    MAX_MESSAGE_SIZE,
    TOPIC_KINDS,
    CommitteeProof,
    EvaluationScores,
    KeyRelease,
    Message,
    ModelAnnouncement,
    UnseatedProof,
    decode_message,
)
from protocol.state.records import Role

__all__ = [
    "ADDRESS_MISMATCH",
    "MALFORMED",
    "OVERSIZED",
    "SENDER_ROLES",
    "STALE",
    "TOO_EARLY",
    "UNKNOWN_KIND",
    "UNREGISTERED",
    "WRONG_CHAIN",
    "WRONG_ROLE",
    "WRONG_ROUND",
    "WRONG_TASK",
    "WRONG_TOPIC",
    "Accept",
    "GossipView",
    "Ignore",
    "Incoming",
    "Member",
    "Reject",
    "Verdict",
    "member_roles",
    "update_readers",
    "signer_address_of",
    "validate",
]

# Rule names: the first words of every verdict's text, and the keys nodes count them by.
UNKNOWN_KIND = "unknown topic kind"
OVERSIZED = "oversized"
MALFORMED = "malformed"
WRONG_TOPIC = "wrong topic"
WRONG_CHAIN = "wrong chain"
WRONG_TASK = "wrong task"
UNREGISTERED = "unregistered signer"
ADDRESS_MISMATCH = "address mismatch"
WRONG_ROLE = "wrong role"
WRONG_ROUND = "wrong round"
TOO_EARLY = "too early"
STALE = "stale"

SENDER_ROLES: dict[str, frozenset[Role]] = {
    "models": frozenset({Role.WORKER}),
    "committee": frozenset({Role.VALIDATOR}),  # seated (CommitteeProof) or not (UnseatedProof)
    "scores": frozenset({Role.VALIDATOR}),
}
"""Who may send on each topic kind."""


@dataclass(frozen=True)
class Member:
    """What the view knows of a signer: its registered chain address and its role (None when
    the view does not track roles; the role rule is then skipped)."""

    address: bytes
    role: Role | None = None


@dataclass(frozen=True)
class GossipView:
    """The node's view of the task that validation needs, as plain values."""

    chain_id: int
    task: bytes
    current_round: int
    round_window: int
    member: Callable[[Hashable], Member | None]
    """The member a signer (libp2p peer id) is registered as, or None."""
    training_over: Callable[[int], bool] | None = None
    """Whether a round's training phase has closed on chain as far as we know (None: we
    cannot tell, so no key release of the current round is accepted yet)."""


@dataclass(frozen=True)
class Incoming:
    """A gossip message as it arrived: its bytes, the topic kind it came on, its signer."""

    data: bytes
    kind: str
    signer: Hashable


@dataclass(frozen=True)
class Accept:
    message: Message
    signer_address: bytes


@dataclass(frozen=True)
class Reject:
    """Invalid whatever the view: drop it, never forward it, charge the forwarder.

    ``message`` is the decoded message when decoding got that far (a round ahead of ours
    carries it, so the node can ask the chain whether that round is real)."""

    rule: str
    detail: str
    message: Message | None = None

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass(frozen=True)
class Ignore:
    """Not judged: drop it without charging anyone. ``retry``: the view may catch up."""

    rule: str
    detail: str
    retry: bool

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


Verdict = Accept | Reject | Ignore


def signer_address_of(message: Message) -> bytes:
    """The address that must have signed ``message``: its worker's or validator's."""
    if isinstance(message, ModelAnnouncement | KeyRelease):
        return message.worker
    if isinstance(message, CommitteeProof | UnseatedProof | EvaluationScores):
        return message.validator
    raise MessageError(f"not a gossip message: {type(message).__name__}")


def validate(incoming: Incoming, view: GossipView) -> Verdict:
    """The verdict on ``incoming`` under ``view`` (rules in the module doc)."""
    kind, data = incoming.kind, incoming.data
    if kind not in SENDER_ROLES:
        return Reject(UNKNOWN_KIND, f"{kind!r}; expected one of {TOPIC_KINDS}")
    if len(data) > MAX_MESSAGE_SIZE:
        return Reject(OVERSIZED, f"{len(data)} bytes > {MAX_MESSAGE_SIZE}")
    try:
        message = decode_message(data)
    except MessageError as exc:
        return Reject(MALFORMED, str(exc))
    if message.TOPIC_KIND != kind:
        return Reject(
            WRONG_TOPIC,
            f"a {type(message).__name__} belongs on {message.TOPIC_KIND}, not {kind}",
        )
    if message.chain_id != view.chain_id:
        return Reject(WRONG_CHAIN, f"{message.chain_id}, this task is on {view.chain_id}")
    if message.task != view.task:
        return Reject(WRONG_TASK, f"0x{message.task.hex()}, expected 0x{view.task.hex()}")
    member = view.member(incoming.signer)
    if member is None:
        return Reject(UNREGISTERED, f"peer {incoming.signer} is not registered for the task")
    claimed = signer_address_of(message)
    if member.address != claimed:
        return Reject(
            ADDRESS_MISMATCH,
            f"peer {incoming.signer} is registered as 0x{member.address.hex()}, the message "
            f"claims 0x{claimed.hex()}",
        )
    allowed = SENDER_ROLES[kind]
    if member.role is not None and member.role not in allowed:
        return Reject(
            WRONG_ROLE,
            f"0x{member.address.hex()} is a {member.role}; only "
            f"{' or '.join(sorted(allowed))}s send {type(message).__name__} on {kind}",
        )
    current, window = view.current_round, view.round_window
    text = f"{message.round}, ours is {current} (window ±{window})"
    if message.round > current + window:
        return Reject(WRONG_ROUND, text, message)
    if message.round < current - window:
        return Ignore(WRONG_ROUND, f"{text}; stale", retry=False)
    if isinstance(message, KeyRelease) and message.round >= current:
        over = view.training_over
        if over is None or not over(message.round):
            return Ignore(
                TOO_EARLY,
                f"a key release for round {message.round} before its training phase closed",
                retry=True,
            )
    if isinstance(message, UnseatedProof) and message.round < current:
        return Ignore(
            STALE, f"an unseated proof for round {message.round}, ours is {current}", retry=False
        )
    return Accept(message, member.address)


def member_roles(
    workers: Iterable[bytes], validators: Iterable[bytes], requester: bytes | None
) -> dict[bytes, Role]:
    """Role by address, from the task's member lists. The contract gives a member one role;
    a requester that also joined keeps its member role, which is what it may gossip as."""
    roles: dict[bytes, Role] = {}
    if requester is not None:
        roles[requester] = Role.REQUESTER
    roles.update((address, Role.WORKER) for address in workers)
    roles.update((address, Role.VALIDATOR) for address in validators)
    return roles


UPDATE_READER_ROLES = frozenset({Role.REQUESTER, Role.VALIDATOR})
"""Who may read a worker's update while its round's training phase is open (besides the
worker): the requester and every validator of the task. Not only the round's committee:
its seats are drawn by VRF and known to others only as proofs arrive (for sure only when
their holders commit, after the training phase), while the update's CID, hence its
recipients, is fixed on chain during training; a seated validator left out could not
evaluate it. A validator gains nothing from copying, since it cannot submit updates."""


def update_readers(
    encryption_keys: Mapping[bytes, bytes], roles: Mapping[bytes, Role], me: bytes
) -> list[bytes]:
    """The X25519 keys a worker `me` seals its update for while training is open: its
    own, the requester's and the validators', never another worker's. `encryption_keys`
    and `roles` are by member address; a member whose role is unknown is left out."""
    return [
        key
        for member, key in encryption_keys.items()
        if member == me or roles.get(member) in UPDATE_READER_ROLES
    ]
