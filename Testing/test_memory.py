"""PeakMemory: the peak of one stretch of work, on a CPU too."""

from __future__ import annotations

import mmap

import numpy as np
import torch

from semiseg.memory import PeakMemory


def test_cpu_peak_covers_what_was_allocated_inside():
    with PeakMemory(torch.device("cpu")) as small:
        pass
    with PeakMemory(torch.device("cpu")) as big:
        # 64 MiB of fresh pages, touched: an anonymous mapping, because malloc could hand back memory that
        # earlier tests freed and the process still holds, which would not raise the peak.
        block = mmap.mmap(-1, 64 * 2**20)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        block.close()
    assert big.mb >= small.mb + 50
    assert "resident memory" in big.measures
