"""Seeded synthetic MR-like phantoms and Decathlon-style datasets.

The demo and the tests need data that is small, instant and free to ship, yet
hard enough that a model must learn shape and context rather than a threshold:
distractor blobs share the organs' intensity, a multiplicative bias field and
Rician noise blur the contrast, and a small lesion makes the labels
class-imbalanced. Named scanner domains change contrast, noise and bias so the
domain-shift settings (UDA, SSDG) and the multi-dataset setting (VerSemi tasks)
can be reproduced without real scans.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .datasets import prepare_dataset_folder
from .errors import ConfigError
from .io import write_volume
from .volume import IDENTITY, Volume


@dataclass(frozen=True)
class Structure:
    """One organ-like shape: a rotated ellipsoid, later deformed smoothly."""

    name: str
    value: int  # label value; 0 is background
    radius: tuple[float, float]  # mean semi-axis range, as a fraction of the smallest field-of-view extent
    intensity: float  # tissue intensity in [0, 1] before the scanner's contrast
    elongation: tuple[float, float] = (1.0, 1.4)  # longest / shortest semi-axis
    inside: str | None = None  # a structure whose interior hosts this one (a lesion in an organ)


DEFAULT_STRUCTURES: tuple[Structure, ...] = (
    Structure("organ", 1, radius=(0.20, 0.26), intensity=0.62),
    Structure("vessel", 2, radius=(0.11, 0.14), intensity=0.88, elongation=(2.0, 3.0)),
    # Hypo-intense and small: the class-imbalanced target.
    Structure("lesion", 3, radius=(0.06, 0.08), intensity=0.38, inside="organ"),
)

BACKGROUND_INTENSITY = 0.03  # air outside the body
BODY_INTENSITY = 0.25  # unlabeled soft tissue that holds the structures


@dataclass(frozen=True)
class Domain:
    """How a scanner turns tissue into intensities."""

    name: str
    gamma: float  # contrast curve applied to the [0, 1] tissue map
    scale: float  # intensity units of the scanner
    offset: float
    noise: float  # Rician noise sigma, as a fraction of `scale`
    bias: float  # amplitude of the smooth multiplicative bias field
    tissue: Mapping[str, float] = field(default_factory=dict)  # per-structure intensity shifts


DOMAINS: dict[str, Domain] = {
    "scanner-a": Domain("scanner-a", gamma=1.0, scale=400.0, offset=0.0, noise=0.03, bias=0.12),
    # Darker mid-tones, noisier, stronger bias, and a lesion with less contrast.
    "scanner-b": Domain("scanner-b", gamma=1.7, scale=300.0, offset=120.0, noise=0.07, bias=0.30,
                        tissue={"lesion": 0.10}),
    # Brighter, the vessel no longer brighter than the organ.
    "scanner-c": Domain("scanner-c", gamma=0.6, scale=900.0, offset=-50.0, noise=0.05, bias=0.22,
                        tissue={"vessel": -0.30, "body": 0.10}),
}


def _domain(domain: str | Domain) -> Domain:
    if isinstance(domain, Domain):
        return domain
    try:
        return DOMAINS[domain]
    except KeyError:
        raise ConfigError(f"unknown scanner domain {domain!r}; known: {', '.join(DOMAINS)}") from None


def _check_structures(structures: Sequence[Structure]) -> None:
    names = [s.name for s in structures]
    values = [s.value for s in structures]
    if not structures:
        raise ConfigError("no structures given for the phantom")
    if len(set(names)) != len(names) or len(set(values)) != len(values):
        raise ConfigError(f"structure names and values must be unique, got {list(zip(names, values))}")
    for s in structures:
        if not 1 <= s.value <= 255:
            raise ConfigError(f"structure {s.name!r}: label value {s.value} is not in 1..255 (uint8 labels)")
        if s.inside is not None and s.inside not in names[: names.index(s.name)]:
            raise ConfigError(f"structure {s.name!r} lies inside {s.inside!r}, which must be listed before it")


def _upsampling_matrix(n: int, coarse: int) -> np.ndarray:
    """(n, coarse) matrix of cubic-spline upsampling along one axis."""
    m = ndimage.zoom(np.eye(coarse), ((n + 1e-9) / coarse, 1), order=3, mode="nearest", grid_mode=True)
    return m[:n]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], channels: int, coarse: int = 4) -> np.ndarray:
    """Low-frequency noise of about [-1, 1]: a coarse random grid upsampled with cubic splines.

    Spline upsampling is separable, so three small matrices do what
    ndimage.zoom would do on the full volume, many times faster.
    """
    grid = rng.uniform(-1.0, 1.0, size=(channels, coarse, coarse, coarse))
    mz, my, mx = (_upsampling_matrix(n, coarse) for n in shape)
    return np.einsum("ai,bj,ck,nijk->nabc", mz, my, mx, grid, optimize=True).astype(np.float32)


def _ellipsoid(coords: np.ndarray, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Normalised radius (<= 1 inside) of every point of `coords` (3, ...) in mm."""
    c = centre.astype(np.float32).reshape(3, 1, 1, 1)
    local = np.tensordot(rot.T.astype(np.float32), coords - c, axes=1)
    return np.sqrt(np.sum((local / radii.astype(np.float32).reshape(3, 1, 1, 1)) ** 2, axis=0))


