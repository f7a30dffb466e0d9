"""A stand-in for `fl-node` in launcher tests: `bootstrap` is the real one; `run` records
its pid and then sleeps until signalled, or exits with status 3 when its config path
contains $STANDIN_FAIL (a node that dies). Usage: python standin_node.py run --config X."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    if sys.argv[1] != "run":
        from node.cli import main as fl_node

        return fl_node(sys.argv[1:])
    config = sys.argv[3]
    Path(os.environ["STANDIN_PIDS"], str(os.getpid())).write_text(config)
    fail = os.environ.get("STANDIN_FAIL")
    if fail and fail in config:
        print(f"stand-in {config}: simulated crash", flush=True)
        return 3
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
