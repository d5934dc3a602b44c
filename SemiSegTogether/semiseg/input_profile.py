"""What the training scans looked like, so that prediction can say when a scan is far from it.

A model card's `input_profile` records the training images' spacing range (canonical axes, mm), their
largest obliquity, and the median intensity quantiles after normalisation. At prediction a scan whose
spacing lies well outside that range, that is stored oblique, or whose normalised intensities are
distributed differently (another contrast, inverted intensities) gets a warning: its segmentation may be
poor, and nothing else would say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semiseg.oblique import OBLIQUE_DEGREES
from semiseg.orientation import canonical_spacing, obliquity_degrees

QUANTILES = (1, 5, 25, 50, 75, 95, 99)
SPACING_FACTOR = 1.5  # a spacing this many times beyond the training range is "far"
INTENSITY_DISTANCE = 0.5  # largest quantile shift, in units of the training 5-95 % range


SAMPLE_VOXELS = 1_000_000  # quantiles from at most about this many voxels (a fixed stride: deterministic)


def intensity_quantiles(preprocessed) -> list[float]:
    """Quantiles of a preprocessed image, a numpy array or a torch tensor (on any device)."""
    flat = preprocessed.reshape(-1)
    flat = flat[:: max(1, flat.shape[0] // SAMPLE_VOXELS)]
    if not isinstance(flat, np.ndarray):
        flat = flat.float().cpu().numpy()
    return [float(v) for v in np.percentile(flat, QUANTILES)]


def training_profile(geometries: Sequence[tuple[Sequence[float], Sequence[float]]],
                     preprocessed: Sequence[np.ndarray]) -> dict:
    """From the training cases' (spacing, direction) and their preprocessed images."""
    spacings = np.array([canonical_spacing(s, d) for s, d in geometries])
    return {"spacing_min": spacings.min(0).round(6).tolist(), "spacing_max": spacings.max(0).round(6).tolist(),
            "obliquity_max_degrees": round(max(obliquity_degrees(d) for _, d in geometries), 3),
            "intensity_quantiles": np.median([intensity_quantiles(p) for p in preprocessed], 0).round(6).tolist(),
            "quantile_levels": list(QUANTILES)}


def training_spacing(geometries: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[float, float, float]:
    """The median spacing (canonical x, y, z) of the training cases: what a model trained at native spacing
    records, so a scan at another spacing is resampled to what the network learnt on."""
    spacings = np.array([canonical_spacing(s, d) for s, d in geometries])
    return tuple(float(v) for v in np.median(spacings, 0))


def profile_warnings(profile: dict | None, spacing: Sequence[float], direction: Sequence[float],
                     preprocessed: np.ndarray, realigned: bool = False) -> list[str]:
    """Plain-language warnings for a scan (its spacing and direction, and its preprocessed image);
    `realigned`: the oblique scan was resampled axis-aligned for the network."""
    warnings = []
    angle = obliquity_degrees(direction)
    if realigned:
        warnings.append(f"the scan is stored oblique ({angle:.0f}° from the nearest axes); it was resampled onto an "
                        f"axis-aligned grid for the network and the labels back onto the scan's grid (boundaries "
                        f"may move by up to a voxel)")
    elif angle > OBLIQUE_DEGREES and angle > (profile or {}).get("obliquity_max_degrees", 0) + OBLIQUE_DEGREES:
        warnings.append(f"the scan is stored oblique ({angle:.0f}° from the nearest axes); this model (native "
                        f"orientation) sees it turned by that much — resample it axis-aligned for a reliable result")
    if not profile:
        return warnings
    scan = np.array(canonical_spacing(spacing, direction))
    low, high = np.array(profile["spacing_min"]), np.array(profile["spacing_max"])
    if np.any(scan < low / SPACING_FACTOR) or np.any(scan > high * SPACING_FACTOR):
        warnings.append(f"the scan's spacing {_mm(scan)} mm is far from the training scans' ({_mm(low)} to "
                        f"{_mm(high)} mm); it is resampled, but fine structures may be lost or the result poorer")
    reference = np.array(profile["intensity_quantiles"])
    spread = max(float(reference[QUANTILES.index(95)] - reference[QUANTILES.index(5)]), 1e-6)
    distance = float(np.max(np.abs(np.array(intensity_quantiles(preprocessed)) - reference)) / spread)
    if distance > INTENSITY_DISTANCE:
        warnings.append(f"the scan's intensities are distributed unlike the training scans' (quantile shift "
                        f"{distance:.2f} of their 5-95 % range; another contrast or sequence, or inverted "
                        f"intensities?); check the result")
    return warnings


def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"
