"""semiseg.metrics: medpy parity, hand-computed geometry, empty conventions, I/O."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric import binary
from scipy.ndimage import gaussian_filter

from semiseg.errors import DataError
from semiseg.metrics import (
    DISTANCE_KEYS,
    EMPTY_CONVENTION,
    METRIC_KEYS,
    binary_metrics,
    case_metrics,
    evaluate_predictions,
    mean_std_text,
    summarize,
)

SPACING_ZYX = (2.5, 0.7, 1.1)


def _blob_pair(seed: int, shape=(20, 30, 26)):
    """Two overlapping, irregular, multi-component masks; gt touches the array
    border so border handling (and the bounding-box crop) is exercised."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), 2.5)
    noise = gaussian_filter(rng.standard_normal(shape), 2.0)
    gt = field > np.quantile(field, 0.8)
    pred = (field + 0.6 * noise * field.std() / noise.std()) > np.quantile(field, 0.78)
    gt[0, 10:15, 5:9] = True  # on the first z slice
    return pred, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_medpy_on_random_blobs(seed):
    pred, gt = _blob_pair(seed)
    assert pred.any() and gt.any() and (pred != gt).any()
    m = binary_metrics(pred, gt, SPACING_ZYX)
    expected = {
        "dice": binary.dc(pred, gt),
        "jaccard": binary.jc(pred, gt),
        "hd95_mm": binary.hd95(pred, gt, voxelspacing=SPACING_ZYX),
        "asd_mm": binary.asd(pred, gt, voxelspacing=SPACING_ZYX),
        "assd_mm": binary.assd(pred, gt, voxelspacing=SPACING_ZYX),
        "hd95_vox": binary.hd95(pred, gt),
        "asd_vox": binary.asd(pred, gt),
        "assd_vox": binary.assd(pred, gt),
    }
    assert set(m) == set(METRIC_KEYS)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key
    # asd is directed: swapping the arguments gives medpy's asd(gt, pred).
    assert binary_metrics(gt, pred, SPACING_ZYX)["asd_mm"] == pytest.approx(
        binary.asd(gt, pred, voxelspacing=SPACING_ZYX), abs=1e-6
    )


def test_small_object_in_large_volume_matches_medpy():
    # The crop to the joint bounding box must not change anything.
    pred = np.zeros((40, 60, 50), bool)
    gt = np.zeros_like(pred)
    pred[10:14, 20:27, 30:33] = True
    gt[11:15, 22:26, 29:34] = True
    gt[13, 30, 33] = True  # a detached voxel
    m = binary_metrics(pred, gt, SPACING_ZYX)
    assert m["hd95_mm"] == pytest.approx(binary.hd95(pred, gt, voxelspacing=SPACING_ZYX), abs=1e-9)
    assert m["asd_vox"] == pytest.approx(binary.asd(pred, gt), abs=1e-9)
    assert m["assd_mm"] == pytest.approx(binary.assd(pred, gt, voxelspacing=SPACING_ZYX), abs=1e-9)


def test_concentric_cubes_hand_computed():
    # pred: cube of side a; gt: the same cube grown by one voxel on every side.
    # pred surface -> gt surface: every distance is 1 (6a^2-12a+8 voxels).
    # gt surface -> pred: faces 1 (6a^2), edges sqrt2 (12a), corners sqrt3 (8).
    a, s = 10, 0.5
    pred = np.zeros((16, 16, 16), bool)
    gt = np.zeros_like(pred)
    pred[3 : 3 + a, 3 : 3 + a, 3 : 3 + a] = True
    gt[2 : 4 + a, 2 : 4 + a, 2 : 4 + a] = True
    m = binary_metrics(pred, gt, (s, s, s))
    assert m["dice"] == pytest.approx(2 * a**3 / (a**3 + (a + 2) ** 3))
    assert m["jaccard"] == pytest.approx(a**3 / (a + 2) ** 3)
    n_pred, n_gt = 6 * a**2 - 12 * a + 8, 6 * a**2 + 12 * a + 8
    sum_gp = 6 * a**2 + 12 * a * math.sqrt(2) + 8 * math.sqrt(3)
    asd_gp = sum_gp / n_gt
    # pooled: 12a^2-12a+8 = 1088 ones, 120 x sqrt2, 8 x sqrt3; p95 index 1154.25 is a sqrt2.
    # assd pools all surface voxels (medpy 0.5.2), not the mean of the two asds.
    expected_vox = {"hd95": math.sqrt(2), "asd": 1.0, "assd": (n_pred + sum_gp) / (n_pred + n_gt)}
    assert expected_vox["assd"] != pytest.approx((1.0 + asd_gp) / 2, abs=1e-3)
    for name, value in expected_vox.items():
        assert m[f"{name}_vox"] == pytest.approx(value, abs=1e-12)
        assert m[f"{name}_mm"] == pytest.approx(s * value, abs=1e-12)
    # asd is directed (gt -> pred when swapped)
    assert binary_metrics(gt, pred, (s, s, s))["asd_vox"] == pytest.approx(asd_gp, abs=1e-12)


def test_offset_cubes_dice_and_hausdorff():
    # Two n-cubes shifted by k along x: Dice (n-k)/n, Jaccard (n-k)/(n+k); all
    # surface distances are at most k voxels and k*sx mm, and pooled p95 lies in
    # (0, k] since a fifth of the surfaces coincide.
    n, k = 8, 3
    pred = np.zeros((12, 12, 16), bool)
    gt = np.zeros_like(pred)
    pred[2 : 2 + n, 2 : 2 + n, 2 : 2 + n] = True
    gt[2 : 2 + n, 2 : 2 + n, 2 + k : 2 + k + n] = True
    m = binary_metrics(pred, gt, (1.0, 1.0, 0.4))
    assert m["dice"] == pytest.approx((n - k) / n)
    assert m["jaccard"] == pytest.approx((n - k) / (n + k))
    assert 0 < m["hd95_vox"] <= k
    assert 0 < m["hd95_mm"] <= k * 0.4 + 1e-12
    assert m["asd_vox"] == pytest.approx(m["assd_vox"])  # symmetric configuration


