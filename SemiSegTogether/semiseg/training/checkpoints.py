"""The last checkpoint (everything a bit-identical --resume needs) and restoring from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from semiseg import distributed
from semiseg.atomic import atomic_path
from semiseg.errors import ConfigError
from semiseg.events import EventWriter
from semiseg.sampling import PatchStream
from semiseg.resume_settings import check_resume_settings, load_checkpoint
from semiseg.training.optimisation import Optimisation
from semiseg.training.validation import Validator


@dataclass
class Resumable:
    """The run's state that a checkpoint holds: weights, optimiser, streams, validation record."""
    method_name: str
    method: torch.nn.Module
    optimisation: Optimisation
    labeled_stream: PatchStream
    unlabeled_stream: PatchStream | None
    validator: Validator
    settings: dict | None = None  # the settings that shape the weights (resume_settings.run_settings)
    plan: dict | None = None  # the --time plan the run follows: `train --resume --time` keeps it (plan.resumed_plan)


class Checkpoints:
    """`workdir/last.pt`, written atomically by rank 0 with every rank's stream position and random state."""

    def __init__(self, workdir: Path, rank: int, world_size: int, events: EventWriter):
        self.workdir, self.rank, self.world_size, self.events = workdir, rank, world_size, events
        self.last = workdir / "last.pt"

    def save(self, run: Resumable, iteration: int, seconds: float) -> None:
        """A collective under torchrun (every rank's streams are gathered): call it on every rank."""
        streams = {"labeled": run.labeled_stream.state(),
                   "unlabeled": run.unlabeled_stream.state() if run.unlabeled_stream else None}
        # Every rank's stream position and random state (each rank resumes its own); a collective.
        per_rank = distributed.all_gather_object({"streams": streams, "torch_rng": torch.get_rng_state()})
        if self.rank != 0:
            return
        opt = run.optimisation
        state = {
            "iteration": iteration, "seconds": seconds, "method_name": run.method_name,
            "method": run.method.state_dict(), "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(), "streams": streams,
            "best": run.validator.best, "history": run.validator.history, "settings": run.settings,
            "plan": run.plan,
        }
        if self.world_size > 1:
            state["world_size"] = self.world_size
            state["ranks"] = per_rank
        with atomic_path(self.last, ".pt") as tmp:
            torch.save(state, tmp)
        self.events.emit("checkpoint", iteration=iteration, path=str(self.last), kind="last")

    def restore(self, run: Resumable, device: torch.device) -> tuple[int, float]:
        """Load last.pt into `run`; returns (iteration reached, seconds spent before)."""
        if not self.last.exists():
            raise ConfigError(f"--resume: no checkpoint at {self.last}")
        state = load_checkpoint(self.last, device)
        if run.settings is not None:
            check_resume_settings(state, run.settings, self.last)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise ConfigError(f"--resume: {self.last} was written by a run on {saved_world} process(es), "
                              f"this one has {self.world_size}; resume with the same number (the batch and the "
                              f"per-rank sample streams depend on it)")
        if saved_world > 1:
            own = state["ranks"][self.rank]
            state["streams"], state["torch_rng"] = own["streams"], own["torch_rng"]
        if state.get("method_name") != run.method_name:
            raise ConfigError(f"--resume: {self.last} was trained with {state.get('method_name')!r}, "
                              f"not {run.method_name!r}")
        run.method.load_state_dict(state["method"])
        run.optimisation.optimizer.load_state_dict(state["optimizer"])
        run.optimisation.scheduler.load_state_dict(state["scheduler"])
        run.optimisation.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        run.labeled_stream.load_state(state["streams"]["labeled"])
        if run.unlabeled_stream is not None and state["streams"]["unlabeled"] is not None:
            run.unlabeled_stream.load_state(state["streams"]["unlabeled"])
        run.validator.best, run.validator.history = state["best"], list(state["history"])
        return int(state["iteration"]), float(state["seconds"])
