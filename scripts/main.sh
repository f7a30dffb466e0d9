#!/usr/bin/env bash
# The main job. Set-up, then the federated-vs-centralized MNIST simulation (bench/fedsim).
# Extra args go to the job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export FL_NODE_DATA_ROOT=${FL_NODE_DATA_ROOT:-$(cd .. && pwd)/shared/datasets/mnist}
python -m bench.fedsim --data-root "$FL_NODE_DATA_ROOT" "$@"
