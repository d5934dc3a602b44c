"""PeakMemory: the peak of one stretch of work, on a CPU too."""

from __future__ import annotations

import numpy as np
import torch

from semiseg.memory import PeakMemory


def test_cpu_peak_covers_what_was_allocated_inside():
    with PeakMemory(torch.device("cpu")) as small:
        pass
    with PeakMemory(torch.device("cpu")) as big:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        del block
    assert big.mb >= small.mb + 50
    assert "resident memory" in big.measures