def _ellipsoid_mask(coords, centre, radii, rot, spacing_zyx, reach: float) -> np.ndarray:
    """Inside-mask of an ellipsoid, evaluated only in its bounding box.

    A voxel's warped position lies at most `reach` mm from its grid position,
    so no voxel outside the box can fall inside the ellipsoid.
    """
    shape = np.array(coords.shape[1:])
    r = float(radii.max()) + reach
    lo = np.clip(np.floor((centre - r) / spacing_zyx).astype(int), 0, shape)
    hi = np.clip(np.ceil((centre + r) / spacing_zyx).astype(int) + 1, 0, shape)
    mask = np.zeros(tuple(shape), dtype=bool)
    if np.all(hi > lo):
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        mask[box] = _ellipsoid(coords[(slice(None), *box)], centre, radii, rot) <= 1.0
    return mask


def _random_shape(rng, s: Structure, extent: float):
    mean = rng.uniform(*s.radius) * extent
    elong = rng.uniform(*s.elongation)
    # Semi-axes whose geometric mean is `mean` and whose ratio is `elong`.
    radii = mean * np.array([elong ** (2 / 3), elong ** (-1 / 3) * rng.uniform(0.9, 1.1), elong ** (-1 / 3)])
    rot = Rotation.random(random_state=rng).as_matrix()
    return radii, rot


