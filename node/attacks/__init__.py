"""Worker attacks: each a small pure function over numpy state dicts, label arrays or
images, seeded by a numpy Generator; no I/O. `spec` names them and their parameters for
scenarios and node.toml; `worker.attacked_update` is what a worker runs in a round.

| kind | what is submitted |
|---|---|
| honest | honestly trained update |
| sign_flip | base - scale * delta |
| scaled | base + scale * delta (model replacement boost) |
| gaussian | base + N(0, sigma^2) |
| alie | base + mean - z * std of the colluders' honest deltas (Baruch et al. 2019) |
| ipm | base - epsilon * mean of the colluders' honest deltas (Xie et al. 2020) |
| label_flip | trained with the source class relabelled as the target |
| backdoor | trained with a fraction of images triggered and relabelled as the target; may claim a share of its samples |
| shuffled_labels | trained with the labels permuted |
| noise | N(0, 1) weights |
| free_rider | the base itself |
| free_rider_noise | base + N(0, sigma^2), sigma tiny |
| copycat | another worker's update |
| inflated_samples | honest (optionally boosted) update, claiming factor x its samples |

delta = honest update - base. Validator attacks (lying, lazy, colluding, copycat) are in
`validator`, Sybil identities' sortition arithmetic in `sybil`. What the runtime supports (`worker.attacked_update`):

- ALIE and IPM non-omniscient. With `colluders = m` the m attackers pool their honestly
  trained updates through an in-process side channel (`collusion`: the bench and
  `--in-process` localnets) and each submits the attack on those m updates, as Baruch et
  al. do; with 0 each estimates alone from deltas it trains itself. Colluders in separate
  processes would need a channel of their own (e.g. a shared key and a private gossip
  topic during TRAINING). The omniscient variant would also need every honest worker's
  update before the deadline, which sealing updates to the committee only is meant to deny.
- copycat: the runtime's copycat (`effects_network.copied_update`) submits the first
  update another worker announces, by CID and without reading it, since updates are sealed
  to the committee until training closes; `victim` is not used there. The pure `copycat`
  serves where the victim's update is readable (an in-memory bench, a released key):
  passed as `victim_update`, else `attacked_update` raises `AttackUnavailable`.
- inflated_samples: the training job reports `worker.claimed_samples` with the update.
"""

from node.attacks.spec import WORKER_ATTACKS, AttackSpec, AttackSpecError, parse_attack_spec

__all__ = ["WORKER_ATTACKS", "AttackSpec", "AttackSpecError", "parse_attack_spec"]
