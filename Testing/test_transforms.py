"""Preprocessing, grid restoration, augmentation and patch sampling."""

import inspect
import json

import numpy as np
import pytest
import torch

from semiseg.errors import ConfigError
from semiseg.transforms import (
    Preprocessing,
    build_augmentation,
    foreground_voxels,
    preprocess_image,
    preprocess_label,
    resampled_shape,
    restore_to_grid,
    sample_patch,
)
from semiseg.volume import Volume


def _vol(shape=(16, 20, 24), spacing=(0.5, 1.0, 2.0), seed=0, mean=100.0, std=20.0):
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(mean, std, size=shape).astype(np.float32), spacing=spacing, origin=(-5.0, 3.0, 7.5))


def _blob_label(shape=(16, 16, 16)):
    """An asymmetric blob, so that every flip or turn changes it."""
    lab = np.zeros(shape, dtype=np.int64)
    lab[2:9, 3:12, 1:6] = 1
    lab[10:14, 1:4, 9:15] = 2
    return lab


def test_resampled_shape():
    # (z, y, x) sizes with (x, y, z) spacings.
    assert resampled_shape((10, 20, 30), (1.0, 1.0, 2.0), (2.0, 2.0, 2.0)) == (10, 10, 15)
    assert resampled_shape((16, 20, 24), (0.5, 1.0, 2.0), (1.0, 1.0, 1.0)) == (32, 20, 12)
    assert resampled_shape((2, 2, 2), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


def test_preprocessing_settings_round_trip_and_validate():
    prep = Preprocessing(spacing=(1.25, 1.25, 2.5), intensity="ct", ct_window=(-100, 200))
    d = json.loads(json.dumps(prep.to_dict()))
    assert d["spacing"] == [1.25, 1.25, 2.5]
    assert Preprocessing.from_dict(d) == prep
    assert Preprocessing.from_dict({"spacing": None, "intensity": "zscore"}) == Preprocessing()
    with pytest.raises(ConfigError, match="intensity"):
        Preprocessing(intensity="minmax")
    with pytest.raises(ConfigError):
        Preprocessing(spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="unknown preprocessing"):
        Preprocessing.from_dict({"intensity": "zscore", "spacng": [1, 1, 1]})


def test_preprocess_image_takes_no_label():
    # Anything preprocess_image sees must exist at prediction time too.
    assert list(inspect.signature(preprocess_image).parameters) == ["volume", "prep"]


def test_preprocess_image_resamples_to_target_spacing_and_zscores():
    vol = _vol()
    out = preprocess_image(vol, Preprocessing(spacing=(1.0, 1.0, 1.0)))
    assert out.shape == (32, 20, 12) and out.dtype == np.float32
    assert abs(float(out.mean())) < 1e-3 and abs(float(out.std()) - 1.0) < 1e-2
    native = preprocess_image(vol, Preprocessing())
    assert native.shape == vol.array.shape


def test_ct_window_and_percentile_clip_to_unit_range():
    arr = np.linspace(-1000, 1000, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    arr[0, 0, 0] = 75.0  # the window's centre
    out = preprocess_image(Volume(arr), Preprocessing(intensity="ct"))
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 0, 0] == pytest.approx(0.5)
    assert np.all(out[arr <= -125] == 0.0) and np.all(out[arr >= 275] == 1.0)
    pct = preprocess_image(Volume(arr), Preprocessing(intensity="percentile", percentiles=(5, 95)))
    assert pct.min() == 0.0 and pct.max() == 1.0
    assert (pct == 0).mean() > 0.04 and (pct == 1).mean() > 0.04
    np.testing.assert_array_equal(preprocess_image(Volume(arr), Preprocessing(intensity="none")), arr)


def test_preprocess_label_is_nearest_on_the_image_grid():
    vol = _vol(shape=(16, 16, 16), spacing=(0.7, 1.0, 1.6))
    lab = _blob_label()
    lab[lab == 2] = 5
    prep = Preprocessing(spacing=(1.0, 1.0, 1.0))
    out = preprocess_label(Volume(lab, spacing=vol.spacing), prep)
    assert out.dtype == np.int64
    assert out.shape == preprocess_image(vol, prep).shape
    assert set(np.unique(out)) == {0, 1, 5}  # no interpolated values such as 2 or 3


def test_restore_to_grid_inverts_the_resampling():
    # A ramp along x survives preprocessing and restoration only if the axes
    # and the sampling conventions match.
    z, y, x = np.meshgrid(np.arange(12), np.arange(14), np.arange(10), indexing="ij")
    vol = Volume((2.0 * x + 0.5 * z).astype(np.float32), spacing=(1.0, 1.0, 2.0))
    prep = Preprocessing(spacing=(0.5, 0.5, 1.0), intensity="none")
    pre = preprocess_image(vol, prep)
    assert pre.shape == (24, 28, 20)
    probs = torch.from_numpy(np.stack([pre, -pre]))
    back = restore_to_grid(probs, vol.array.shape)
    assert back.shape == (2, 12, 14, 10) and back.device == probs.device and back.dtype == probs.dtype
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(back[0].numpy()[inner], vol.array[inner], atol=1e-3)
    same = torch.rand(3, 4, 5, 6)
    assert restore_to_grid(same, (4, 5, 6)) is same


def test_augmentation_keeps_image_and_label_aligned():
    lab = _blob_label()
    aug = build_augmentation("light")
    changed = 0
    for seed in range(8):
        noise = np.random.default_rng(seed).normal(0, 0.05, lab.shape)
        img = (10.0 * (lab > 0) + noise).astype(np.float32)[None]
        out = aug({"image": img, "label": lab}, rng=np.random.default_rng(seed))
        assert out["image"].shape == img.shape and out["image"].dtype == np.float32
        assert out["label"].shape == lab.shape and out["label"].dtype == lab.dtype
        a = out["image"][0]
        np.testing.assert_array_equal(a > (a.min() + a.max()) / 2, out["label"] > 0)
        changed += not np.array_equal(out["label"], lab)
    assert changed >= 4  # the transforms did act, so the check above means something


def test_strong_affine_augmentation_stays_aligned():
    lab = _blob_label()
    img = (10.0 * (lab > 0)).astype(np.float32)[None]
    aug = build_augmentation("strong")
    for seed in range(6):
        out = aug({"image": img, "label": lab}, rng=np.random.default_rng(seed))
        a = out["image"][0]
        agree = ((a > (a.min() + a.max()) / 2) == (out["label"] > 0)).mean()
        assert agree > 0.97
        assert set(np.unique(out["label"])) <= {0, 1, 2}


def test_augmentation_is_reproducible_and_none_is_identity():
    lab = _blob_label()
    img = np.random.default_rng(0).normal(size=(1, *lab.shape)).astype(np.float32)
    aug = build_augmentation("standard")
    a = aug({"image": img, "label": lab}, rng=np.random.default_rng(5))
    b = aug({"image": img, "label": lab}, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    only_image = aug({"image": img}, rng=np.random.default_rng(5))
    assert "label" not in only_image
    data = {"image": img, "label": lab}
    assert build_augmentation("none")(data) is data
    with pytest.raises(ConfigError):
        build_augmentation("extreme")


def test_sample_patch_pads_small_volumes():
    rng = np.random.default_rng(0)
    img = rng.uniform(2.0, 3.0, size=(1, 5, 6, 7)).astype(np.float32)
    lab = np.ones((5, 6, 7), dtype=np.int64)
    ip, lp = sample_patch(img, lab, (8, 8, 8), rng, fg_ratio=0.0)
    assert ip.shape == (1, 8, 8, 8) and lp.shape == (8, 8, 8)
    assert lp.sum() == lab.sum()  # the whole volume fits in the patch
    assert np.all(ip[0][lp == 0] == img.min())
    ip, lp = sample_patch(img, None, (4, 10, 4), rng)
    assert ip.shape == (1, 4, 10, 4) and lp is None


def test_foreground_oversampling():
    lab = np.zeros((32, 32, 32), dtype=np.int64)
    lab[28:31, 1:3, 29:31] = 3  # a tiny object in a corner
    img = np.zeros((1, 32, 32, 32), dtype=np.float32)
    rng = np.random.default_rng(0)
    fg = foreground_voxels(lab)
    assert set(fg) == {3} and len(fg[3]) == int((lab == 3).sum())
    hits = [sample_patch(img, lab, (8, 8, 8), rng, fg_ratio=1.0)[1].any() for _ in range(20)]
    assert all(hits)
    hits = [sample_patch(img, lab, (8, 8, 8), rng, fg_ratio=1.0, foreground=fg)[1].any() for _ in range(20)]
    assert all(hits)
    misses = [not sample_patch(img, lab, (8, 8, 8), rng, fg_ratio=0.0)[1].any() for _ in range(20)]
    assert sum(misses) > 10
    # Precomputed foreground indices still hit after padding a small volume.
    small = np.zeros((6, 6, 6), dtype=np.int64)
    small[5, 5, 5] = 1
    out = sample_patch(np.zeros((1, 6, 6, 6), np.float32), small, (10, 4, 10), rng, 1.0, foreground_voxels(small))
    assert out[1].shape == (10, 4, 10) and out[1].sum() == 1


def test_augmentation_skips_monai_metadata_and_changes_nothing_else(monkeypatch):
    """MONAI's MetaTensor bookkeeping is off during the augmentation (half its CPU time), restored after, and
    the result is the same as with it on."""
    from monai.data import get_track_meta

    lab = _blob_label()
    img = np.random.default_rng(0).normal(size=(1, *lab.shape)).astype(np.float32)
    aug = build_augmentation("standard")
    seen = []
    flip = aug.spatial[0]
    original = type(flip).__call__
    monkeypatch.setattr(type(flip), "__call__", lambda self, *a, **k: (seen.append(get_track_meta()),
                                                                        original(self, *a, **k))[1])
    fast = aug({"image": img, "label": lab}, rng=np.random.default_rng(5))
    assert seen and not any(seen) and get_track_meta()
    monkeypatch.undo()
    # the same draws with MONAI's bookkeeping on (as before; `semiseg.speed --compare`): the same voxels
    tracked = build_augmentation("standard", track_meta=True)({"image": img, "label": lab},
                                                               rng=np.random.default_rng(5))
    np.testing.assert_array_equal(fast["image"], tracked["image"])
    np.testing.assert_array_equal(fast["label"], tracked["label"])
