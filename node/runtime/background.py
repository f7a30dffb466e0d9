"""A thread at a lower CPU priority for work nothing is waiting on (a validator's or the
requester's own copy of the round's global model), so it takes the cores the workers'
training leaves idle instead of slowing that training down.

Linux sets a nice value per thread (`setpriority` on the thread id); the thread keeps it
for its life, since an unprivileged process cannot lower it again, so the work runs in
one dedicated thread rather than trio's shared thread cache. Elsewhere the thread runs at
the process's priority.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import trio

T = TypeVar("T")

NICENESS = 10  # CFS weight 110 against 1024 at nice 0: about a tenth of a busy core
MAX_NICE = 19


def lower_this_thread(by: int) -> int | None:
    """Raise the calling thread's nice value by `by` (capped at 19); its new value, or None
    where the system cannot set a thread's priority."""
    if not hasattr(os, "setpriority"):
        return None
    tid = threading.get_native_id()
    try:
        niceness = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + by)
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError:
        return None
    return niceness


class LowPriorityThread:
    """Runs functions one at a time in one thread whose nice value is `by` above the
    process's."""

    def __init__(self, by: int = NICENESS, name: str = "fl-node-background") -> None:
        self.by = by
        self.niceness: int | None = None  # once the thread started
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=self._lower)

    def _lower(self) -> None:
        self.niceness = lower_this_thread(self.by)

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn()` in the thread; its result (or its exception) once it is done. Cancelling
        the caller does not stop `fn`, as with `trio.to_thread.run_sync`."""
        future = self._pool.submit(fn)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:  # the caller's trio run is over: nobody to wake
                pass

        future.add_done_callback(wake)
        await done.wait()
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
