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
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from semiseg import distributed
from semiseg.devices import resolve_device
from semiseg.errors import ConfigError
from semiseg.events import EventWriter
from semiseg.fastpaths import FastPaths
from semiseg.methods import MethodContext, build_method
from semiseg.sampling import PatchStream
from semiseg.training.checkpoints import Checkpoints, Resumable
from semiseg.training.config import OPTIMIZERS, SCHEDULES, Cancelled, TrainConfig, TrainResult, validate_config
from semiseg.training.data import TrainingData, auto_patch
from semiseg.training.distribution import wrap_distributed
from semiseg.training.optimisation import Optimisation
from semiseg.prepare import split_validation
from semiseg.training.curves import LossCurve, write_curves
from semiseg.training.inference_cost import measure_prediction
from semiseg.training.package import ModelCard, export_models, peak_memory_mb
from semiseg.training.validation import Validator

__all__ = ["OPTIMIZERS", "SCHEDULES", "Cancelled", "TrainConfig", "TrainResult", "auto_patch", "train"]


def train(cfg: TrainConfig) -> TrainResult:
    # Under torchrun only rank 0 writes events (and everything else the user sees).
    events = EventWriter(cfg.events if distributed.launch_rank() == 0 else None, append=cfg.resume)
    joined_here = not distributed.is_initialized()
    try:
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
        events.close()
        if joined_here:
            distributed.cleanup()


