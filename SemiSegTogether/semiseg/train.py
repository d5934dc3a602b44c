"""The training loop: iteration-based, method-agnostic, two streams (labeled and unlabeled).

Every method plugs in through `semiseg.methods` (see methods/base.py); this loop never special-cases
one. The loop here owns the order of things (step, progress, validation, checkpoint, cancel); its parts live
in semiseg.training: the optimiser and schedule (AMP on CUDA only), validation on held-out labeled cases,
atomic best/last checkpoints and `--resume`, the model package.

Under torchrun (several processes) it trains with DistributedDataParallel (semiseg.distributed): every rank
draws its own labeled and unlabeled streams (seeded per rank), the method's trainable module is wrapped in one
DDP (its forward passes go through `method.step_net`), buffers are made equal after each step so EMA teachers
stay identical, and validation, checkpoints, events and the model package are written by rank 0 only.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from semiseg import distributed
from semiseg.devices import resolve_device
from semiseg.errors import ConfigError
from semiseg.events import EventWriter
from semiseg.finetune import ParentModel
from semiseg.methods import build_method
from semiseg.process import seconds_spent
from semiseg.sampling import PatchStream
from semiseg.training.checkpoints import Checkpoints, Resumable
from semiseg.training.config import OPTIMIZERS, SCHEDULES, Cancelled, TrainConfig, TrainResult, validate_config
from semiseg.training.data import TrainingData, auto_patch, method_context
from semiseg.training.deadline import Deadline
from semiseg.training.distribution import wrap_distributed
from semiseg.training.optimisation import Optimisation
from semiseg.training.curves import LossCurve, write_curves
from semiseg.training.inference_cost import measure_prediction
from semiseg.training.package import ModelCard, export_models, peak_memory_mb
from semiseg.training.pool_quality import PoolQuality
from semiseg.training.progress import Progress
from semiseg.training.step import optimiser_step
from semiseg.training.validation import Validator
from semiseg.resume_settings import run_settings
from semiseg.train_checks import check_train_request

__all__ = ["OPTIMIZERS", "SCHEDULES", "Cancelled", "TrainConfig", "TrainResult", "auto_patch", "train"]


def train(cfg: TrainConfig) -> TrainResult:
    check_train_request(cfg)  # settings, outputs and the dataset by check's rules, before any work
    # Under torchrun only rank 0 writes events (and everything else the user sees).
    events = EventWriter(cfg.events if distributed.launch_rank() == 0 else None, append=cfg.resume)
    joined_here = not distributed.is_initialized()
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return _Trainer(cfg, events).run()
    except Cancelled as exc:
        events.emit("error", message=str(exc))
        raise
    except Exception as exc:
        if distributed.is_initialized() and distributed.is_collective_failure(exc):
            clear = distributed.DistributedError(
                f"rank {distributed.rank()} of {distributed.world_size()}: another rank stopped or did not answer "
                f"within --dist-timeout {cfg.dist_timeout:g} s (its own error is in its log above); the last "
                f"checkpoint is in {cfg.workdir_path()} (continue with --resume). Detail: {exc}")
            events.emit("error", message=str(clear))
            raise clear from exc
        events.emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        torch.set_num_threads(threads)
        events.close()
        if joined_here:
            distributed.cleanup()


class _Trainer:
    """Builds the run (data, method, optimisation, streams, validator, checkpoints) and runs the loop."""

    def __init__(self, cfg: TrainConfig, events: EventWriter):
        # --init: the package's preprocessing, patch and network options fill what the run left unset.
        self.parent = ParentModel(cfg.init) if cfg.init else None
        if self.parent is not None:
            cfg = self.parent.settings(cfg)
        self.cfg, self.events = cfg, events
        validate_config(cfg)
        # Joins the process group under torchrun (NCCL on CUDA with cuda:LOCAL_RANK, gloo on CPU).
        self.device = distributed.setup(resolve_device(cfg.device), cfg.dist_timeout)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.fast = cfg.fast if cfg.amp else replace(cfg.fast, precision="fp32")
        self.amp = self.fast.amp_dtype(self.device) is not None
        self.workdir = cfg.workdir_path()
        self.checkpoints = Checkpoints(self.workdir, self.rank, self.world_size, events)
        _seed(cfg.seed)
        self.data = TrainingData(cfg)
        self.val_cases = self.data.val_cases
        self._build()
        if self.world_size > 1:
            # Same initial weights on every rank (seeded alike above; DDP also broadcasts rank 0's), then
            # each rank its own random stream for noise, dropout and masks.
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)
        self._cancel = False

    def _build(self) -> None:
        c, data = self.cfg, self.data
        context = method_context(data.space, c.iterations, data.split_domains(), data.class_fractions(),
                                 c.method_options, in_channels=len(data.dataset.channels))
        self.method = build_method(c.method, context)
        if self.parent is not None:  # before DDP wraps it: every rank then starts from the package
            self.parent.load_into(self.method, data.space)
        self.method.to(self.device)
        # channels_last for every network of the method (EMA teachers too); compiled: the trainable one.
        self.fast.prepare_network(self.method, self.device, compiled=self.method.trainable())
        if self.method.uses_unlabeled and not data.unlabeled_cases:
            raise ConfigError(f"method {c.method!r} learns from unlabeled images, but {c.data} lists none "
                              f"(add an 'unlabeled' list or imagesUn/, or use --method supervised)")
        self.ddp = wrap_distributed(self.method, self.device, self.world_size, c.sync_bn, c.method)
        self.optimisation = Optimisation(c, self.method, self.device, self.fast)
        self.labeled_stream = PatchStream(data.train_cases, data.patch, c.batch_labeled, seed=c.seed,
                                          rank=self.rank, fg_ratio=c.fg_ratio, augment=c.augment, with_labels=True,
                                          task_balanced=bool(self.method.opts.get("task_balanced", False)))
        self.unlabeled_stream = None
        if self.method.uses_unlabeled and c.batch_unlabeled > 0:
            self.unlabeled_stream = PatchStream(data.unlabeled_cases, data.patch, c.batch_unlabeled,
                                                seed=c.seed + 7919, rank=self.rank, fg_ratio=0.0,
                                                augment=c.augment, with_labels=False)
        self.card = ModelCard(data, c.label_info)
        self.validator = Validator(self.method, data.val_cases, data.space, self.device, self.card.manifest_for,
                                   self.workdir / "best.pt", self.events, c.val_overlap, self.fast)
        self.pool_quality = PoolQuality(self.method, data.pool_truth_cases, self.device, self.card.manifest_for,
                                        self.events, c.val_overlap, self.fast) if data.pool_truth_cases else None
        self.resumable = Resumable(c.method, self.method, self.optimisation, self.labeled_stream,
                                   self.unlabeled_stream, self.validator,
                                   settings=run_settings(c, data.patch, data.prep.to_dict()), plan=c.plan)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimisation.optimizer

    # ---- loop ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        c, data = self.cfg, self.data
        start_it, elapsed_before = 0, 0.0
        if c.resume:
            start_it, elapsed_before = self.checkpoints.restore(self.resumable, self.device)
        # The ETA before the first step: the plan's prediction (`semiseg plan`), less what has passed since.
        eta = _planned(c.plan, "total") - seconds_spent() if c.plan and not c.resume else None
        self.events.emit("start", total_iterations=c.iterations, start_iteration=start_it, method=c.method,
                         eta_seconds=eta, budget_seconds=(c.plan or {}).get("budget_seconds"),
                         device=str(self.device), patch=data.patch, labeled=len(data.train_cases),
                         validation=len(data.val_cases), unlabeled=len(data.unlabeled_cases),
                         amp=self.amp, fast_paths=self.fast.describe(self.device), resumed=bool(c.resume),
                         world_size=self.world_size,
                         global_batch_labeled=c.batch_labeled * self.world_size,
                         global_batch_unlabeled=c.batch_unlabeled * self.world_size)
        ckpt_every = c.checkpoint_every or c.val_every
        t0 = time.perf_counter() - elapsed_before
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        self.deadline = Deadline.from_plan(c.plan, elapsed_before)
        if self.deadline is not None:
            self.deadline.begin(start_it / c.iterations)
        progress = Progress(self.events, c.iterations, start_it, c.val_every, bool(data.val_cases), c.event_seconds,
                            c.progress and self.is_main, c.method, export_seconds=_planned(c.plan, "export"),
                            planned_eta=eta, deadline=self.deadline)
        last_dice = None
        self.step_seconds = 0.0
        self.loss_curve = LossCurve()
        try:
            for it in range(start_it, c.iterations):
                step_start = time.perf_counter()
                losses = self._step(it)
                seconds = time.perf_counter() - step_start
                self.step_seconds += seconds
                done = it + 1
                self.loss_curve.record(done, losses)
                last = done == c.iterations or self._out_of_time(progress, seconds)
                scoring = done % c.val_every == 0 or last
                validating = bool(data.val_cases) and scoring
                scoring_pool = self.pool_quality is not None and scoring  # with or without validation cases
                progress.stepped(done, seconds, losses, self.optimisation.lr, validating)
                after_step = time.perf_counter()
                if validating or scoring_pool:
                    if self.is_main:
                        if validating:
                            last_dice = self.validator.validate(done)
                        if scoring_pool:
                            self.pool_quality.measure(done)
                    distributed.barrier()  # no rank runs ahead into the next step's collectives
                if self.world_size > 1:
                    # A signal may reach the ranks in different iterations: stop together or not at all.
                    flag = torch.tensor([int(self._cancel)], device=self.device)
                    self._cancel = bool(distributed.all_reduce_max(flag)[0])
                if done % ckpt_every == 0 or last or self._cancel:
                    self.checkpoints.save(self.resumable, done, time.perf_counter() - t0)
                if validating:
                    progress.validated(last_dice, time.perf_counter() - after_step)
                if self._cancel:
                    raise Cancelled(f"cancelled at iteration {done}; the last checkpoint is in {self.workdir} "
                                    f"(continue with --resume)")
                if last and done < c.iterations:
                    self.deadline.stopped_at = done
                    self.events.emit("deadline", iteration=done, total_iterations=c.iterations,
                                     budget_seconds=self.deadline.budget)
                    break
        finally:
            progress.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        seconds = time.perf_counter() - t0
        result = self._finish(seconds, last_dice) if self.is_main else None
        distributed.barrier()
        if not self.is_main:
            result = TrainResult(Path(c.out), {}, self.trained_iterations, seconds, None, None, None,
                                 peak_memory_mb(self.device), [], self.step_seconds)
        return result

    @property
    def trained_iterations(self) -> int:
        stopped = self.deadline.stopped_at if self.deadline is not None else None
        return stopped if stopped is not None else self.cfg.iterations

    def _out_of_time(self, progress: Progress, seconds: float) -> bool:
        """With a --time budget: whether the next step would leave too little time for the final validation and
        the export; and how far through the run the clock is, which the schedule follows where it is ahead of the
        steps (rank 0 decides both, every rank follows)."""
        if self.deadline is None:
            return False
        mean_step = (progress.step_total + seconds) / (progress.steps + 1)
        validates = bool(self.data.val_cases)
        late, clock = 0.0, 0.0
        if self.is_main:
            late = float(not self.deadline.next_step_fits(mean_step, progress.validation_seconds, validates))
            clock = self.deadline.run_fraction(progress.validation_seconds, validates)
        if self.world_size > 1:  # every rank the same decision and the same learning rate
            late, clock = distributed.all_reduce_max(torch.tensor([late, clock], device=self.device)).tolist()
        self.optimisation.clock_fraction = clock
        return bool(late)

    def _on_signal(self, signum, frame) -> None:
        # Finish the current iteration, write the checkpoint, then stop: Cancel keeps the work done.
        self._cancel = True

    def _step(self, it: int) -> dict[str, float]:
        return optimiser_step(self.method, self.optimisation, self.labeled_stream, self.unlabeled_stream,
                              self.device, self.fast, it, self.ddp)

    def _finish(self, seconds: float, last_dice: float | None) -> TrainResult:
        c, data, best = self.cfg, self.data, self.validator.best
        history = self.validator.history
        if last_dice is None and history and history[-1]["iteration"] == self.trained_iterations:
            last_dice = history[-1]["dice"]  # a finished run resumed: its last validation came before the restart
        net = self.method.inference_network()
        peak = peak_memory_mb(self.device)
        card = {
            "name": c.name or Path(c.out).name.removesuffix(".semiseg"),
            "description": c.description or f"{c.method} trained on {data.dataset.name}",
            "modality": c.modality or data.dataset.modality or None,
            **self.card.manifest_for(net),
            "method": {"name": c.method, "options": self.method.opts},
            "data": {"dataset": data.dataset.name, "labeled": len(data.train_cases),
                     "validation": len(data.val_cases), "unlabeled": len(data.unlabeled_cases)},
            "training": {"iterations": self.trained_iterations, "seconds": round(seconds, 1),
                         "device": str(self.device), "peak_memory_mb": round(peak, 1), "seed": c.seed,
                         "batch_labeled": c.batch_labeled, "batch_unlabeled": c.batch_unlabeled,
                         "optimizer": self.optimisation.opt_name, "schedule": self.optimisation.schedule,
                         "augment": c.augment, "amp": self.amp, "world_size": self.world_size,
                         "fast_paths": self.fast.describe(self.device)},
        }
        if self.parent is not None:
            card["parent"] = self.parent.card()
        if c.plan is not None:
            card["plan"] = c.plan
        if self.deadline is not None and self.deadline.stopped_at is not None:
            card["training"].update(self.deadline.card(c.iterations))
        # What a prediction costs (Together shows it, its memory check starts from it).
        card["inference"] = {**(self.validator.inference_cost or {"device": str(self.device)}),
                             **measure_prediction(net, card, data.measured_case, self.device, self.fast)}
        models = export_models(c, card, net, self.validator.best_ckpt,
                               {"dice": last_dice, "iteration": self.trained_iterations}, bool(data.val_cases))
        write_curves(c.out, self.loss_curve, self.validator.history, title=f"{card['name']}: {c.method}")
        shipped = next(k for k, path in models.items() if path == Path(c.out))
        self.events.emit("done", model=str(c.out), checkpoint=shipped, seconds=seconds, best_dice=best["dice"],
                         best_iteration=best["iteration"], last_dice=last_dice)
        return TrainResult(Path(c.out), models, self.trained_iterations, seconds,
                           best["dice"], best["iteration"], last_dice, peak, self.validator.history,
                           self.step_seconds, self.pool_quality.history if self.pool_quality else [])


def _planned(plan: dict | None, part: str) -> float:
    """A predicted duration from the run's plan (semiseg.plan), 0 without one."""
    return float((plan or {}).get("predicted", {}).get(part) or 0.0)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
