"""Preprocessing (identical at training and prediction) and training augmentation.

Preprocessing maps a Volume onto the model's grid (target spacing) and
intensity scale; `restore_to_grid` maps probabilities back, so a prediction lies
exactly on the input's grid. Augmentation and patch sampling operate on the
preprocessed numpy arrays, channel-first for images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    NormalizeIntensity,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianNoise,
    RandRotate90,
    RandScaleIntensity,
    RandShiftIntensity,
    Resize,
    Rotate90,
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
)
from monai.data import get_track_meta, set_track_meta
from monai.utils import convert_to_numpy, convert_to_tensor

from .errors import ConfigError, DataError
from .orientation import canonical_shape, canonical_spacing, from_canonical, to_canonical
from .volume import Volume

INTENSITY_MODES = ("zscore", "ct", "percentile", "none")
ORIENTATIONS = ("canonical", "native")


def _triple(value, what: str, positive: bool = True) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be 3 numbers, got {value!r}") from None
    if len(out) != 3 or not all(np.isfinite(out)) or (positive and min(out) <= 0):
        raise ConfigError(f"{what} must be 3 {'positive ' if positive else ''}numbers, got {value!r}")
    return out


def _pair(value, what: str) -> tuple[float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be 2 numbers, got {value!r}") from None
    if len(out) != 2 or not out[0] < out[1]:
        raise ConfigError(f"{what} must be 2 increasing numbers, got {value!r}")
    return out


@dataclass
class Preprocessing:
    spacing: tuple[float, float, float] | None = None  # target (x, y, z) mm; None keeps the native grid
    intensity: str = "zscore"  # "zscore" | "ct" | "percentile" | "none"
    ct_window: tuple[float, float] = (-125.0, 275.0)  # HU range mapped to [0, 1] for "ct"
    percentiles: tuple[float, float] = (0.5, 99.5)  # mapped to [0, 1] for "percentile"
    # "canonical": axes permuted/flipped to LPS before the network (semiseg.orientation); "native": as stored
    # (what models written before this setting existed did, hence the default when a card does not say).
    orientation: str = "native"

    def __post_init__(self):
        # Normalise lists (from JSON) to tuples and reject bad settings early,
        # before a long training run stores them in a model.
        if self.spacing is not None:
            self.spacing = _triple(self.spacing, "preprocessing spacing")
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError(
                f"unknown intensity normalisation {self.intensity!r}; choose one of {', '.join(INTENSITY_MODES)}"
            )
        if self.orientation not in ORIENTATIONS:
            raise ConfigError(f"unknown orientation {self.orientation!r}; choose one of {', '.join(ORIENTATIONS)}")
        self.ct_window = _pair(self.ct_window, "ct_window")
        self.percentiles = _pair(self.percentiles, "percentiles")
        if not (0.0 <= self.percentiles[0] and self.percentiles[1] <= 100.0):
            raise ConfigError(f"percentiles must lie in [0, 100], got {self.percentiles}")

    def to_dict(self) -> dict:
        """The settings that act: the CT window only for "ct", the percentiles only for "percentile"."""
        out = {"spacing": None if self.spacing is None else list(self.spacing), "intensity": self.intensity}
        if self.intensity == "ct":
            out["ct_window"] = list(self.ct_window)
        if self.intensity == "percentile":
            out["percentiles"] = list(self.percentiles)
        out["orientation"] = self.orientation
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        if not isinstance(d, dict):
            raise ConfigError(f"preprocessing must be an object, got {type(d).__name__}")
        known = {"spacing", "intensity", "ct_window", "percentiles", "orientation"}
        unknown = sorted(set(d) - known)
        if unknown:
            # A setting we do not know would be silently ignored, so the
            # prediction would not see what the training saw.
            raise ConfigError(f"unknown preprocessing settings {unknown}; known: {sorted(known)}")
        return cls(**d)


def resampled_shape(shape_zyx: Sequence[int], spacing_xyz: Sequence[float], target_xyz: Sequence[float]) -> tuple:
    """Array shape (z, y, x) after resampling from `spacing_xyz` to `target_xyz`."""
    spacing_zyx = tuple(spacing_xyz)[::-1]
    target_zyx = tuple(target_xyz)[::-1]
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_zyx, spacing_zyx, target_zyx))


def _oriented(volume: Volume, prep: Preprocessing) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The array (z, y, x) and spacing (x, y, z) in the orientation the network works in."""
    if prep.orientation == "canonical":
        return to_canonical(volume.array, volume.direction), canonical_spacing(volume.spacing, volume.direction)
    return volume.array, tuple(volume.spacing)


