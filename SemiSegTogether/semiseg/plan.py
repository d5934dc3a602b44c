"""The planner: a training configuration that finishes within a time budget and fits in memory.

nnU-Net plans a configuration from a dataset fingerprint and the GPU's memory (Isensee et al., Nature Methods
2021; nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py). This planner plans for
the time as well, the same way for every method (no method is special-cased):

1. the dataset's fingerprint (semiseg.fingerprint): spacings, sizes, intensities, label volumes, and the
   thinnest structure, which bounds how coarse the grid may get;
2. the device: CPU cores and memory, or the GPU's model and memory;
3. candidates: target spacings from native to the coarsest that keeps the thinnest structure resolvable
   (and every axis at least 16 voxels), network widths from the method's default down to 8; the patch covers
   the median case (at most 128 a side), shrunk and the batch lowered only when memory demands it;
4. a short timing probe (semiseg.probe) of the method's own training step on this machine calibrates a cost
   model (time ∝ patch voxels × batch × width²); the most expensive candidate (finest grid × widest network)
   that still affords GOAL_ITERATIONS is chosen and probed at its own size, until a choice has its own probe
   (at most three; none probed twice; if they do not settle it, only probed candidates may be chosen);
5. iterations and the validation interval so that planning, data preparation, training, validation (about
   a tenth of the time) and the final export finish within the budget.

Explicit settings (`fixed`) are kept as given and the rest is planned around them.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from semiseg.datasets import load_dataset
from semiseg.devices import cpu_model, resolve_device
from semiseg.errors import ConfigError
from semiseg.fingerprint import Fingerprint, fingerprint, max_spacing_for
from semiseg.infer import window_count
from semiseg.methods import method_class
from semiseg.prepare import LabelSpace, prepare_case, split_validation
from semiseg.probe import StepTiming, forward_seconds, memory_now_mb, probe
from semiseg.training.config import TrainConfig
from semiseg.training.data import auto_patch, method_context
from semiseg.training.progress import format_duration
from semiseg.transforms import Preprocessing

# What a plan aims for before it spends time on resolution. la-dev, 30 min on 2 CPU cores, 3 seeds: 1-1.25 mm
# grids at ~1,500 steps reached 64.7 % Dice, a 2 mm grid at ~5,700 steps 79.8 % (docs/benchmarks).
GOAL_ITERATIONS = 2000
MIN_ITERATIONS = 200  # below this a budget is called too small
MAX_ITERATIONS = 6000  # the LA protocols' length (UA-MT); more time is left unused
VALIDATION_SHARE = 0.1  # of the training time spent validating
MIN_VALIDATIONS, MAX_VALIDATIONS = 2, 20
SPACING_FACTORS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.4, 8.0)  # × the finest native spacing
MIN_WIDTH = 8
PLANNED = ("spacing", "patch", "batch_labeled", "batch_unlabeled", "n_filters", "iterations", "val_every")


def parse_duration(text: str | float | int) -> float:
    """'30m', '1h30m', '90s', '1.5h' or a bare number of minutes → seconds."""
    if isinstance(text, (int, float)):
        return float(text) * 60
    s = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|s)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ConfigError(f"--time {text!r}: expected a duration such as 30m, 1h30m, 90s or 1.5h")
    seconds = sum(float(n) * {"h": 3600, "min": 60, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"--time {text!r}: the budget must be positive")
    return seconds


def parse_memory(text: str | None) -> float | None:
    """'8G', '512M', '2048' (MB) → MB."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([gGmM]?)[bB]?", str(text).strip())
    if not m:
        raise ConfigError(f"--memory {text!r}: expected a size such as 8G or 512M")
    return float(m.group(1)) * (1024 if m.group(2).lower() == "g" else 1)


