"""The training loop: iteration-based, method-agnostic, two streams (labeled and unlabeled).

Every method plugs in through `semiseg.methods` (see methods/base.py); this loop never special-cases
one. It owns the optimiser and schedule, AMP (CUDA only), validation on held-out labeled cases,
atomic best/last checkpoints, `--resume`, the progress bar and the JSON events.

Under torchrun (several processes) it trains with DistributedDataParallel (semiseg.distributed): every rank
draws its own labeled and unlabeled streams (seeded per rank), the method's trainable module is wrapped in one
DDP (its forward passes go through `method.step_net`), buffers are made equal after each step so EMA teachers
stay identical, and validation, checkpoints, events and the model package are written by rank 0 only.
"""

from __future__ import annotations

import json
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from semiseg import distributed
from semiseg.atomic import atomic_path
from semiseg.datasets import load_dataset
from semiseg.devices import resolve_device
from semiseg.errors import ConfigError, SemiSegError
from semiseg.events import EventWriter
from semiseg.fastpaths import FastPaths
from semiseg.infer import predict_classes
from semiseg.labels import label_entry
from semiseg.methods import MethodContext, build_method
from semiseg.model import save_model
from semiseg.prepare import LabelSpace, prepare_case, split_validation
from semiseg.sampling import PatchStream
from semiseg.transforms import Preprocessing

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "constant", "step")


@dataclass
class TrainConfig:
    data: str
    out: str
    method: str = "mean-teacher"
    method_options: dict[str, Any] = field(default_factory=dict)
    iterations: int = 6000
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    patch: list[int] | None = None  # (d, h, w) in array order; None = from the data, multiples of 16
    spacing: list[float] | None = None  # target (x, y, z) mm; None = native
    intensity: str = "zscore"
    optimizer: str | None = None  # None = the method's preferred, else SGD
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # False: fp32 whatever fast.precision says (--no-amp)
    fast: FastPaths = field(default_factory=FastPaths)  # CUDA fast paths: precision, channels_last, compile
    val_every: int = 200
    val_cases: int | None = None
    val_overlap: float = 0.25
    checkpoint_every: int | None = None  # default: val_every
    fg_ratio: float = 0.33
    augment: str = "standard"
    workdir: str | None = None
    resume: bool = False
    events: str | None = None
    label_info: str | None = None
    name: str | None = None
    description: str = ""
    overwrite: bool = False
    export_last: bool = False
    progress: bool = True
    # Distributed (torchrun): batch sizes are per rank; the global batch is world_size × these.
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm (statistics over the global batch; CUDA only)
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_S  # seconds a collective may wait for another rank

    def workdir_path(self) -> Path:
        return Path(self.workdir) if self.workdir else Path(str(self.out).rstrip("/") + ".work")


@dataclass
class TrainResult:
    model: Path
    last_model: Path | None
    iterations: int
    seconds: float
    best_dice: float | None
    best_iteration: int | None
    last_dice: float | None
    peak_memory_mb: float
    history: list[dict]
    step_seconds: float = 0.0  # time in optimiser steps alone (no validation, no checkpoints)


