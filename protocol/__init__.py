"""fl-node's pure protocol logic: no I/O, no sockets, no environment (node/ does those).

Confidentiality within a round (no copying). A worker's update is an envelope
(`protocol.envelope`: AES-256-GCM content, its key wrapped per recipient with X25519 +
HKDF) sealed for the requester, every validator of the task and the worker itself
(`protocol.gossip_rules.update_readers`), never for another worker: during training a
worker that could open a fellow worker's update could re-seal it as its own and submit it
before the deadline. It is sealed for all validators, not only the round's committee:
seats are drawn by VRF each round and known to others only as proofs arrive (for sure only
when their holders commit, after training), while the update's CID, hence its recipients,
is fixed on chain during training; a seated validator left out could not judge it.
Validators cannot submit updates, so reading one gains them nothing to copy.

Once the round's training phase has closed on chain (no submission is possible any more),
each worker unwraps its update's content key and publishes a `protocol.messages.KeyRelease`
on the models topic: that 32-byte key sealed for every member, bound by its associated data
(`key_release_context`) to the task, round, worker and CID. Gossip lets it through only
once the round's training is over in the receiver's chain view and only from the worker
itself (`protocol.gossip_rules.validate`); the round machine (`protocol.state`) attaches it
to the worker's accepted update, so every member can open the accepted updates and average
them locally. The envelope's header commits to its content key (`protocol.envelope`, version
2), so a released key is the one the committee opened: AES-GCM alone would let a worker
craft content that also opens, to other bytes, under a second key it releases or wraps for
some validators only. A worker that never releases its key is left out of the other workers'
averages after `protocol.state.phases.KEY_RELEASE_GRACE` (`KEY_RELEASE_GRACE_MOVED_ON` once
the next round has opened).

As a second line, validators reject near-duplicates (`protocol.verdict.near_duplicates`):
an update whose delta from the base points the way of an update submitted earlier on chain
is a copy, and only the earlier one is accepted.
"""