# ---- the device --------------------------------------------------------------------------------------
def describe_device(device: torch.device) -> dict:
    """What the plan is for: {"type", "name", "threads" (CPU), "memory_mb", "available_mb"}."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        return {"type": "cuda", "name": props.name, "memory_mb": total / 2**20, "available_mb": free / 2**20}
    meminfo = _meminfo()
    return {"type": device.type, "name": cpu_model(), "threads": torch.get_num_threads(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_mb": meminfo.get("MemTotal", 0.0), "available_mb": meminfo.get("MemAvailable", 0.0)}


def _meminfo() -> dict[str, float]:
    try:
        lines = Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    return {k: float(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in lines)}


# ---- the plan --------------------------------------------------------------------------------------
@dataclass
class Candidate:
    spacing: list[float] | None  # None = native
    width: int | None  # the method's n_filters; None when it has no such option
    patch: list[int]
    batch_labeled: int
    batch_unlabeled: int

    def cost(self, uses_unlabeled: bool) -> float:
        """Relative compute of one step: patch voxels × patches × width²."""
        patches = self.batch_labeled + (self.batch_unlabeled if uses_unlabeled else 0)
        return float(np.prod(self.patch)) * patches * float(self.width or 16) ** 2

    def activations(self, uses_unlabeled: bool) -> float:
        """Relative memory of one step: patch voxels × patches × width."""
        patches = self.batch_labeled + (self.batch_unlabeled if uses_unlabeled else 0)
        return float(np.prod(self.patch)) * patches * float(self.width or 16)


@dataclass
class Plan:
    method: str
    budget_seconds: float | None  # None: an estimate of given settings, no budget
    device: dict
    fingerprint: dict
    spacing: list[float] | None
    patch: list[int]
    batch_labeled: int
    batch_unlabeled: int
    options: dict
    iterations: int
    val_every: int
    predicted: dict  # seconds: total, planning, preparation, training, validation, export; step_seconds, ...
    peak_memory_mb: float
    memory_limit_mb: float
    reasons: dict[str, str]
    fixed: list[str] = field(default_factory=list)
    feasible: bool = True
    message: str = ""  # when not feasible: why, and what budget would do
    probes: list[dict] = field(default_factory=list)
    threads: int | None = None  # CPU threads the run uses (None: PyTorch's default, or a GPU run)

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """The run's settings with the planned choices (explicit settings were kept as given)."""
        return replace(cfg, spacing=self.spacing, patch=list(self.patch), batch_labeled=self.batch_labeled,
                       batch_unlabeled=self.batch_unlabeled, method_options=dict(self.options),
                       iterations=self.iterations, val_every=self.val_every, threads=self.threads,
                       plan=self.to_dict())

    def format(self) -> str:
        p = self.predicted
        spacing = "native " + _mm(self.fingerprint["median_spacing"]) if self.spacing is None else _mm(self.spacing)
        width = self.options.get("n_filters")
        rows = [
            ("target spacing", spacing, "spacing"),
            ("patch (d, h, w)", " x ".join(map(str, self.patch)), "patch"),
            ("batch", f"{self.batch_labeled} labeled + {self.batch_unlabeled} unlabeled", "batch"),
            ("network width", f"n_filters {width}" if width else "the method's", "n_filters"),
            ("iterations", str(self.iterations), "iterations"),
            ("validate every", f"{self.val_every} iterations", "val_every"),
        ]
        if self.threads:
            rows.append(("CPU threads", str(self.threads), "threads"))
        dev = self.device
        where = f"{dev['name']} ({dev['type']}" + (f", {dev['threads']} threads" if "threads" in dev else "") + ")"
        budget = format_duration(self.budget_seconds) if self.budget_seconds else "none (the given settings)"
        lines = [f"Plan for {self.method} on {self.fingerprint['dataset']}, budget {budget}, on {where}", ""]
        for title, value, key in rows:
            fixed = " (given)" if key in self.fixed or (key == "batch" and "batch_labeled" in self.fixed) else ""
            lines.append(f"  {title:<16}{value + fixed:<34}{self.reasons.get(key, '')}")
        lines += ["", f"  predicted time  {format_duration(p['total'])}: planning {p['planning']:.0f} s, data "
                      f"{p['preparation']:.0f} s, {self.iterations} steps x {p['step_seconds']:.2f} s = "
                      f"{p['training']:.0f} s, {p['validations']} validations {p['validation']:.0f} s, export "
                      f"{p['export']:.0f} s",
                  f"  peak memory     {self.peak_memory_mb:.0f} MB of {self.memory_limit_mb:.0f} MB allowed "
                  f"({self.reasons.get('memory', '')})"]
        if not self.feasible:
            lines += ["", f"  NOT FEASIBLE: {self.message}"]
        return "\n".join(lines)


