"""A bench run's process stops when the bench is killed, instead of training on orphaned."""

import os
import signal
import subprocess
import sys
import time

import pytest

from semiseg.fresh_process import in_fresh_process

# The parent: starts a run that would sleep a minute, prints the run's pid once it exists, then waits on it.
PARENT = """
import multiprocessing, threading, time
from semiseg.fresh_process import in_fresh_process

def announce():
    while not multiprocessing.active_children():
        time.sleep(0.05)
    print(multiprocessing.active_children()[0].pid, flush=True)

threading.Thread(target=announce, daemon=True).start()
in_fresh_process(time.sleep, 60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_result_and_exception_come_back():
    assert in_fresh_process(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        in_fresh_process(divmod, 1, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table in /proc")
def test_run_stops_when_the_bench_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no handler, no clean-up: as `kill -9` or a crash
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the run outlived its bench"
    finally:
        parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)  # a failed run leaves nothing behind