def test_empty_conventions():
    empty = np.zeros((6, 7, 8), bool)
    some = empty.copy()
    some[2:4, 2:5, 3:6] = True

    both = binary_metrics(empty, empty, SPACING_ZYX)
    assert both["dice"] == 1.0 and both["jaccard"] == 1.0
    assert all(both[k] == 0.0 for k in DISTANCE_KEYS)

    for pred, gt in ((empty, some), (some, empty)):
        one = binary_metrics(pred, gt, SPACING_ZYX)
        assert one["dice"] == 0.0 and one["jaccard"] == 0.0
        assert all(math.isnan(one[k]) for k in DISTANCE_KEYS)
        sub = binary_metrics(pred, gt, SPACING_ZYX, empty_distance=128)
        assert all(sub[k] == 128.0 for k in DISTANCE_KEYS)
        assert sub["dice"] == 0.0

    assert "NaN" in EMPTY_CONVENTION and "NaN" in binary_metrics.__doc__


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool), (1, 1))


def test_summarize_counts_nan_and_uses_population_std():
    rows = [{"dice": 0.5, "hd95_mm": 2.0}, {"dice": 0.7, "hd95_mm": math.nan}, {"dice": 0.9, "hd95_mm": 4.0}]
    s = summarize(rows)
    assert list(s) == ["dice", "hd95_mm"]
    assert s["dice"]["mean"] == pytest.approx(0.7)
    assert s["dice"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert (s["dice"]["n"], s["dice"]["n_nan"]) == (3, 0)
    assert s["hd95_mm"]["mean"] == pytest.approx(3.0)
    assert s["hd95_mm"]["std"] == pytest.approx(1.0)
    assert (s["hd95_mm"]["n"], s["hd95_mm"]["n_nan"]) == (2, 1)

    only = summarize([{"x": math.nan}], keys=["x"])["x"]
    assert math.isnan(only["mean"]) and only["n"] == 0 and only["n_nan"] == 1


def _two_label_maps():
    gt = np.zeros((12, 14, 16), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:7, 3:9, 4:10] = 1
    pred[2:7, 4:10, 4:10] = 1
    gt[8:11, 2:6, 2:6] = 2  # label 2 missed by the prediction entirely
    return pred, gt


def test_case_metrics_two_labels():
    pred, gt = _two_label_maps()
    labels = {"atrium": 1, "vessel": 2}
    res = case_metrics(pred, gt, SPACING_ZYX, labels)
    assert set(res) == {"atrium", "vessel", "mean"}
    assert res["atrium"] == binary_metrics(pred == 1, gt == 1, SPACING_ZYX)
    assert res["vessel"]["dice"] == 0.0 and math.isnan(res["vessel"]["hd95_mm"])
    assert res["mean"]["dice"] == pytest.approx(res["atrium"]["dice"] / 2)
    # NaN distances are left out of the mean, not propagated
    assert res["mean"]["hd95_mm"] == pytest.approx(res["atrium"]["hd95_mm"])


def _write(array, path, spacing=(1.1, 0.7, 2.5), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def test_evaluate_predictions(tmp_path):
    pred, gt = _two_label_maps()
    labels = {"atrium": 1, "vessel": 2}
    pairs = [
        ("a", _write(pred, tmp_path / "a_pred.nrrd"), _write(gt, tmp_path / "a_gt.nrrd")),
        ("b", _write(gt, tmp_path / "b_pred.nrrd"), _write(gt, tmp_path / "b_gt.nrrd")),
    ]
    out = evaluate_predictions(pairs, labels)
    assert out["cases"]["a"]["atrium"] == binary_metrics(pred == 1, gt == 1, SPACING_ZYX)
    assert out["cases"]["b"]["vessel"]["dice"] == 1.0
    vessel = out["summary"]["vessel"]
    assert vessel["dice"]["mean"] == pytest.approx(0.5)
    assert (vessel["hd95_mm"]["n"], vessel["hd95_mm"]["n_nan"]) == (1, 1)
    assert set(out["summary"]) == {"atrium", "vessel", "mean"}


def test_evaluate_predictions_grid_mismatch(tmp_path):
    pred, gt = _two_label_maps()
    p = _write(pred, tmp_path / "shifted_pred.nrrd", origin=(5.0, 0.0, 0.0))
    g = _write(gt, tmp_path / "case_gt.nrrd")
    with pytest.raises(DataError) as info:
        evaluate_predictions([("a", p, g)], {"atrium": 1})
    assert "shifted_pred.nrrd" in str(info.value) and "case_gt.nrrd" in str(info.value)


def test_mean_std_text_scales_signs_and_says_na_when_nothing_was_averaged():
    assert mean_std_text({"mean": 0.7625, "std": 0.026}, 100) == "76.2 ± 2.6"
    assert mean_std_text({"mean": 0.04, "std": 0.056}, 100, sign=True) == "+4.0 ± 5.6"
    assert mean_std_text({"mean": 1288.4, "std": 178.2}, digits=0) == "1288 ± 178"
    assert mean_std_text(summarize([{"hd95": float("nan")}])["hd95"]) == "n/a"
