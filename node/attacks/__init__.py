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
| backdoor | trained with a fraction of images triggered and relabelled as the target |
| shuffled_labels | trained with the labels permuted |
| noise | N(0, 1) weights |
| free_rider | the base itself |
| free_rider_noise | base + N(0, sigma^2), sigma tiny |
| copycat | another worker's update |
| inflated_samples | honest (optionally boosted) update, claiming factor x its samples |

delta = honest update - base. What the runtime supports (`worker.attacked_update`):

- ALIE and IPM non-omniscient and without colluders talking: each attacker estimates the
  honest statistics from deltas it trains itself. The paper's variant, colluders sharing
  their honest deltas, needs a side channel: e.g. the colluders share a key, each publishes
  its honest delta sealed to that key on a private gossip topic during TRAINING, waits for
  the others' (bounded by the training deadline) and submits `alie(base, deltas, z)`.
  The omniscient variant would also need every honest worker's update before the deadline,
  which sealing updates to the committee only is meant to deny.
- copycat: the runtime's copycat (`effects_network.copied_update`) submits the first
  update another worker announces, by CID and without reading it, since updates are sealed
  to the committee until training closes; `victim` is not used there. The pure `copycat`
  serves where the victim's update is readable (an in-memory bench, a released key):
  passed as `victim_update`, else `attacked_update` raises `AttackUnavailable`.
- inflated_samples: the training job reports `worker.claimed_samples` with the update.
"""

from node.attacks.spec import WORKER_ATTACKS, AttackSpec, AttackSpecError, parse_attack_spec

__all__ = ["WORKER_ATTACKS", "AttackSpec", "AttackSpecError", "parse_attack_spec"]
