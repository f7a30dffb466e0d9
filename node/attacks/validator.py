"""Validator attacks: what a dishonest committee member reveals, each a small pure function
over a manifest's columns (workers in on-chain order, fixed-point scores, accept flags).

| kind | what is revealed |
|---|---|
| honest | its evaluation |
| lying | every score turned upside down (SCALE/10 - s), every accept flipped |
| lazy | nothing: it commits and never reveals (the runtime drops the reveal) |
| colluding | the colluders' shared altered manifest: the favoured worker scored SCALE and accepted, every other worker scored 0 and rejected |
| copycat | another member's manifest revealed earlier in the round, copied |

Colluders need no channel: they agree beforehand on the rule `favoured_worker` (the
lowest address among the round's submitters, standing for their accomplice), so every
colluder reveals the same columns.

The copycat is what commit-reveal exists to stop: a member commits to
keccak(task, round, its own address, manifest, salt) before the commit deadline, and no
manifest is public before the reveal phase (reveals and their gossip come after every
commit), so a copier cannot commit to the copy. It commits to what it has (`placeholder`:
every worker accepted at score 0, no evaluation done) and, once another member has
revealed, reveals the copy: the contract refuses it (RevealMismatch), so the copier counts
as a member that committed and never revealed, unpaid and slashed. Revealing its own
placeholder instead is a guess, judged like any other manifest (a lie when it is off).
Copying a commitment fails the same way: the commitment binds the committer's address.

Sybil identities: see `node.attacks.sybil`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from protocol.fixedpoint import SCALE

__all__ = [
    "VALIDATOR_ATTACKS",
    "Columns",
    "colluding",
    "committed_columns",
    "copied",
    "favoured_worker",
    "first_reveal_of_another",
    "lying",
    "placeholder",
]

VALIDATOR_ATTACKS = ("honest", "lying", "lazy", "colluding", "copycat")

Columns = tuple[tuple[int, ...], tuple[bool, ...]]
"""A manifest's scores and accept flags, one per worker in on-chain order."""


def lying(scores: Sequence[int], accepts: Sequence[bool]) -> Columns:
    """Scores turned upside down around SCALE/20 and every accept flipped."""
    return tuple(SCALE // 10 - s for s in scores), tuple(not a for a in accepts)


def favoured_worker(workers: Sequence[bytes]) -> bytes:
    """The colluders' accomplice: the lowest address among the round's submitters."""
    if not workers:
        raise ValueError("no workers submitted; there is nobody to favour")
    return min(workers)


def colluding(workers: Sequence[bytes], favoured: bytes) -> Columns:
    """The colluders' shared columns: `favoured` scored SCALE and accepted, everyone else
    scored 0 and rejected (their evaluation is not needed, only the workers' order)."""
    if favoured not in workers:
        raise ValueError(f"the favoured worker 0x{favoured.hex()} did not submit this round")
    return (
        tuple(SCALE if w == favoured else 0 for w in workers),
        tuple(w == favoured for w in workers),
    )


def placeholder(workers: Sequence[bytes]) -> Columns:
    """What a copycat commits to before any manifest is public: every worker accepted at
    score 0 (it evaluated nothing)."""
    return tuple(0 for _ in workers), tuple(True for _ in workers)


def copied(
    workers: Sequence[bytes], revealed_workers: Sequence[bytes], scores: Sequence[int],
    verdicts: Sequence[int], global_accuracy: int,
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Another member's revealed scores, verdicts and global accuracy, to be revealed as
    our own; ValueError when it judged other workers than ours (another round's)."""
    if tuple(revealed_workers) != tuple(workers):
        raise ValueError("the revealed manifest lists other workers than this round's")
    if not len(scores) == len(verdicts) == len(workers):
        raise ValueError("the revealed manifest's columns differ in length")
    return tuple(scores), tuple(verdicts), global_accuracy


def committed_columns(
    kind: str, workers: Sequence[bytes], scores: Sequence[int], accepts: Sequence[bool]
) -> Columns:
    """What a validator of `kind` commits to, given its own evaluation's columns."""
    if kind in ("honest", "lazy"):
        return tuple(scores), tuple(accepts)
    if kind == "lying":
        return lying(scores, accepts)
    if kind == "colluding":
        return colluding(workers, favoured_worker(workers))
    if kind == "copycat":
        return placeholder(workers)
    raise ValueError(f"no validator attack {kind!r}; one of {list(VALIDATOR_ATTACKS)}")


def first_reveal_of_another(
    reveals: Iterable[Mapping[str, Any]], round: int, me: bytes, workers: Sequence[bytes]
) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """The copycat's pick: the columns of the first ManifestRevealed log (its decoded
    arguments, in chain order) of this round by a member other than `me`, or None."""
    for reveal in reveals:
        if reveal["round"] != round or _address(reveal["validator"]) == me:
            continue
        return copied(
            workers, [_address(w) for w in reveal["workers"]], reveal["scores"],
            reveal["verdicts"], reveal["globalAccuracy"],
        )
    return None


def _address(value: str | bytes) -> bytes:
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
