#!/usr/bin/env bash
# The whole test run: set-up, lint, the import layers, type-check, then pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export FL_NODE_DATA_ROOT=${FL_NODE_DATA_ROOT:-$(cd .. && pwd)/shared/datasets/mnist}
ruff check .
lint-imports
mypy protocol/ node/ bootstrap/
python -m pytest -q -p no:cacheprovider "$@"