class Cancelled(SemiSegError):
    pass


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
    def __init__(self, cfg: TrainConfig, events: EventWriter):
        self.cfg, self.events = cfg, events
        self._validate_config()
        # Joins the process group under torchrun (NCCL on CUDA with cuda:LOCAL_RANK, gloo on CPU).
        self.device = distributed.setup(resolve_device(cfg.device), cfg.dist_timeout)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.fast = cfg.fast if cfg.amp else replace(cfg.fast, precision="fp32")
        self.amp = self.fast.amp_dtype(self.device) is not None
        self.workdir = cfg.workdir_path()
        self.last_ckpt, self.best_ckpt = self.workdir / "last.pt", self.workdir / "best.pt"
        if not cfg.resume and self.last_ckpt.exists():
            raise ConfigError(f"{self.workdir}: holds a checkpoint from an earlier run; pass --resume to continue "
                              f"it or choose another --workdir")
        if Path(cfg.out).exists() and not cfg.overwrite:
            raise ConfigError(f"{cfg.out}: a model package already exists there (choose another --out or pass "
                              f"--overwrite)")
        self._seed(cfg.seed)
        self._load_data()
        self._build()
        if self.world_size > 1:
            # Same initial weights on every rank (seeded alike above; DDP also broadcasts rank 0's), then
            # each rank its own random stream for noise, dropout and masks.
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)
        self._cancel = False
        self.inference_cost: dict | None = None  # measured at validation, for the model card

    # ---- set-up -------------------------------------------------------------------------------------
    def _validate_config(self) -> None:
        c = self.cfg
        if c.iterations < 1:
            raise ConfigError("--iterations must be at least 1")
        if c.batch_labeled < 1 or c.batch_unlabeled < 0:
            raise ConfigError("--batch-labeled must be ≥ 1 and --batch-unlabeled ≥ 0")
        if c.patch is not None and (len(c.patch) != 3 or any(p < 16 or p % 16 for p in c.patch)):
            raise ConfigError(f"--patch {c.patch}: three sizes, each a multiple of 16 (the V-Net halves it 4×)")
        if c.optimizer is not None and c.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {c.optimizer}: expected one of {OPTIMIZERS}")
        if c.schedule is not None and c.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule {c.schedule}: expected one of {SCHEDULES}")
        if c.dist_timeout <= 0:
            raise ConfigError("--dist-timeout must be a positive number of seconds")

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _load_data(self) -> None:
        c = self.cfg
        self.dataset = load_dataset(Path(c.data))
        self.space = LabelSpace.from_dataset(self.dataset)
        self.prep = Preprocessing(spacing=tuple(c.spacing) if c.spacing else None, intensity=c.intensity)
        train_cases, val_cases = split_validation(self.dataset.training, c.val_cases)
        self.train_cases = [prepare_case(k, self.prep, self.space, True) for k in train_cases]
        self.val_cases = [prepare_case(k, self.prep, self.space, True) for k in val_cases]
        self.unlabeled_cases = [prepare_case(k, self.prep, self.space, False) for k in self.dataset.unlabeled]
        self.patch = list(c.patch) if c.patch else auto_patch([k.image.shape[1:] for k in self.train_cases])

    def _build(self) -> None:
        c = self.cfg
        context = MethodContext(in_channels=1, n_classes=self.space.n_classes, total_iterations=c.iterations,
                                n_tasks=max(1, len(self.space.tasks)), n_domains=max(1, len(self.space.domains)),
                                task_classes=self.space.task_classes or [list(range(1, self.space.n_classes))],
                                domains=self._split_domains(), class_fractions=self._class_fractions(),
                                options=dict(c.method_options))
        self.method = build_method(c.method, context).to(self.device)
        # channels_last for every network of the method (EMA teachers too); compiled: the trainable one.
        self.fast.prepare_network(self.method, self.device, compiled=self.method.trainable())
        if self.method.uses_unlabeled and not self.unlabeled_cases:
            raise ConfigError(f"method {c.method!r} learns from unlabeled images, but {c.data} lists none "
                              f"(add an 'unlabeled' list or imagesUn/, or use --method supervised)")
        self.ddp = self._wrap_distributed()
        pref = self.method.optimizer_settings()
        self.opt_name = c.optimizer or pref.get("optimizer", "sgd")
        lr = c.lr if c.lr is not None else pref.get("lr", 1e-2 if self.opt_name == "sgd" else 1e-3)
        wd = c.weight_decay if c.weight_decay is not None else pref.get("weight_decay", 1e-4)
        params = [p for p in self.method.trainable().parameters() if p.requires_grad]
        if self.opt_name == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=pref.get("momentum", 0.9), weight_decay=wd,
                                             nesterov=bool(pref.get("nesterov", False)))
        else:
            cls = torch.optim.Adam if self.opt_name == "adam" else torch.optim.AdamW
            self.optimizer = cls(params, lr=lr, betas=tuple(pref.get("betas", (0.9, 0.999))), weight_decay=wd)
        self.schedule = c.schedule or pref.get("schedule", "poly")
        total = c.iterations
        milestones = [int(f * total) for f in pref.get("milestones", (0.4, 0.8))]

        def factor(it: int) -> float:
            if self.schedule == "poly":
                return (1 - min(it, total - 1) / total) ** 0.9
            if self.schedule == "step":
                return 0.1 ** sum(it >= m for m in milestones)
            return 1.0

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = self.fast.grad_scaler(self.device)  # loss scaling for fp16 only
        self.labeled_stream = PatchStream(self.train_cases, self.patch, c.batch_labeled, seed=c.seed,
                                          rank=self.rank, fg_ratio=c.fg_ratio, augment=c.augment, with_labels=True,
                                          task_balanced=bool(self.method.opts.get("task_balanced", False)))
        self.unlabeled_stream = None
        if self.method.uses_unlabeled and c.batch_unlabeled > 0:
            self.unlabeled_stream = PatchStream(self.unlabeled_cases, self.patch, c.batch_unlabeled,
                                                seed=c.seed + 7919, rank=self.rank, fg_ratio=0.0,
                                                augment=c.augment,
                                                with_labels=False)

    def _wrap_distributed(self):
        """Under torchrun: SyncBatchNorm (optional) and one DDP around the method's trainable module, which the
        method's forward passes then go through (`set_step_net`). Single process: nothing."""
        trainable = self.method.trainable()
        if self.cfg.sync_bn and self.world_size > 1:
            if self.device.type != "cuda":
                raise ConfigError("--sync-bn: SyncBatchNorm runs on CUDA only; on CPU use a method's norm=instance "
                                  "or norm=group option instead")
            # In place on the trainable module (its parameters and buffers are kept, so the EMA teacher copies
            # made at build time and the checkpoint keys are unaffected); before the optimiser is built.
            converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainable)
            if converted is not trainable:
                raise ConfigError(f"--sync-bn: method {self.cfg.method!r}'s trainable module is itself a BatchNorm")
        if self.world_size == 1:
            return None
        import inspect

        from torch.nn.parallel import DistributedDataParallel
        # Buffers are broadcast once after each step instead of before every forward pass (see _step): methods
        # run several passes per step, and the EMA teacher reads the buffers after the step.
        no_forward_sync = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})  # PyTorch before forward_sync_buffers
        ddp = DistributedDataParallel(
            trainable, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=bool(self.method.ddp_find_unused_parameters),
            static_graph=bool(self.method.ddp_static_graph), **no_forward_sync)
        self.method.set_step_net(ddp)
        return ddp

    def _split_domains(self) -> dict[str, list[str]]:
        ds = self.dataset
        return {split: sorted({k.domain for k in cases if k.domain})
                for split, cases in (("labeled", ds.training), ("unlabeled", ds.unlabeled), ("test", ds.test))}

    def _class_fractions(self) -> list[float]:
        counts = sum(np.bincount(k.label.ravel(), minlength=self.space.n_classes) for k in self.train_cases)
        return [float(v) for v in counts / max(1, counts.sum())]

    # ---- loop ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        c = self.cfg
        start_it, self.best, self.history = 0, {"dice": None, "iteration": None}, []
        elapsed_before = 0.0
        if c.resume:
            start_it, elapsed_before = self._restore()
        self.events.emit("start", total_iterations=c.iterations, start_iteration=start_it, method=c.method,
                         device=str(self.device), patch=self.patch, labeled=len(self.train_cases),
                         validation=len(self.val_cases), unlabeled=len(self.unlabeled_cases),
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
        try:
            for it in range(start_it, c.iterations):
                step_start = time.perf_counter()
                losses = self._step(it)
                self.step_seconds += time.perf_counter() - step_start
                done = it + 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("total", "supervised")})
                if done % emit_every == 0 or done == c.iterations:
                    spent = time.perf_counter() - t0
                    rate = (done - start_it) / max(spent - elapsed_before, 1e-9)
                    self.events.emit("iteration", iteration=done, total_iterations=c.iterations, losses=losses,
                                     lr=self.optimizer.param_groups[0]["lr"],
                                     eta_seconds=(c.iterations - done) / max(rate, 1e-9))
                if self.val_cases and (done % c.val_every == 0 or done == c.iterations):
                    if self.is_main:
                        last_dice = self._validate(done)
                    distributed.barrier()  # no rank runs ahead into the next step's collectives
                if self.world_size > 1:
                    # A signal may reach the ranks in different iterations: stop together or not at all.
                    flag = torch.tensor([int(self._cancel)], device=self.device)
                    self._cancel = bool(distributed.all_reduce_max(flag)[0])
                if done % ckpt_every == 0 or done == c.iterations or self._cancel:
                    self._save_checkpoint(done, time.perf_counter() - t0)
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
                                 _peak_memory_mb(self.device), [], self.step_seconds)
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
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ddp is not None:
            # BatchNorm running statistics: rank 0's everywhere, so that EMA teachers stay identical.
            distributed.broadcast_buffers(self.method.trainable())
        self.method.after_optimizer_step(it)
        return {k: float(v.detach().float()) for k, v in losses.items()}

    # ---- validation ---------------------------------------------------------------------------------
    def _validate(self, iteration: int) -> float:
        net = self.method.inference_network()
        net.eval()
        manifest = self._manifest_for(net, class_space=True)
        per_label: dict[str, list[float]] = {n: [] for n in self.space.names}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        for case in self.val_cases:
            chosen = manifest["labels"]
            if self.space.tasks and case.task >= 0:
                # The case is annotated for its task only: score (and, prompted, predict) those structures.
                chosen = [lab for lab in chosen if lab["task"] == self.space.task_names[case.task]]
            pred = predict_classes(net, manifest, case.image[0], self.device, chosen, overlap=self.cfg.val_overlap,
                                   fast=self.fast)
            for lab in chosen:
                per_label[lab["name"]].append(_dice(pred == lab["value"], case.label == lab["value"]))
        # The model card's measured inference cost: sliding window over a validation case.
        self.inference_cost = {"seconds_per_volume": (time.perf_counter() - start) / len(self.val_cases),
                               "device": str(self.device), "measured_on": "validation cases, preprocessed grid"}
        if self.device.type == "cuda":
            self.inference_cost["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        scores = {n: float(np.mean(v)) for n, v in per_label.items() if v}
        dice = float(np.mean(list(scores.values()))) if scores else float("nan")
        self.history.append({"iteration": iteration, "dice": dice, "per_label": scores})
        self.events.emit("validation", iteration=iteration, dice=dice, per_label=scores)
        if self.best["dice"] is None or dice > self.best["dice"]:
            self.best = {"dice": dice, "iteration": iteration}
            with atomic_path(self.best_ckpt, ".pt") as tmp:
                torch.save({"iteration": iteration, "dice": dice, "inference": net.state_dict()}, tmp)
            self.events.emit("checkpoint", iteration=iteration, path=str(self.best_ckpt), kind="best")
        return dice

    # ---- checkpoints --------------------------------------------------------------------------------
    def _save_checkpoint(self, iteration: int, seconds: float) -> None:
        streams = {"labeled": self.labeled_stream.state(),
                   "unlabeled": self.unlabeled_stream.state() if self.unlabeled_stream else None}
        # Every rank's stream position and random state (each rank resumes its own); a collective.
        per_rank = distributed.all_gather_object({"streams": streams, "torch_rng": torch.get_rng_state()})
        if not self.is_main:
            return
        state = {
            "iteration": iteration, "seconds": seconds, "method_name": self.cfg.method,
            "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(), "streams": streams,
            "best": self.best, "history": self.history,
        }
        if self.world_size > 1:
            state["world_size"] = self.world_size
            state["ranks"] = per_rank
        with atomic_path(self.last_ckpt, ".pt") as tmp:
            torch.save(state, tmp)
        self.events.emit("checkpoint", iteration=iteration, path=str(self.last_ckpt), kind="last")

    def _restore(self) -> tuple[int, float]:
        if not self.last_ckpt.exists():
            raise ConfigError(f"--resume: no checkpoint at {self.last_ckpt}")
        state = torch.load(self.last_ckpt, map_location=self.device, weights_only=True)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise ConfigError(f"--resume: {self.last_ckpt} was written by a run on {saved_world} process(es), "
                              f"this one has {self.world_size}; resume with the same number (the batch and the "
                              f"per-rank sample streams depend on it)")
        if saved_world > 1:
            own = state["ranks"][self.rank]
            state["streams"], state["torch_rng"] = own["streams"], own["torch_rng"]
        if state.get("method_name") != self.cfg.method:
            raise ConfigError(f"--resume: {self.last_ckpt} was trained with {state.get('method_name')!r}, "
                              f"not {self.cfg.method!r}")
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.labeled_stream.load_state(state["streams"]["labeled"])
        if self.unlabeled_stream is not None and state["streams"]["unlabeled"] is not None:
            self.unlabeled_stream.load_state(state["streams"]["unlabeled"])
        self.best, self.history = state["best"], list(state["history"])
        return int(state["iteration"]), float(state["seconds"])

    # ---- the model package --------------------------------------------------------------------------
    def _manifest_for(self, net, class_space: bool = False) -> dict:
        """The model card. With class_space, label values are class indices (what validation compares)."""
        info = _read_label_info(self.cfg.label_info)
        labels = [label_entry(n, (i + 1) if class_space else v, i, info.get(n), self.space.task_of(n))
                  for i, (n, v) in enumerate(zip(self.space.names, self.space.values))]
        tasks = [{"name": t, "index": i, "labels": [n for n in self.space.names if self.space.task_of(n) == t]}
                 for i, t in enumerate(self.space.task_names)]
        return {"labels": labels, "tasks": tasks, "prompted": bool(getattr(net, "prompted", False)),
                "patch_size": [int(p) for p in self.patch], "preprocessing": self.prep.to_dict()}

    def _finish(self, seconds: float, last_dice: float | None) -> TrainResult:
        c = self.cfg
        net = self.method.inference_network()
        peak = _peak_memory_mb(self.device)
        card = {
            "name": c.name or Path(c.out).name.removesuffix(".semiseg"),
            "description": c.description or f"{c.method} trained on {self.dataset.name}",
            "modality": self.dataset.modality,
            **self._manifest_for(net),
            "method": {"name": c.method, "options": self.method.opts},
            "data": {"dataset": self.dataset.name, "labeled": len(self.train_cases),
                     "validation": len(self.val_cases), "unlabeled": len(self.unlabeled_cases)},
            "training": {"iterations": c.iterations, "seconds": round(seconds, 1), "device": str(self.device),
                         "peak_memory_mb": round(peak, 1), "seed": c.seed, "batch_labeled": c.batch_labeled,
                         "batch_unlabeled": c.batch_unlabeled, "optimizer": self.opt_name,
                         "schedule": self.schedule, "amp": self.amp, "world_size": self.world_size,
                         "fast_paths": self.fast.describe(self.device)},
        }
        if self.inference_cost:
            card["inference"] = self.inference_cost
        last_model = None
        if c.export_last or not self.val_cases:
            last_card = {**card, "metrics": {"validation": {"dice": last_dice, "iteration": c.iterations},
                                             "checkpoint": "last"}}
            target = Path(c.out) if not self.val_cases else _suffixed(Path(c.out), "-last")
            save_model(target, net, last_card, overwrite=c.overwrite)
            last_model = target
        if self.val_cases:
            best = torch.load(self.best_ckpt, map_location="cpu", weights_only=True)
            net.load_state_dict(best["inference"])
            card["metrics"] = {"validation": {"dice": best["dice"], "iteration": best["iteration"]},
                               "last": {"dice": last_dice, "iteration": c.iterations}, "checkpoint": "best"}
            save_model(c.out, net, card, overwrite=c.overwrite)
        self.events.emit("done", model=str(c.out), seconds=seconds, best_dice=self.best["dice"],
                         best_iteration=self.best["iteration"], last_dice=last_dice)
        return TrainResult(Path(c.out), last_model if self.val_cases else None, c.iterations, seconds,
                           self.best["dice"], self.best["iteration"], last_dice, peak, self.history,
                           self.step_seconds)


def auto_patch(shapes: list[tuple[int, ...]], cap: int = 128) -> list[int]:
    """Median case shape, rounded down to a multiple of 16 (at least 16, at most `cap`) per axis."""
    med = np.median(np.array(shapes), axis=0)
    return [int(min(cap, max(16, (int(m) // 16) * 16))) for m in med]


def _to_device(batch: dict, device: torch.device, fast: FastPaths) -> dict:
    """The batch's tensors on `device`; 5D images in the network's memory format."""
    return {k: (fast.prepare_input(v.to(device, non_blocking=True)) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(pred, gt).sum() / denom)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _read_label_info(path: str | None) -> dict:
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--label-info {path}: cannot read it as JSON ({exc})") from exc


def _suffixed(path: Path, suffix: str) -> Path:
    name = path.name.removesuffix(".semiseg")
    return path.with_name(f"{name}{suffix}.semiseg")
