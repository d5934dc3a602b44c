"""Prediction: sliding-window inference on any image, label map out on exactly the input's grid.

MONAI's `sliding_window_inference` does the windows (Gaussian or constant blending, aggregation
on the device, padding of images smaller than the patch). Nothing here reads a label.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage
from torch import nn

from semiseg.errors import ConfigError
from semiseg.fastpaths import FastPaths, autocast
from semiseg.input_profile import profile_warnings
from semiseg.oblique import OBLIQUE_DEGREES, axis_aligned, labels_onto
from semiseg.orientation import obliquity_degrees
from semiseg.prepare import preprocess_channels
from semiseg.prompts import merge_task_probabilities
from semiseg.transforms import (Preprocessing, oriented_shape, preprocess_image_tensor, restore_to_grid,
                                to_input_orientation)
from semiseg.volume import Volume
from semiseg.window_batch import choose_sw_batch_size, parse_sw_batch_size

Progress = Callable[[float], None]

# The 8 mirrorings of a (N, C, d, h, w) window: nnU-Net's default test-time augmentation. Our training flips
# every axis (all augmentation strengths but "none"), so each mirrored window is one the network learned.
MIRRORS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))


def check_window_settings(overlap: float, sw_batch_size: int | str) -> None:
    """ConfigError for a sliding-window setting MONAI would fail on (or loop forever with)."""
    if not (isinstance(overlap, (int, float)) and 0.0 <= overlap < 1.0):
        raise ConfigError(f"--overlap {overlap}: must be at least 0 and less than 1 (windows overlap by this "
                          f"fraction; 0.5 is the default)")
    parse_sw_batch_size(sw_batch_size)


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits (for progress reporting)."""
    total = 1
    for size, roi in zip(shape, patch):
        if size > roi:  # a smaller axis is padded to one window
            total *= math.ceil((size - roi) / max(int(roi * (1 - overlap)), 1)) + 1
    return total