def _mm(spacing) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing) + " mm"


def resumed_plan(cfg: TrainConfig) -> tuple[Plan, TrainConfig]:
    """`train --resume --time`: the plan the checkpoint's run follows, not a new one (a new probe would choose
    other iterations or another patch, which the resume must refuse)."""
    from semiseg.resume_settings import load_checkpoint
    last = cfg.workdir_path() / "last.pt"
    if not last.exists():
        raise ConfigError(f"--resume: no checkpoint at {last}")
    saved = load_checkpoint(last, torch.device("cpu")).get("plan")
    if not saved or saved.get("budget_seconds") is None:  # no plan, or only the estimate of given settings
        raise ConfigError(f"--resume --time: {last} comes from a run without --time; resume it without --time, "
                          f"with that run's settings")
    plan = Plan(**saved)
    return plan, plan.apply(cfg)


def estimate(cfg: TrainConfig, spent_seconds: float = 0.0) -> "Plan":
    """No budget: the predicted time and memory of `cfg`'s own settings (one probe at exactly them)."""
    return make_plan(cfg, None, fixed=set(PLANNED), spent_seconds=spent_seconds)


def make_plan(cfg: TrainConfig, budget_seconds: float | None, memory_mb: float | None = None,
              fixed: set[str] | frozenset = frozenset(), spent_seconds: float = 0.0) -> Plan:
    """Plan `cfg.method` on `cfg.data` for `budget_seconds` of wall time (counted from `spent_seconds` ago).

    `fixed` names the settings of PLANNED the user gave (their values are read from `cfg`, `n_filters` from
    `cfg.method_options`); `memory_mb` caps the predicted peak (default: 80 % of the available memory).
    Without a budget (see `estimate`) every setting is taken from `cfg` and only predicted.
    """
    start = time.perf_counter() - spent_seconds
    if budget_seconds is not None and budget_seconds <= 0:
        raise ConfigError("--time: the budget must be positive")
    unknown = set(fixed) - set(PLANNED)
    if unknown:
        raise ConfigError(f"cannot fix {sorted(unknown)}: the planner chooses {', '.join(PLANNED)}")
    ds = load_dataset(Path(cfg.data))
    fp = fingerprint(ds)
    device = resolve_device(cfg.device)
    dev = describe_device(device)
    limit = memory_mb if memory_mb is not None else 0.8 * (dev["available_mb"] or dev["memory_mb"] or 4096)
    space = LabelSpace.from_dataset(ds)
    cls = method_class(cfg.method)
    fit_cases, val_cases = split_validation(ds.training, cfg.validation_cases())
    n_val = len(val_cases)
    domains = {split: sorted({k.domain for k in cases if k.domain})
               for split, cases in (("labeled", ds.training), ("unlabeled", ds.unlabeled), ("test", ds.test))}
    fractions = _class_fractions(fp, space)
    reasons: dict[str, str] = {}
    goal = cfg.iterations if "iterations" in fixed else GOAL_ITERATIONS

    def context_for(cand: Candidate):
        options = dict(cfg.method_options)
        if cand.width is not None:
            options["n_filters"] = cand.width
        return method_context(space, goal, domains, fractions, options)

    candidates = _candidates(cfg, fp, cls, fixed, reasons)
    baseline_mb = memory_now_mb(device)
    probes: list[dict] = []

    def measure(cand: Candidate, steps: int = 2) -> StepTiming:
        timing = probe(cfg.method, context_for(cand), cand.patch, cand.batch_labeled, cand.batch_unlabeled,
                       device, cfg, steps=steps)
        probes.append({"spacing": cand.spacing, "width": cand.width, "patch": cand.patch,
                       "batch": [cand.batch_labeled, cand.batch_unlabeled], **asdict(timing)})
        return timing

    # Calibrate on the cheapest candidate (quick to probe), then walk to the best affordable one.
    reference = min(candidates, key=lambda c: c.cost(True))
    threads_before = torch.get_num_threads()
    threads = cfg.threads or threads_before
    compare = device.type == "cpu" and threads > 1 and cfg.threads is None and budget_seconds is not None
    # An estimate (no budget) times one step only: a long run's estimate should not cost minutes.
    steps = 1 if budget_seconds is not None else 0
    if compare:
        # On cores shared with other work, OpenMP threads waiting for each other can make several threads far
        # slower than one: time the step with one thread, a forward pass with all, and keep the faster.
        torch.set_num_threads(1)
        timing, measured = measure(reference, steps), reference
        torch.set_num_threads(threads)
        several = forward_seconds(cfg.method, context_for(reference), reference.patch, device, cfg)
        if several < timing.window_seconds:
            reasons["threads"] = (f"{threads} threads: a forward pass takes {several:.2f} s against "
                                  f"{timing.window_seconds:.2f} s with 1")
            timing = measure(reference, steps)
        else:
            reasons["threads"] = (f"1 thread: a forward pass takes {timing.window_seconds:.2f} s against "
                                  f"{several:.2f} s with {threads} (the cores are busy with other work)")
            threads = 1
    else:
        torch.set_num_threads(threads)
        timing, measured = measure(reference, steps), reference
        reasons["threads"] = "as given" if cfg.threads else f"{threads} (PyTorch's default)"
    torch.set_num_threads(threads)
    uses_unlabeled = timing.uses_unlabeled
    cache = _cache_mb(fp, device)
    timings = {_key(measured): (measured, timing)}  # every candidate probed so far, by its settings

    def model_for(cand: Candidate) -> _CostModel:
        """The candidate's own measurement, or the probe nearest to it in cost scaled to it."""
        own = timings.get(_key(cand))
        near = own or min(timings.values(), key=lambda ct: abs(math.log(cand.cost(uses_unlabeled) /
                                                                         ct[0].cost(uses_unlabeled))))
        return _CostModel(near[1], near[0], uses_unlabeled, n_val, fp, cfg.val_overlap, baseline_mb, cache,
                          _memory_rate(probes, uses_unlabeled))

    def choose(among: list[Candidate]) -> Candidate | None:
        elapsed = time.perf_counter() - start
        return _choose(among, model_for, budget_seconds or math.inf, elapsed, goal, limit, fixed, cfg, reasons)

    # Choose, probe the choice, choose again with that measurement, until the choice has been measured. A probe
    # is never repeated, and when three probes do not settle it, the choice is among the probed candidates
    # only: the extrapolations disagreed, so only a candidate's own measurement is trusted.
    for _ in range(3):
        chosen = choose(candidates)
        if chosen is None or _key(chosen) in timings:
            break
        timings[_key(chosen)] = (chosen, measure(chosen))
    else:
        chosen = choose([c for c, _ in timings.values()])
    if chosen is None:
        chosen = min(candidates, key=lambda c: c.cost(uses_unlabeled))
    model = model_for(chosen)
    torch.set_num_threads(threads_before)
    prep = _preparation_seconds(ds, fit_cases, val_cases, chosen, cfg)
    elapsed = time.perf_counter() - start
    schedule = model.schedule(chosen, (budget_seconds or math.inf) - elapsed - prep, goal, fixed, cfg)
    peak = model.peak_mb(chosen)
    feasible, message = True, ""
    minimum = cfg.iterations if "iterations" in fixed else MIN_ITERATIONS
    total = elapsed + prep + schedule["training"] + schedule["validation"] + schedule["export"]
    if budget_seconds is not None and (schedule["iterations"] < minimum or total > budget_seconds * 1.02):
        feasible = False
        need = elapsed + prep + model.seconds_for(chosen, minimum, schedule["validations"])
        message = (f"a budget of {format_duration(budget_seconds)} is too small for {cfg.method} on this machine: "
                   f"even on the cheapest grid that keeps the thinnest structure ({fp.smallest['label']}, "
                   f"{fp.smallest['thickness_mm']:.1f} mm) resolvable, {minimum} iterations take longer. A budget "
                   f"of about {format_duration(math.ceil(need / 60) * 60)} would do.")
        schedule["iterations"] = max(schedule["iterations"], 1)
    if peak > limit:
        feasible = False
        message = (message + " " if message else "") + (
            f"The smallest configuration needs about {peak:.0f} MB, more than the {limit:.0f} MB allowed "
            f"(--memory, or free memory).")
    options = dict(cfg.method_options)
    if chosen.width is not None:
        options["n_filters"] = chosen.width
    predicted = {"total": round(total, 1), "planning": round(elapsed, 1), "preparation": round(prep, 1),
                 "training": round(schedule["training"], 1), "validation": round(schedule["validation"], 1),
                 "export": round(schedule["export"], 1), "step_seconds": round(model.step_seconds(chosen), 4),
                 "validation_seconds_each": round(model.validation_seconds(chosen), 2),
                 "validations": schedule["validations"]}
    reasons.setdefault("memory", f"dataset cache {model.cache_mb(chosen.spacing):.0f} MB + training step "
                                 f"{model.step_mb(chosen):.0f} MB + process {baseline_mb:.0f} MB")
    return Plan(method=cfg.method, budget_seconds=budget_seconds, device=dev, fingerprint=fp.to_dict(),
                spacing=chosen.spacing, patch=chosen.patch, batch_labeled=chosen.batch_labeled,
                batch_unlabeled=chosen.batch_unlabeled, options=options, iterations=schedule["iterations"],
                val_every=schedule["val_every"], predicted=predicted, peak_memory_mb=round(peak, 1),
                memory_limit_mb=round(limit, 1), reasons=reasons, fixed=sorted(fixed), feasible=feasible,
                message=message, probes=probes, threads=threads if dev["type"] == "cpu" else None)