def make_phantom(
    shape: tuple[int, int, int] = (48, 48, 48),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5),
    seed: int = 0,
    domain: str | Domain = "scanner-a",
    structures: Sequence[Structure] = DEFAULT_STRUCTURES,
) -> tuple[Volume, Volume]:
    """One phantom: (image float32, label uint8), `shape` in (z, y, x), `spacing` (x, y, z) mm.

    The anatomy depends only on `seed`; `domain` changes only how it is imaged,
    so the same seed on two scanners gives the same label.
    """
    dom = _domain(domain)
    _check_structures(structures)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ConfigError(f"phantom shape must be 3 sizes of at least 8 voxels, got {shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError(f"phantom spacing must be 3 positive numbers, got {spacing}")

    rng = np.random.default_rng(seed)
    sp_zyx = np.array(spacing[::-1])
    fov = np.array(shape) * sp_zyx  # physical extent per array axis, mm
    extent = float(fov.min())
    # Work in mm so anisotropic spacing gives physically round organs.
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) * s for n, s in zip(shape, sp_zyx)],
                                  indexing="ij"))
    # One shared smooth deformation for all structures: a lesion nested in its
    # organ before warping stays nested after it.
    warp = _smooth_field(rng, shape, 3) * (0.07 * extent)
    coords = coords + warp
    reach = float(np.sqrt((warp**2).sum(axis=0)).max())
    del warp

    tissue = np.full(shape, BACKGROUND_INTENSITY, dtype=np.float32)
    body_r = _ellipsoid(coords, fov / 2, fov * np.array([0.47, 0.45, 0.45]), np.eye(3))
    body = body_r <= 1.0
    tissue[body] = BODY_INTENSITY + dom.tissue.get("body", 0.0)
    label = np.zeros(shape, dtype=np.uint8)

    placed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # name -> centre, radii, rotation
    for s in structures:
        radii, rot = _random_shape(rng, s, extent)
        if s.inside is None:
            # Keep top-level structures apart so each stays mostly visible.
            for _ in range(30):
                centre = fov * rng.uniform(0.3, 0.7, size=3)
                if all(np.linalg.norm(centre - c) > 0.8 * (radii.mean() + r.mean())
                       for c, r, _ in placed.values()):
                    break
        else:
            pc, pr, prot = placed[s.inside]
            # A point deep enough in the parent that the child fits inside it.
            room = max(0.0, 1.0 - 1.3 * radii.max() / pr.min())
            d = rng.normal(size=3)
            d *= rng.uniform(0, room) ** (1 / 3) / np.linalg.norm(d)
            centre = pc + prot @ (d * pr)
        mask = _ellipsoid_mask(coords, centre, radii, rot, sp_zyx, reach) & body
        if s.inside is not None:
            parent = label == next(v.value for v in structures if v.name == s.inside)
            mask &= parent
            if not mask.any() and parent.any():
                # Too small to survive (tiny shapes): keep it, in the parent's core.
                depth = ndimage.distance_transform_edt(parent, sampling=sp_zyx)
                mask = depth >= 0.7 * depth.max()
        placed[s.name] = (centre, radii, rot)
        tissue[mask] = s.intensity + dom.tissue.get(s.name, 0.0)
        label[mask] = s.value

    # Distractors: blobs as bright as real structures but unlabeled, so
    # intensity alone cannot separate them.
    top = [s for s in structures if s.inside is None]
    for _ in range(int(rng.integers(2, 5))):
        like = top[int(rng.integers(len(top)))]
        radii = rng.uniform(0.04, 0.09) * extent * rng.uniform(0.8, 1.25, size=3)
        centre = fov * rng.uniform(0.2, 0.8, size=3)
        rot = Rotation.random(random_state=rng).as_matrix()
        blob = _ellipsoid_mask(coords, centre, radii, rot, sp_zyx, reach)
        blob &= body & (label == 0)
        tissue[blob] = like.intensity + dom.tissue.get(like.name, 0.0) + rng.uniform(-0.05, 0.05)

    # Partial-volume blur, then the scanner: contrast curve, bias, Rician noise.
    tissue = ndimage.gaussian_filter(np.clip(tissue, 0.0, 1.0), sigma=0.6 / sp_zyx * sp_zyx.min())
    signal = np.power(np.clip(tissue, 0.0, 1.0), dom.gamma)
    bias = 1.0 + dom.bias * _smooth_field(rng, shape, 1, coarse=3)[0]
    signal = signal * bias * dom.scale
    sigma = dom.noise * dom.scale
    image = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2) + dom.offset

    # A scanner-like origin off the array corner, so geometry bugs show.
    origin = tuple(float(round(v, 2)) for v in (-fov[::-1] / 2 + rng.uniform(-20, 20, size=3)))
    image_vol = Volume(image.astype(np.float32), spacing=spacing, origin=origin, direction=IDENTITY)
    label_vol = Volume(label, spacing=spacing, origin=origin, direction=IDENTITY)
    return image_vol, label_vol