def sliding_window_probabilities(net: nn.Module, image: torch.Tensor, patch: Sequence[int], overlap: float = 0.5,
                                 sw_batch_size: int | str = "auto", blend: str = "gaussian", task: int | None = None,
                                 fast: FastPaths | None = None, progress: Progress | None = None,
                                 mirror: bool = False) -> torch.Tensor:
    """Softmax probabilities (1, C, d, h, w) for a preprocessed image (1, 1, d, h, w) on its device.

    `sw_batch_size` "auto" fits the windows per pass to the free GPU memory (1 on a CPU); `fast` (default:
    FastPaths()) sets mixed precision and the window memory format. `mirror` averages each window's softmax
    over its 8 mirrorings (8x the network passes), as nnU-Net predicts by default.
    """
    device = image.device
    fast = fast or FastPaths()
    dtype = fast.amp_dtype(device)

    def once(window: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            if task is None:
                logits = net(window)
            else:
                logits = net(window, task=torch.full((window.shape[0],), task, dtype=torch.long, device=device))
        return logits.float().softmax(1)

    def forward(window: torch.Tensor) -> torch.Tensor:
        window = fast.prepare_input(window)
        if not mirror:
            return once(window)
        return sum(once(window.flip(axes)).flip(axes) for axes in MIRRORS) / len(MIRRORS)

    n_windows = window_count(image.shape[2:], patch, overlap)
    sw_batch_size = choose_sw_batch_size(sw_batch_size, forward, patch, n_windows, device)
    expected = max(1, math.ceil(n_windows / sw_batch_size))
    done = [0]

    def predictor(window: torch.Tensor) -> torch.Tensor:
        probs = forward(window)
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / expected, 1.0))
        return probs

    with torch.no_grad():
        return sliding_window_inference(image, roi_size=tuple(patch), sw_batch_size=sw_batch_size,
                                        predictor=predictor, overlap=overlap, mode=blend, sw_device=device,
                                        device=device)


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Per label value, keep only its largest 26-connected component (the LA lineage's post-processing)."""
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        comp, n = ndimage.label(labels == value, structure=np.ones((3, 3, 3)))
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        out[comp == (np.argmax(sizes) + 1)] = value
    return out


def select_prompts(manifest: dict, prompts: Sequence[str] | None) -> list[dict]:
    """The manifest's labels the user asked for (all when none named); unknown names are an error."""
    labels = manifest["labels"]
    if not prompts:
        return list(labels)
    by_name = {lab["name"].lower(): lab for lab in labels}
    unknown = [p for p in prompts if p.strip().lower() not in by_name]
    if unknown:
        raise ConfigError(f"unknown prompt(s) {unknown}; this model knows {[lab['name'] for lab in labels]}")
    return [by_name[p.strip().lower()] for p in prompts]


def predict_classes(net: nn.Module, manifest: dict, image: np.ndarray | torch.Tensor, device: torch.device,
                    chosen: list[dict] | None = None, overlap: float = 0.5, sw_batch_size: int | str = "auto",
                    blend: str = "gaussian", out_shape: Sequence[int] | None = None, fast: FastPaths | None = None,
                    progress: Progress | None = None, mirror: bool = False) -> np.ndarray:
    """Preprocessed image (d, h, w), or (C, d, h, w) for C channels, numpy or a tensor on any device → label map
    of the manifest's label *values*, on `out_shape` (the original grid) or on the preprocessed grid when
    `out_shape` is None."""
    chosen = chosen if chosen is not None else manifest["labels"]
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = image.to(device=device, dtype=torch.float32)
    x = x[None, None] if x.ndim == 3 else x[None]
    patch = manifest["patch_size"]
    kwargs = dict(patch=patch, overlap=overlap, sw_batch_size=sw_batch_size, blend=blend, fast=fast, mirror=mirror)

    def to_grid(probs: torch.Tensor) -> torch.Tensor:
        return probs if out_shape is None else restore_to_grid(probs, tuple(out_shape))

    if manifest.get("prompted"):
        tasks = [t for t in manifest["tasks"] if any(lab.get("task") == t["name"] for lab in chosen)]
        per_task = []
        for i, task in enumerate(tasks):
            sub = _sub_progress(progress, i, len(tasks))
            probs = sliding_window_probabilities(net, x, task=task["index"], progress=sub, **kwargs)[0]
            values = [lab["value"] for lab in manifest["labels"] if lab.get("task") == task["name"]]
            per_task.append((values, to_grid(probs)))
        labels = merge_task_probabilities(per_task)
    else:
        probs = to_grid(sliding_window_probabilities(net, x, progress=progress, **kwargs)[0])
        lut = torch.tensor([0, *[lab["value"] for lab in manifest["labels"]]], device=probs.device)
        labels = lut[probs.argmax(0)]
    wanted = torch.tensor([lab["value"] for lab in chosen], device=labels.device)
    labels = torch.where(torch.isin(labels, wanted), labels, torch.zeros_like(labels))
    out = labels.to("cpu").numpy()
    return out.astype(np.uint8) if out.size == 0 or out.max() <= 255 else out.astype(np.int32)


def _sub_progress(progress: Progress | None, i: int, n: int) -> Progress | None:
    if progress is None:
        return None
    return lambda f: progress((i + f) / n)


def predict_volume(net: nn.Module, manifest: dict, volume: Volume | Sequence[Volume], device: torch.device,
                   prompts: Sequence[str] | None = None, overlap: float = 0.5, sw_batch_size: int | str = "auto",
                   blend: str = "gaussian", lcc: bool = False, fast: FastPaths | None = None,
                   preprocess_on_device: bool = True, progress: Progress | None = None,
                   mirror: bool = False) -> tuple[Volume, dict]:
    """Image volume (or its channels, in order, on one grid) → (label volume on exactly the input's grid, timing
    and memory stats). `mirror`: test-time mirroring (see `sliding_window_probabilities`).

    `preprocess_on_device` resamples and normalises the image on `device` (the GPU, when it is one)
    rather than on the CPU with numpy; both give the same image within float rounding.
    """
    check_window_settings(overlap, sw_batch_size)
    channels = [volume] if isinstance(volume, Volume) else list(volume)
    expected = len(manifest.get("channels") or [None])
    if len(channels) != expected:
        raise ConfigError(f"{channels[0].path or 'image'}: this model reads {expected} channel(s) per case "
                          f"({', '.join(manifest.get('channels') or [])}); got {len(channels)}")
    volume = channels[0]
    chosen = select_prompts(manifest, prompts)
    fast = fast or FastPaths()
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prep = Preprocessing.from_dict(manifest["preprocessing"])
    # A model of canonical orientation gets an oblique scan resampled axis-aligned (and its labels back).
    realign = prep.orientation == "canonical" and obliquity_degrees(volume.direction) > OBLIQUE_DEGREES
    work = [axis_aligned(v) for v in channels] if realign else channels
    if preprocess_on_device:
        image = torch.stack([preprocess_image_tensor(v, prep, device) for v in work])
    else:
        image = preprocess_channels(work, prep)
    work = work[0]
    net = fast.prepare_network(net.to(device).eval(), device)
    labels = predict_classes(net, manifest, image, device, chosen, overlap, sw_batch_size, blend,
                             out_shape=oriented_shape(work, prep), fast=fast, progress=progress, mirror=mirror)
    labels = np.ascontiguousarray(to_input_orientation(labels, work, prep))
    if realign:
        labels = labels_onto(work.with_array(labels), volume)
    if lcc:
        labels = keep_largest_component(labels)
    stats = {"seconds": time.perf_counter() - start, "device": str(device), "fast_paths": fast.describe(device),
             "warnings": profile_warnings(manifest.get("input_profile"), volume.spacing, volume.direction, image[0],
                                          realigned=realign)}
    if device.type == "cuda":
        stats["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return volume.with_array(labels), stats