def _memory_rate(probes: list[dict], uses_unlabeled: bool) -> float | None:
    """MB per unit of Candidate.activations(), the largest any probe measured."""
    rates = [p["peak_mb"] / Candidate(p["spacing"], p["width"], p["patch"], *p["batch"]).activations(uses_unlabeled)
             for p in probes if p["peak_mb"] is not None]
    return max(rates) if rates else None


def _class_fractions(fp: Fingerprint, space: LabelSpace) -> list[float]:
    """Voxel share of each class (background first) in the median labeled case, for methods that adapt."""
    voxel_ml = float(np.prod(fp.median_spacing)) / 1000.0
    case_ml = float(np.prod(fp.median_shape)) * voxel_ml
    fg = [fp.labels.get(n, {}).get("median_ml", 0.0) / max(case_ml, 1e-9) for n in space.names]
    return [max(0.0, 1.0 - sum(fg)), *fg]


def _candidates(cfg: TrainConfig, fp: Fingerprint, cls, fixed, reasons: dict) -> list[Candidate]:
    """Every (spacing, width) setting the data allows, with the patch that covers the median case."""
    native = fp.median_spacing
    coarsest = max_spacing_for(fp.smallest["thickness_mm"])
    if "spacing" in fixed:
        spacings = [list(cfg.spacing) if cfg.spacing else None]
        reasons["spacing"] = "as given"
    else:
        spacings = []
        for f in SPACING_FACTORS:
            target = [max(s, f * min(native)) for s in native]
            shape = fp.median_shape_at(target)
            # never coarser than the thinnest structure allows (an axis already coarser natively stays native)
            too_coarse = any(t > max(n, coarsest) + 1e-9 for t, n in zip(target, native))
            if f > 1 and (too_coarse or min(shape) < 16):
                break
            spacings.append(None if f == 1.0 else [round(t, 4) for t in target])
        reasons["spacing"] = (f"the finest grid the budget affords; no coarser than {coarsest:.2f} mm, a third "
                              f"of the thinnest structure ({fp.smallest['label']}, {fp.smallest['thickness_mm']:.1f}"
                              f" mm thick), and at least 16 voxels a side")
    default_width = cls.defaults.get("n_filters")
    if default_width is None:
        widths = [None]
        reasons["n_filters"] = "the method has no width option"
    elif "n_filters" in fixed:
        widths = [int(cfg.method_options.get("n_filters", default_width))]
        reasons["n_filters"] = "as given"
    else:
        widths, w = [], int(default_width)
        while w >= MIN_WIDTH:
            widths.append(w)
            w //= 2
        widths = widths or [int(default_width)]
        reasons["n_filters"] = f"the method's {default_width} unless a narrower network is needed for the time"
    bl = cfg.batch_labeled
    bu = cfg.batch_unlabeled
    out = []
    for spacing in spacings:
        shape = fp.median_shape_at(spacing or native)
        if "patch" in fixed:
            patch = list(cfg.patch) if cfg.patch else auto_patch([shape])  # what the run itself would take
        else:
            patch = _square_in_plane(auto_patch([shape]))
        for width in widths:
            out.append(Candidate(spacing, width, patch, bl, bu))
    reasons["patch"] = "as given" if "patch" in fixed else \
        "covers the median case at that spacing (multiples of 16, at most 128; h = w for the 90° turns)"
    reasons["batch"] = "as given" if {"batch_labeled", "batch_unlabeled"} & set(fixed) else \
        "the methods' reference batch (2 + 2), lowered only for memory"
    return out


