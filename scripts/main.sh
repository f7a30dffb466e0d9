#!/usr/bin/env bash
# The main job: set-up, then a whole fl-node network on this machine training MNIST —
# anvil, the contracts, a bootstrap node, a requester, 5 workers and 3 validators as
# separate processes, 10 rounds. Extra args go to `fl-node localnet` (see --help).
# Results: localnet-output/<UTC time>/results.json and PNG plots.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# MNIST comes from $FL_NODE_DATA_ROOT, else ../shared/datasets/mnist, else the cache, where
# fl-node localnet downloads it once (SHA-256 checked); --data-root DIR overrides.
exec fl-node localnet --workers 5 --validators 3 --rounds 10 --seed 0 \
    --output "localnet-output/$(date -u +%Y%m%dT%H%M%SZ)" "$@"
