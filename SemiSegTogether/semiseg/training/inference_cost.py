"""What the model card says a prediction costs: each number next to a sentence saying what it measures."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from semiseg.datasets import Case, read_channels
from semiseg.infer import predict_volume
from semiseg.io import write_volume
from semiseg.memory import PeakMemory

SLIDING_WINDOW = ("the sliding window alone on a preprocessed validation case (model loaded; no reading, "
                  "resampling or writing), mean over the validation cases, at the validation overlap")
PREDICTION = ("one whole prediction of a validation case (without one, of the first labeled case) as `semiseg "
              "predict` makes it at its default overlap: "
              "read the image, preprocess, sliding window, back to the image's grid, write the label map "
              "(interpreter start-up and model loading excluded)")
PREDICT_OVERLAP = 0.5  # `semiseg predict`'s default


def sliding_window_cost(seconds: float, n_cases: int, device: torch.device) -> dict:
    return {"device": str(device), "seconds_per_volume": seconds / max(1, n_cases),
            "seconds_per_volume_measures": SLIDING_WINDOW}


def measure_prediction(net, manifest: dict, case: Case, device: torch.device, fast) -> dict:
    """Time and peak memory of predicting `case` from its file to a written label map."""
    with tempfile.TemporaryDirectory(prefix="semiseg-measure-") as tmp, PeakMemory(device) as peak:
        start = time.perf_counter()
        label, _ = predict_volume(net, manifest, read_channels(case), device, overlap=PREDICT_OVERLAP,
                                  fast=fast)
        write_volume(label, Path(tmp) / "label.nii.gz")
        seconds = time.perf_counter() - start
    return {"prediction_seconds": round(seconds, 3), "prediction_seconds_measures": PREDICTION,
            "peak_memory_mb": round(peak.mb, 1), "peak_memory_measures": peak.measures}