def _square_in_plane(patch: list[int]) -> list[int]:
    """h = w: the augmentation turns patches by 90° in the axial plane, which must not change their shape."""
    side = max(patch[1], patch[2])
    return [patch[0], side, side]


def _cache_mb(fp: Fingerprint, device: torch.device):
    """MB of the preprocessed dataset in memory at a spacing (float32 images, int64 labels; on the CPU)."""
    labeled_share = fp.counts["labeled"] / max(1, fp.counts["labeled"] + fp.counts["unlabeled"])

    def at(spacing) -> float:
        if device.type == "cuda":
            return 0.0  # host memory, not the GPU's
        voxels = fp.total_voxels_at(spacing or fp.median_spacing)
        return voxels * (4 + 8 * labeled_share) / 2**20

    return at


class _CostModel:
    """Seconds and MB of a candidate, scaled from one probe: time ∝ cost(), step memory ∝ activations()."""

    def __init__(self, timing: StepTiming, measured: Candidate, uses_unlabeled: bool, n_val: int,
                 fp: Fingerprint, overlap: float, baseline_mb: float, cache, mb_per_activation: float | None):
        self.timing, self.measured, self.uses_unlabeled = timing, measured, uses_unlabeled
        # The largest step memory per activation any probe saw: a later probe in the same process can reuse
        # memory the allocator kept, and would under-report.
        self.mb_per_activation = mb_per_activation
        self.n_val, self.fp, self.overlap, self.baseline_mb, self.cache_mb = n_val, fp, overlap, baseline_mb, cache

    def _ratio(self, cand: Candidate) -> float:
        return cand.cost(self.uses_unlabeled) / self.measured.cost(self.uses_unlabeled)

    def step_seconds(self, cand: Candidate) -> float:
        return self.timing.step_seconds * self._ratio(cand)

    def validation_seconds(self, cand: Candidate) -> float:
        """Sliding window over every validation case (overlap as configured), plus a checkpoint write."""
        shape = self.fp.median_shape_at(cand.spacing or self.fp.median_spacing)
        windows = window_count(shape, cand.patch, self.overlap)
        width_ratio = float(cand.width or 16) ** 2 / float(self.measured.width or 16) ** 2
        voxel_ratio = float(np.prod(cand.patch)) / float(np.prod(self.measured.patch))
        per_window = self.timing.window_seconds * width_ratio * voxel_ratio
        return self.n_val * windows * per_window + self.checkpoint_seconds(cand)

    def checkpoint_seconds(self, cand: Candidate) -> float:
        # Weights, optimiser state and teacher: about 4 copies of the parameters, written at ~200 MB/s.
        params = self.timing.parameters * float(cand.width or 16) ** 2 / float(self.measured.width or 16) ** 2
        return 0.2 + 4 * 4 * params / 2**20 / 200

    def step_mb(self, cand: Candidate) -> float:
        if self.mb_per_activation is None:  # unmeasured: 40 float32 activations per voxel, patch and channel
            return 40 * 4 * cand.activations(self.uses_unlabeled) / 2**20
        return self.mb_per_activation * cand.activations(self.uses_unlabeled)

    def peak_mb(self, cand: Candidate) -> float:
        return self.baseline_mb + self.cache_mb(cand.spacing) + self.step_mb(cand)

    def export_seconds(self, cand: Candidate) -> float:
        return 1.0 + 2 * self.checkpoint_seconds(cand)

    def schedule(self, cand: Candidate, seconds: float, goal: int, fixed, cfg: TrainConfig) -> dict:
        """Iterations and validation interval that fill `seconds` (all of it but the export)."""
        step, val = self.step_seconds(cand), self.validation_seconds(cand)
        export = self.export_seconds(cand)
        first = max(0.0, self.timing.first_seconds - self.timing.step_seconds) * self._ratio(cand)
        room = max(0.0, seconds - export - first)
        if "val_every" in fixed:
            val_every = cfg.val_every
            if "iterations" in fixed:
                iterations = cfg.iterations
            else:
                iterations = int(room / (step + val / max(1, val_every)))
        else:
            n = int(np.clip(VALIDATION_SHARE * room / max(val, 1e-9), MIN_VALIDATIONS, MAX_VALIDATIONS))
            iterations = cfg.iterations if "iterations" in fixed else int((room - n * val) / step)
            iterations = int(np.clip(iterations, 0, MAX_ITERATIONS if "iterations" not in fixed else iterations))
            val_every = max(1, math.ceil(max(iterations, 1) / n))
        iterations = min(iterations, MAX_ITERATIONS) if "iterations" not in fixed else iterations
        validations = -(-iterations // max(val_every, 1))  # a bad --val-every is refused by the training checks
        return {"iterations": iterations, "val_every": val_every, "validations": validations,
                "training": first + iterations * step, "validation": validations * val, "export": export}

    def seconds_for(self, cand: Candidate, iterations: int, validations: int) -> float:
        return (iterations * self.step_seconds(cand) + max(validations, MIN_VALIDATIONS) *
                self.validation_seconds(cand) + self.export_seconds(cand))


def _choose(candidates, model_for, budget: float, elapsed: float, goal: int, limit: float, fixed,
            cfg: TrainConfig, reasons: dict) -> Candidate | None:
    """The most expensive candidate that fits in memory and affords `goal` iterations; else the cheapest.
    `model_for(candidate)` is the cost model that predicts it."""
    fitting = []
    for cand in candidates:
        cand = _fit_memory(cand, model_for(cand), limit, fixed)
        if cand is not None:
            fitting.append(cand)
    if not fitting:
        reasons["memory"] = f"nothing fits in {limit:.0f} MB, even at batch 1 + 1 and patch 16 x 16 x 16"
        return None
    uses_unlabeled = model_for(fitting[0]).uses_unlabeled
    # Prefer cost (finer grid x wider network), then the finer spacing.
    fitting.sort(key=lambda c: (c.cost(uses_unlabeled), -(max(c.spacing) if c.spacing else 0)), reverse=True)
    room = budget - elapsed
    for cand in fitting:
        if model_for(cand).schedule(cand, room, goal, fixed, cfg)["iterations"] >= goal:
            return cand
    return fitting[-1]


def _key(cand: Candidate) -> tuple:
    """A candidate's settings, hashable: two candidates with the same key are the same run."""
    return (tuple(cand.spacing or ()), cand.width, tuple(cand.patch), cand.batch_labeled, cand.batch_unlabeled)


def _fit_memory(cand: Candidate, model: _CostModel, limit: float, fixed) -> Candidate | None:
    """The candidate, with its patch shrunk and then its batch lowered until it fits `limit` MB."""
    while model.peak_mb(cand) > limit:
        if "patch" not in fixed and max(cand.patch) > 16:
            axis = int(np.argmax(cand.patch))
            patch = list(cand.patch)
            patch[axis] -= 16
            cand = replace(cand, patch=patch)
        elif "batch_labeled" not in fixed and (cand.batch_labeled > 1 or cand.batch_unlabeled > 1):
            cand = replace(cand, batch_labeled=1, batch_unlabeled=min(1, cand.batch_unlabeled))
        else:
            return None
    return cand


def _preparation_seconds(ds, fit_cases, val_cases, cand: Candidate, cfg: TrainConfig) -> float:
    """Reading and preprocessing every case the run caches: one labeled case timed, times the case count."""
    prep = Preprocessing(spacing=tuple(cand.spacing) if cand.spacing else None, intensity=cfg.intensity or "zscore")
    space = LabelSpace.from_dataset(ds)
    start = time.perf_counter()
    prepare_case(fit_cases[0], prep, space, True)
    one = time.perf_counter() - start
    return one * (len(fit_cases) + len(val_cases) + len(ds.unlabeled)) + 1.0  # + building the method
