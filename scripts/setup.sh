#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: a virtual environment in .venv with
# the CPU build of torch, fl-node and its dev tools, and the npm tools (solc, anvil).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: this exact spec takes the CPU build; anything looser pulls CUDA wheels.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q --progress-bar off -c constraints.txt -e ".[dev]"
if command -v npm >/dev/null 2>&1 && [ -f package-lock.json ]; then
    if [ ! -x node_modules/.bin/anvil ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        # Not `npm ci`: npm rejects this lockfile as "out of sync" because anvil's optional
        # per-platform packages are never recorded for other platforms. `install --no-save`
        # still installs the locked versions and leaves the lockfile untouched.
        npm install --no-save --no-audit --no-fund --loglevel=error
    fi
else
    echo "setup: npm not found; contract recompilation and anvil tests will be skipped" >&2
fi
