"""Run by tests/localnet/test_fork_server.py as `python -m tests.localnet.forked_probe MODE`:
says where it runs and whether it found itself imported already (a fork server's preload),
then exits with the status MODE names, or sleeps until signalled."""

from __future__ import annotations

import os
import sys
import time

if __name__ == "__main__":
    preloaded = "tests.localnet.forked_probe" in sys.modules
    print(f"pid {os.getpid()} cwd {os.getcwd()} probe {os.environ.get('PROBE_VALUE')} preloaded {preloaded}")
    mode = sys.argv[1]
    if mode == "sleep":
        time.sleep(600)
    raise SystemExit(int(mode))
