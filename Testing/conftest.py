"""Shared fixtures: one tiny phantom dataset and one tiny trained model (session-scoped), and bench runs trained in
this process (for the bench tests).

Both are cheap (32³ volumes, a 4-filter V-Net, 4 iterations) and read-only for the tests that use them:
a test that needs to change them copies them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# One intra-op thread: on the 2 shared cores the tests run on, OpenMP threads contending with other
# processes make small 3D convolutions up to 100x slower; one thread is also the most reproducible.
torch.set_num_threads(1)


@dataclass
class TinyRun:
    """What the tiny training left behind (the `tiny_model` fixture's run)."""

    dataset: Path
    model: Path
    workdir: Path
    events: Path
    config: object  # semiseg.train.TrainConfig
    result: object  # semiseg.train.TrainResult


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A phantom dataset: 4 labeled, 4 unlabeled, 2 test cases of 32³ (seed 0); returns its folder."""
    from semiseg.synthetic import make_dataset

    root = tmp_path_factory.mktemp("tiny-dataset") / "phantom"
    return make_dataset(root, n_labeled=4, n_unlabeled=4, n_test=2, shape=(32, 32, 32), seed=0)


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> TinyRun:
    """Supervised, 4 iterations, one labeled case held out and validated every 2, on `tiny_dataset`; events
    written to a file."""
    from semiseg.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("tiny-model")
    cfg = TrainConfig(data=str(tiny_dataset), out=str(folder / "tiny.semiseg"), method="supervised",
                      method_options={"n_filters": 4}, iterations=4, patch=[32, 32, 32], device="cpu",
                      progress=False, val_every=2, val_cases=1, events=str(folder / "events.jsonl"),
                      event_seconds=0.0)
    result = train(cfg)
    return TinyRun(dataset=tiny_dataset, model=Path(cfg.out), workdir=cfg.workdir_path(),
                   events=Path(cfg.events), config=cfg, result=result)


@pytest.fixture(scope="session")
def tiny_model(tiny_run) -> Path:
    """Path of the tiny trained model package (NAME.semiseg/)."""
    return tiny_run.model


@pytest.fixture(scope="module")
def runs_in_this_process():
    """`semiseg bench` trains each run in this process, not a spawned one (which costs an import of torch and MONAI
    per run; test_bench_paths keeps the spawned path). Module-scoped: a bench test module asks for it with
    `pytestmark = pytest.mark.usefixtures("runs_in_this_process")`."""
    import semiseg.bench as bench_module
    patch = pytest.MonkeyPatch()
    patch.setattr(bench_module, "in_fresh_process", lambda fn, *args: fn(*args))
    yield
    patch.undo()
