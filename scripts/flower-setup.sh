#!/usr/bin/env bash
# One-time (idempotent) set-up of .venv-flower: Flower 1.42 for `python -m bench.flower_baseline`
# (and `bench.round_profile --flower`). Its own venv because flwr pins grpcio and protobuf
# versions that py-libp2p's protobuf in .venv does not take. fl-node itself is not installed
# there: the Flower apps import its data, model and training code from this checkout
# (PYTHONPATH), which needs torch, numpy, msgpack and eth-abi (node.config reaches
# protocol.manifest's ABI encoding), not libp2p or web3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${FLOWER_VENV:-.venv-flower}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
echo '*' > "$VENV/.gitignore"  # git status stays clean without touching the repo's .gitignore
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: this exact spec takes the CPU build; anything looser pulls CUDA wheels.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q --progress-bar off torch==2.13.0
"$VENV/bin/pip" install -q --progress-bar off flwr==1.42.0
# fl-node's own dependencies that its data/model/training code imports, at .venv's versions
"$VENV/bin/pip" install -q --progress-bar off -c constraints.txt msgpack eth-abi
"$VENV/bin/pip" check
# The check: Flower's commands, and fl-node's code as the apps import it, without libp2p/web3.
PYTHONPATH="$PWD" "$VENV/bin/python" - <<'EOF'
import sys
import flwr
assert flwr.__version__ == "1.42.0", flwr.__version__
import bench.flower_task  # what the Flower apps import of fl-node
for absent in ("libp2p", "web3", "trio", "eth_account"):
    assert absent not in sys.modules, f"{absent} was imported by the Flower apps' code"
print(f"flower-setup: flwr {flwr.__version__} in {sys.prefix}")
EOF
