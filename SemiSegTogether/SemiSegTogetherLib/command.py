"""Command lines and environments for the engine subprocess (`PythonSlicer -m semiseg ...`)."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

DEVICES = ("auto", "cpu", "cuda")


def moduleDir() -> str:
    """The SemiSegTogether module folder: the one holding semiseg/ and SemiSegTogetherLib/."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engineEnvironment(baseEnvironment: Optional[Mapping[str, str]] = None, enginePath: Optional[str] = None,
                      forceCpu: bool = False) -> dict:
    """Environment for an engine subprocess.

    PYTHONPATH starts with the folder holding semiseg/ (a subprocess does not inherit
    the sys.path entries Slicer added when it loaded the module). Forcing CPU hides
    every CUDA device with CUDA_VISIBLE_DEVICES=-1.
    """
    env = dict(os.environ if baseEnvironment is None else baseEnvironment)
    enginePath = enginePath or moduleDir()
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != enginePath]
    env["PYTHONPATH"] = os.pathsep.join([enginePath] + existing)
    env["PYTHONUNBUFFERED"] = "1"
    if forceCpu:
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def engineCommand(pythonExecutable: str, subcommand: str, arguments: Sequence[str] = ()) -> list:
    """`PYTHON -m semiseg SUBCOMMAND ARGS...`."""
    if not pythonExecutable:
        raise ValueError("no Python executable to run the engine with (PythonSlicer not found)")
    return [pythonExecutable, "-m", "semiseg", subcommand] + [str(a) for a in arguments]


def buildPredictCommand(pythonExecutable: str, modelPath: str, inputPath: str, outputPath: str,
                        prompts: Optional[Sequence[str]] = None, device: str = "auto", swBatchSize: int = 1,
                        overlap: float = 0.5, eventsPath: Optional[str] = None, keepLargestComponent: bool = False,
                        overwrite: bool = True, testTimeMirroring: bool = False) -> list:
    """The `semiseg predict` command line (docs/contracts.md, CLI)."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, not {device!r}")
    if int(swBatchSize) < 1:
        raise ValueError("the sliding-window batch size must be at least 1")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError("the sliding-window overlap must be in [0, 1)")
    args = ["--model", modelPath, "--input", inputPath, "--output", outputPath, "--device", device,
            "--sw-batch-size", str(int(swBatchSize)), "--overlap", f"{float(overlap):g}"]
    if prompts:
        for prompt in prompts:
            if "," in prompt:
                raise ValueError(f"structure name {prompt!r} contains a comma, which --prompts cannot carry")
        args += ["--prompts", ",".join(prompts)]
    if keepLargestComponent:
        args.append("--lcc")
    if testTimeMirroring:
        args.append("--tta")
    if eventsPath:
        args += ["--events", eventsPath]
    if overwrite:
        args.append("--overwrite")
    return engineCommand(pythonExecutable, "predict", args)
