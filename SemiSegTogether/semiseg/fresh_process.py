"""Each bench run in a fresh process that does not outlive the bench.

A run gets its own spawned process: its peak memory is its own (a process's peak resident memory never goes
down), no state leaks from one run into the next, and a --time budget counts from its start. A process pool's
worker finishes its task even when the process that gave it has died, so a bench stopped with `kill` (rather
than Ctrl-C, which reaches the whole process group) would leave its run training on, orphaned, for the rest of
its budget. The worker therefore watches its parent and, once the parent is gone, sends itself SIGTERM: a
training run takes that as Cancel (it finishes its iteration, writes its checkpoint and stops).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PARENT_POLL_SECONDS = 1.0


def in_fresh_process(fn, *args):
    """fn(*args) in a spawned process of its own; its result, or its exception raised here."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=stop_with_parent, initargs=(os.getpid(),)) as pool:
        return pool.submit(fn, *args).result()


def stop_with_parent(parent_pid: int) -> None:
    """In the worker: SIGTERM to itself once its parent `parent_pid` has exited (checked every second)."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