def oriented_shape(volume: Volume, prep: Preprocessing) -> tuple[int, int, int]:
    """Shape (z, y, x) of the volume's own grid in the network's orientation (before resampling)."""
    if prep.orientation == "canonical":
        return canonical_shape(volume.array.shape, volume.direction)
    return tuple(volume.array.shape)


def to_input_orientation(array, volume: Volume, prep: Preprocessing):
    """A (..., z, y, x) array in the network's orientation, back in the stored order of `volume`."""
    return from_canonical(array, volume.direction) if prep.orientation == "canonical" else array


def _target_shape(shape_zyx, spacing_xyz, prep: Preprocessing) -> tuple:
    if prep.spacing is None:
        return tuple(shape_zyx)
    return resampled_shape(shape_zyx, spacing_xyz, prep.spacing)


def _check_volume(volume: Volume, what: str) -> None:
    if volume.array.ndim != 3:
        raise DataError(f"{volume.path or what}: expected a 3D volume, got shape {volume.array.shape}")
    if min(volume.array.shape) < 1:
        raise DataError(f"{volume.path or what}: empty volume of shape {volume.array.shape}")


def preprocess_image(volume: Volume, prep: Preprocessing) -> np.ndarray:
    """Image on the model's grid and intensity scale: float32 (z, y, x).

    Takes no label on purpose: whatever happens here also happens at
    prediction, where there is none.
    """
    return preprocess_image_tensor(volume, prep, torch.device("cpu")).numpy()


def preprocess_image_tensor(volume: Volume, prep: Preprocessing, device: torch.device) -> torch.Tensor:
    """`preprocess_image` computed on `device` (the GPU at prediction): float32 (z, y, x) tensor there.

    The same MONAI transforms on a tensor that lives on `device`, so the raw volume crosses to the GPU
    once and the resampling and normalisation run there.
    """
    _check_volume(volume, "image")
    oriented, spacing = _oriented(volume, prep)
    arr = np.asarray(oriented, dtype=np.float32)
    img = torch.from_numpy(np.ascontiguousarray(arr)).to(device)[None]
    if not bool(torch.isfinite(img).all()):
        raise DataError(f"{volume.path or 'image'}: contains NaN or infinite voxels")
    shape = _target_shape(arr.shape, spacing, prep)
    if shape != tuple(arr.shape):
        # Blur before shrinking so downsampling does not alias; trilinear with
        # align_corners=False, the same convention restore_to_grid inverts.
        down = any(t < n for t, n in zip(shape, arr.shape))
        img = Resize(shape, mode="trilinear", align_corners=False, anti_aliasing=down)(img)
    if prep.intensity == "zscore":
        # Over the whole image, not only nonzero voxels, as in the LA benchmark.
        img = NormalizeIntensity(nonzero=False)(img)
    elif prep.intensity == "ct":
        lo, hi = prep.ct_window
        img = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(img)
    elif prep.intensity == "percentile":
        lo, hi = prep.percentiles
        img = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)(img)
    return convert_to_tensor(img, dtype=torch.float32, device=device, track_meta=False)[0]


def preprocess_label(label: Volume, prep: Preprocessing) -> np.ndarray:
    """Label map on the same grid as preprocess_image gives its image: int64 (z, y, x)."""
    _check_volume(label, "label")
    oriented, spacing = _oriented(label, prep)
    arr = np.asarray(oriented)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or np.any(arr != np.round(arr)):
            raise DataError(f"{label.path or 'label'}: label values must be whole numbers")
    if arr.min() < 0:
        raise DataError(f"{label.path or 'label'}: negative label value {int(arr.min())}")
    shape = _target_shape(arr.shape, spacing, prep)
    if shape == tuple(arr.shape):
        return arr.astype(np.int64)
    # "nearest-exact" samples voxel centres (torch's plain "nearest" is off by
    # half a voxel); float32 holds label values exactly.
    lab = torch.from_numpy(arr.astype(np.float32))[None]
    lab = Resize(shape, mode="nearest-exact")(lab)
    return np.rint(convert_to_numpy(lab)[0]).astype(np.int64)


def restore_to_grid(probabilities: torch.Tensor, shape_zyx: Sequence[int]) -> torch.Tensor:
    """(C, d, h, w) probabilities on the preprocessing grid -> (C, *shape_zyx) on the original grid."""
    if probabilities.ndim != 4:
        raise ValueError(f"expected (C, d, h, w) probabilities, got shape {tuple(probabilities.shape)}")
    shape = tuple(int(n) for n in shape_zyx)
    if tuple(probabilities.shape[1:]) == shape:
        return probabilities
    return F.interpolate(probabilities[None], size=shape, mode="trilinear", align_corners=False)[0]