class _Trainer:
    """Builds the run (data, method, optimisation, streams, validator, checkpoints) and runs the loop."""

    def __init__(self, cfg: TrainConfig, events: EventWriter):
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
        if not cfg.resume and self.checkpoints.last.exists():
            raise ConfigError(f"{self.workdir}: holds a checkpoint from an earlier run; pass --resume to continue "
                              f"it or choose another --workdir")
        if Path(cfg.out).exists() and not cfg.overwrite:
            raise ConfigError(f"{cfg.out}: a model package already exists there (choose another --out or pass "
                              f"--overwrite)")
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
        space = data.space
        context = MethodContext(in_channels=len(data.dataset.channels), n_classes=space.n_classes, total_iterations=c.iterations,
                                n_tasks=max(1, len(space.tasks)), n_domains=max(1, len(space.domains)),
                                task_classes=space.task_classes or [list(range(1, space.n_classes))],
                                domains=data.split_domains(), class_fractions=data.class_fractions(),
                                options=dict(c.method_options))
        self.method = build_method(c.method, context).to(self.device)
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
        self.validator = Validator(self.method, data.val_cases, space, self.device, self.card.manifest_for,
                                   self.workdir / "best.pt", self.events, c.val_overlap, self.fast)
        self.resumable = Resumable(c.method, self.method, self.optimisation, self.labeled_stream,
                                   self.unlabeled_stream, self.validator)

    # ---- loop ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        c, data = self.cfg, self.data
        start_it, elapsed_before = 0, 0.0
        if c.resume:
            start_it, elapsed_before = self.checkpoints.restore(self.resumable, self.device)
        self.events.emit("start", total_iterations=c.iterations, start_iteration=start_it, method=c.method,
                         device=str(self.device), patch=data.patch, labeled=len(data.train_cases),
                         validation=len(data.val_cases), unlabeled=len(data.unlabeled_cases),
                         amp=self.amp, fast_paths=self.fast.describe(self.device), resumed=bool(c.resume),
                         world_size=self.world_size,
                         global_batch_labeled=c.batch_labeled * self.world_size,
                         global_batch_unlabeled=c.batch_unlabeled * self.world_size)
        ckpt_every = c.checkpoint_every or c.val_every
        emit_every = max(1, c.iterations // 500)
        t0 = time.perf_counter() - elapsed_before
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        bar = tqdm(total=c.iterations, initial=start_it, disable=not (c.progress and self.is_main), file=sys.stderr,
                   desc=f"{c.method}", dynamic_ncols=True, unit="it")
        last_dice = None
        self.step_seconds = 0.0
        self.loss_curve = LossCurve()
        try:
            for it in range(start_it, c.iterations):
                step_start = time.perf_counter()
                losses = self._step(it)
                self.step_seconds += time.perf_counter() - step_start
                done = it + 1
                self.loss_curve.record(done, losses)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("total", "supervised")})
                if done % emit_every == 0 or done == c.iterations:
                    spent = time.perf_counter() - t0
                    rate = (done - start_it) / max(spent - elapsed_before, 1e-9)
                    self.events.emit("iteration", iteration=done, total_iterations=c.iterations, losses=losses,
                                     lr=self.optimisation.lr, eta_seconds=(c.iterations - done) / max(rate, 1e-9))
                if data.val_cases and (done % c.val_every == 0 or done == c.iterations):
                    if self.is_main:
                        last_dice = self.validator.validate(done)
                    distributed.barrier()  # no rank runs ahead into the next step's collectives
                if self.world_size > 1:
                    # A signal may reach the ranks in different iterations: stop together or not at all.
                    flag = torch.tensor([int(self._cancel)], device=self.device)
                    self._cancel = bool(distributed.all_reduce_max(flag)[0])
                if done % ckpt_every == 0 or done == c.iterations or self._cancel:
                    self.checkpoints.save(self.resumable, done, time.perf_counter() - t0)
                if self._cancel:
                    raise Cancelled(f"cancelled at iteration {done}; the last checkpoint is in {self.workdir} "
                                    f"(continue with --resume)")
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        seconds = time.perf_counter() - t0
        result = self._finish(seconds, last_dice) if self.is_main else None
        distributed.barrier()
        if not self.is_main:
            result = TrainResult(Path(c.out), None, c.iterations, seconds, None, None, None,
                                 peak_memory_mb(self.device), [], self.step_seconds)
        return result

    def _on_signal(self, signum, frame) -> None:
        # Finish the current iteration, write the checkpoint, then stop: Cancel keeps the work done.
        self._cancel = True

    def _step(self, it: int) -> dict[str, float]:
        self.method.train()
        labeled = _to_device(next(self.labeled_stream), self.device, self.fast)
        unlabeled = _to_device(next(self.unlabeled_stream), self.device, self.fast) if self.unlabeled_stream else None
        self.method.before_optimizer_step(it)
        with self.fast.autocast(self.device):
            losses = self.method.training_step(labeled, unlabeled, it)
        total = losses["total"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"the loss became {total.item()} at iteration {it + 1}; lower the learning "
                                     f"rate or check the data")
        self.optimisation.step(total)
        if self.ddp is not None:
            # BatchNorm running statistics: rank 0's everywhere, so that EMA teachers stay identical.
            distributed.broadcast_buffers(self.method.trainable())
        self.method.after_optimizer_step(it)
        return {k: float(v.detach().float()) for k, v in losses.items()}

    def _finish(self, seconds: float, last_dice: float | None) -> TrainResult:
        c, data, best = self.cfg, self.data, self.validator.best
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
            "training": {"iterations": c.iterations, "seconds": round(seconds, 1), "device": str(self.device),
                         "peak_memory_mb": round(peak, 1), "seed": c.seed, "batch_labeled": c.batch_labeled,
                         "batch_unlabeled": c.batch_unlabeled, "optimizer": self.optimisation.opt_name,
                         "schedule": self.optimisation.schedule, "amp": self.amp, "world_size": self.world_size,
                         "fast_paths": self.fast.describe(self.device)},
        }
        if self.validator.inference_cost:
            first_val = split_validation(data.dataset.training, c.val_cases)[1][0]
            card["inference"] = {**self.validator.inference_cost, **measure_prediction(
                net, card, first_val, self.device, self.fast)}
        last_model = export_models(c, card, net, self.validator.best_ckpt, last_dice, bool(data.val_cases))
        write_curves(c.out, self.loss_curve, self.validator.history, title=f"{card['name']}: {c.method}")
        self.events.emit("done", model=str(c.out), seconds=seconds, best_dice=best["dice"],
                         best_iteration=best["iteration"], last_dice=last_dice)
        return TrainResult(Path(c.out), last_model if data.val_cases else None, c.iterations, seconds,
                           best["dice"], best["iteration"], last_dice, peak, self.validator.history,
                           self.step_seconds)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: dict, device: torch.device, fast: FastPaths) -> dict:
    """The batch's tensors on `device`; 5D images in the network's memory format."""
    return {k: (fast.prepare_input(v.to(device, non_blocking=True)) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}