def _case_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_dataset(
    out_dir,
    n_labeled: int = 4,
    n_unlabeled: int = 8,
    n_test: int = 4,
    shape: tuple[int, int, int] = (48, 48, 48),
    seed: int = 0,
    labeled_domains: Sequence[str] = ("scanner-a",),
    unlabeled_domains: Sequence[str] | None = None,
    test_domains: Sequence[str] | None = None,
    tasks: Mapping[str, Sequence[str]] | None = None,
    structures: Sequence[Structure] | None = None,
    overwrite: bool = False,
    unlabeled_truth: bool = False,
) -> Path:
    """Write a Decathlon-style phantom dataset to `out_dir` and return its path.

    Layout: imagesTr/ labelsTr/ imagesUn/ imagesTs/ labelsTs/ dataset.json.
    Cases cycle through their split's domains. With `tasks` ({task: [structure
    names]}), every labeled and test case belongs to one task (cycled) and its
    label keeps only that task's structures, though all remain in the image. With `unlabeled_truth`, the
    unlabeled cases' labels go to labelsUn_truth/ (not listed in dataset.json): a stand-in for held-back
    truth, as LA2018's, to measure pseudo-labels with (`bench --pool-truth`).
    """
    out = Path(out_dir)
    structures = tuple(DEFAULT_STRUCTURES if structures is None else structures)
    _check_structures(structures)
    for n, what in ((n_labeled, "n_labeled"), (n_unlabeled, "n_unlabeled"), (n_test, "n_test")):
        if int(n) < 0:
            raise ConfigError(f"{what} must be >= 0, got {n}")
    labeled_domains = tuple(labeled_domains)
    unlabeled_domains = labeled_domains if unlabeled_domains is None else tuple(unlabeled_domains)
    test_domains = labeled_domains if test_domains is None else tuple(test_domains)
    for doms, what in ((labeled_domains, "labeled"), (unlabeled_domains, "unlabeled"), (test_domains, "test")):
        if not doms:
            raise ConfigError(f"no {what} domains given")
        for d in doms:
            _domain(d)
    names = [s.name for s in structures]
    task_names: list[str] = []
    if tasks is not None:
        if not tasks:
            raise ConfigError("tasks is empty; give at least one task or None")
        for task, members in tasks.items():
            unknown = [m for m in members if m not in names]
            if unknown or not members:
                raise ConfigError(f"task {task!r}: unknown or no structures {unknown or list(members)}; known: {names}")
        task_names = list(tasks)

    folder = prepare_dataset_folder(out, overwrite)

    value_of = {s.name: s.value for s in structures}
    index = 0

    def case(split_images: str, split_labels: str | None, domain: str, task: str | None):
        nonlocal index
        cid = f"phantom_{index:03d}"
        image, label = make_phantom(shape, seed=_case_seed(seed, index), domain=domain, structures=structures)
        index += 1
        entry = {"image": f"{split_images}/{cid}.nii.gz"}
        write_volume(image, folder.add(entry["image"]), overwrite=True)
        if split_labels is None and unlabeled_truth:
            write_volume(label, folder.add(f"labelsUn_truth/{cid}.nii.gz"), overwrite=True)
        if split_labels is not None:
            if task is not None:
                keep = [value_of[n] for n in tasks[task]]
                label = label.with_array(np.where(np.isin(label.array, keep), label.array, 0).astype(np.uint8))
            entry["label"] = f"{split_labels}/{cid}.nii.gz"
            write_volume(label, folder.add(entry["label"]), overwrite=True)
        entry["domain"] = domain
        if task is not None:
            entry["task"] = task
        return entry

    def task_at(i: int) -> str | None:
        return task_names[i % len(task_names)] if task_names else None

    training = [case("imagesTr", "labelsTr", labeled_domains[i % len(labeled_domains)], task_at(i))
                for i in range(n_labeled)]
    unlabeled = [case("imagesUn", None, unlabeled_domains[i % len(unlabeled_domains)], None)
                 for i in range(n_unlabeled)]
    test = [case("imagesTs", "labelsTs", test_domains[i % len(test_domains)], task_at(i))
            for i in range(n_test)]

    desc = {
        "name": "SemiSeg phantom",
        "description": (
            f"Synthetic MR-like phantoms (seed {seed}): labeled on {', '.join(labeled_domains)}, "
            f"unlabeled on {', '.join(unlabeled_domains)}, test on {', '.join(test_domains)}."
        ),
        "reference": "semiseg.synthetic.make_dataset",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": "MR",
        "labels": {"background": 0, **{s.name: s.value for s in structures}},
        "numTraining": len(training),
        "numUnlabeled": len(unlabeled),
        "numTest": len(test),
        "training": training,
        "unlabeled": unlabeled,
        "test": test,
    }
    if tasks is not None:
        desc["tasks"] = {t: list(m) for t, m in tasks.items()}
    (folder.add("dataset.json")).write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")
    return out