AUGMENTATION_STRENGTHS = ("none", "light", "standard", "strong")


class Augmentation:
    """Random spatial (image + label) and intensity (image only) augmentation.

    Call with {"image": (1, D, H, W) float32, "label": (D, H, W) int (optional)}.
    Each spatial transform is randomised once and applied with the same
    parameters to the image and the label, so they stay aligned. Pass an
    `rng` (numpy Generator) to draw the parameters from it: the caller's
    generator state then fully determines the stream.
    """

    def __init__(self, strength: str = "standard", track_meta: bool = False):
        if strength not in AUGMENTATION_STRENGTHS:
            raise ConfigError(
                f"unknown augmentation strength {strength!r}; choose one of {', '.join(AUGMENTATION_STRENGTHS)}"
            )
        self.strength = strength
        self.track_meta = track_meta  # True: MONAI's bookkeeping kept, as before (`semiseg.speed --compare`)
        p = {"none": 0.0, "light": 0.15, "standard": 0.2, "strong": 0.35}[strength]
        self.spatial = []
        self.intensity = []
        if strength != "none":
            self.spatial = [RandFlip(prob=0.5, spatial_axis=a) for a in range(3)]
            # 90 degree turns only in the axial (y, x) plane: z is often anisotropic.
            self.spatial.append(RandRotate90(prob=0.5, max_k=3, spatial_axes=(1, 2)))
        if strength in ("standard", "strong"):
            big = strength == "strong"
            self.spatial.append(
                RandAffine(
                    prob=p,
                    rotate_range=(0.35 if big else 0.2, 0.05, 0.05),
                    scale_range=(0.15 if big else 0.1,) * 3,
                    # Same padding for image and label keeps them aligned at the border.
                    padding_mode="border",
                )
            )
        if strength != "none":
            self.intensity = [
                RandScaleIntensity(factors=0.1 + p / 2, prob=p),
                RandShiftIntensity(offsets=0.1 + p / 2, prob=p),
                RandAdjustContrast(gamma=(0.7, 1.5), prob=p, retain_stats=True),
                RandGaussianNoise(std=0.05 + p / 5, prob=p),
            ]
        self._rng = np.random.default_rng()

    def set_random_state(self, seed: int | None = None) -> "Augmentation":
        """Seed the generator used when no rng is passed to a call."""
        self._rng = np.random.default_rng(seed)
        return self

    def __call__(self, data: dict, rng: np.random.Generator | None = None) -> dict:
        if self.strength == "none":
            return data
        # MONAI's MetaTensor bookkeeping (an affine per transform, torch.eye and matrix products each time) is
        # half of the augmentation's CPU time and nothing here reads it: off for the call, restored after.
        tracking = get_track_meta()
        set_track_meta(self.track_meta)
        try:
            return self._apply(data, self._rng if rng is None else rng)
        finally:
            set_track_meta(tracking)

    def _apply(self, data: dict, rng: np.random.Generator) -> dict:
        # One MONAI RandomState per call, seeded from the caller's generator.
        state = np.random.RandomState(int(rng.integers(0, 2**32 - 1)))
        for t in (*self.spatial, *self.intensity):
            t.set_random_state(state=state)

        image = torch.as_tensor(np.asarray(data["image"], dtype=np.float32))
        if image.ndim != 4:
            raise ValueError(f"augmentation expects an image of shape (C, D, H, W), got {tuple(image.shape)}")
        label = data.get("label")
        lab = None
        if label is not None:
            label = np.asarray(label)
            if label.shape != tuple(image.shape[1:]):
                raise ValueError(f"label shape {label.shape} differs from the image's {tuple(image.shape[1:])}")
            lab = torch.as_tensor(label.astype(np.float32))[None]
        for t in self.spatial:
            t.randomize(None)
            if isinstance(t, RandRotate90):
                # A quarter turn swaps height and width: on a patch where they differ the batch would no longer
                # stack, so there a drawn odd number of quarter turns becomes a half turn (same draws).
                k = _axial_turns(t, image.shape)
                if k:
                    image = Rotate90(k, t.spatial_axes)(image)
                    if lab is not None:
                        lab = Rotate90(k, t.spatial_axes)(lab)
            elif isinstance(t, RandAffine):
                image = t(image, mode="bilinear", randomize=False)
                if lab is not None:
                    lab = t(lab, mode="nearest", randomize=False)
            else:
                image = t(image, randomize=False)
                if lab is not None:
                    lab = t(lab, randomize=False)
        for t in self.intensity:
            image = t(image)
        out = dict(data)
        out["image"] = np.ascontiguousarray(convert_to_numpy(image, dtype=np.float32))
        if lab is not None:
            out["label"] = np.ascontiguousarray(np.rint(convert_to_numpy(lab)[0]).astype(label.dtype))
        return out


def _axial_turns(t: RandRotate90, shape) -> int:
    """Quarter turns to apply for a randomised RandRotate90 on a (C, D, H, W) tensor: 0 when not drawn."""
    if not t._do_transform:
        return 0
    k = t._rand_k % 4
    h, w = (shape[1 + a] for a in t.spatial_axes)
    return 2 if k % 2 and h != w else k


def build_augmentation(strength: str = "standard", track_meta: bool = False) -> Augmentation:
    """Training augmentation: "none" | "light" (flips, axial 90° turns, mild intensity) |
    "standard" (+ small affine) | "strong" (larger and more frequent). `track_meta` keeps MONAI's
    MetaTensor bookkeeping on (slower, same values): only to measure what turning it off saved."""
    return Augmentation(strength, track_meta)


def foreground_voxels(label: np.ndarray, max_per_class: int = 10000) -> dict[int, np.ndarray]:
    """{class value: (N, 3) voxel indices} for every foreground class of `label`.

    Long lists are thinned with a fixed stride (deterministic), as nnU-Net
    caps its stored foreground locations, to bound memory and time.
    """
    out = {}
    flat = label.ravel()
    for value in np.unique(flat):
        if value == 0:
            continue
        idx = np.flatnonzero(flat == value)
        if len(idx) > max_per_class:
            idx = idx[:: int(np.ceil(len(idx) / max_per_class))]
        out[int(value)] = np.stack(np.unravel_index(idx, label.shape), axis=1)
    return out


def sample_patch(
    image: np.ndarray,
    label: np.ndarray | None,
    patch: Sequence[int],
    rng: np.random.Generator,
    fg_ratio: float = 0.33,
    foreground: dict[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random (1, d, h, w) crop of `image` and the matching (d, h, w) crop of `label`.

    With probability `fg_ratio`, and a label with foreground, the crop is
    centred on a foreground voxel of a randomly chosen class (nnU-Net's
    oversampling, which keeps small classes in view). Volumes smaller than the
    patch are padded: the image with its minimum, the label with 0.
    `foreground` (from foreground_voxels(label)) saves rescanning the label.
    """
    patch = tuple(int(p) for p in patch)
    if image.ndim != 4 or len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"need a (1, D, H, W) image and 3 positive patch sizes, got {image.shape} and {patch}")
    shape = image.shape[1:]
    if label is not None and label.shape != shape:
        raise ValueError(f"label shape {label.shape} differs from the image's {shape}")
    # Decide oversampling first so the number of draws does not depend on the data.
    want_fg = rng.random() < fg_ratio

    pad = [max(0, p - n) for p, n in zip(patch, shape)]
    before = np.array([q // 2 for q in pad])
    if any(pad):
        widths = [(q // 2, q - q // 2) for q in pad]
        image = np.pad(image, [(0, 0), *widths], mode="constant", constant_values=image.min())
        if label is not None:
            label = np.pad(label, widths, mode="constant", constant_values=0)
        shape = image.shape[1:]
    high = np.array(shape) - np.array(patch)  # largest valid start per axis

    centre = None
    if want_fg and label is not None:
        fg = foreground_voxels(label) if foreground is None else foreground
        classes = [c for c, v in fg.items() if len(v)]
        if classes:
            cls = classes[int(rng.integers(len(classes)))]
            vox = fg[cls][int(rng.integers(len(fg[cls])))]
            # Indices from a caller's foreground map refer to the unpadded label.
            centre = vox + (before if foreground is not None else 0)
    if centre is not None:
        start = np.clip(np.asarray(centre) - np.array(patch) // 2, 0, high)
    else:
        start = np.array([int(rng.integers(0, h + 1)) for h in high])
    sl = tuple(slice(int(s), int(s) + p) for s, p in zip(start, patch))
    img_patch = np.ascontiguousarray(image[(slice(None), *sl)])
    lab_patch = None if label is None else np.ascontiguousarray(label[sl])
    return img_patch, lab_patch

