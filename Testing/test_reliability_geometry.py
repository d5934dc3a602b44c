"""Reliability, orientation, spacing and intensity: what the network sees does not depend on how the file
stores the scan, a model trained at native spacing resamples scans to the spacing it learnt on, and a scan
far from the training data gets a warning instead of a silent poor result.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from helpers_data import rotation
from helpers_reliability import accepted, dataset_json
from semiseg.io import from_sitk, read_volume, to_sitk, write_volume
from semiseg.model import read_manifest
from semiseg.transforms import Preprocessing, preprocess_image, preprocess_label
from semiseg.volume import IDENTITY, Volume

# The same anatomy stored in other axis orders (ITK orientation codes): a sagittal stack, a 90° axial turn,
# left-right and head-foot flips.
STORAGE = ["PSL", "ALS", "RPS", "LPI", "SRA"]


def stored_as(volume, code):
    return from_sitk(sitk.DICOMOrient(to_sitk(volume), code))


def first_case(root):
    case = dataset_json(root)["test"][0]
    return root / case["image"], root / case["label"]


@pytest.mark.parametrize("code", STORAGE)
def test_the_network_sees_the_same_array_however_the_scan_is_stored(tiny_model, tiny_dataset, code):
    prep = Preprocessing.from_dict(read_manifest(tiny_model)["preprocessing"])
    image_path, label_path = first_case(tiny_dataset)
    image, label = read_volume(image_path), read_volume(label_path)
    reference = preprocess_image(image, prep)
    np.testing.assert_allclose(preprocess_image(stored_as(image, code), prep), reference, atol=1e-5)
    np.testing.assert_array_equal(preprocess_label(stored_as(label, code), prep), preprocess_label(label, prep))


@pytest.mark.parametrize("code", ["PSL", "RPS"])
def test_a_prediction_of_a_reoriented_scan_is_the_same_segmentation_on_its_own_grid(capsys, tiny_model,
                                                                                   tiny_dataset, tmp_path, code):
    image_path, _ = first_case(tiny_dataset)
    image = read_volume(image_path)
    moved = write_volume(stored_as(image, code), tmp_path / "moved.nii.gz")
    for source, target in ((image_path, tmp_path / "a.nii.gz"), (moved, tmp_path / "b.nii.gz")):
        accepted(capsys, ["predict", "--model", tiny_model, "--input", source, "--output", target, "--device", "cpu"])
    a, b = read_volume(tmp_path / "a.nii.gz"), read_volume(tmp_path / "b.nii.gz")
    assert b.same_geometry(read_volume(moved))  # on exactly the input's grid
    np.testing.assert_array_equal(stored_as(a, code).array, b.array)


def test_a_model_trained_at_native_spacing_records_that_spacing(tiny_model, tiny_dataset):
    prep = read_manifest(tiny_model)["preprocessing"]
    spacing = read_volume(first_case(tiny_dataset)[0]).spacing
    assert prep["spacing"] == pytest.approx(list(spacing))
    assert prep["orientation"] == "canonical"


def test_a_scan_at_twice_the_spacing_is_resampled_to_the_models(tiny_model, tiny_dataset):
    prep = Preprocessing.from_dict(read_manifest(tiny_model)["preprocessing"])
    image = read_volume(first_case(tiny_dataset)[0])
    coarse = from_sitk(sitk.Resample(to_sitk(image), [n // 2 for n in image.array.shape[::-1]], sitk.Transform(),
                                     sitk.sitkLinear, image.origin, [2 * s for s in image.spacing], image.direction))
    assert preprocess_image(coarse, prep).shape == image.array.shape  # back on the model's grid


def _predict_warnings(capsys, model, volume, tmp_path):
    scan = write_volume(volume, tmp_path / "scan.nii.gz", overwrite=True)
    out = tmp_path / "seg.nii.gz"
    out.unlink(missing_ok=True)
    text = accepted(capsys, ["predict", "--model", model, "--input", scan, "--output", out, "--device", "cpu"])
    return [line for line in text.splitlines() if "warning:" in line]


def test_a_scan_like_the_training_data_gets_no_warning(capsys, tiny_model, tiny_dataset, tmp_path):
    assert _predict_warnings(capsys, tiny_model, read_volume(first_case(tiny_dataset)[0]), tmp_path) == []


def test_inverted_intensities_are_warned_about(capsys, tiny_model, tiny_dataset, tmp_path):
    image = read_volume(first_case(tiny_dataset)[0])
    warnings = _predict_warnings(capsys, tiny_model, image.with_array(image.array.max() - image.array), tmp_path)
    assert any("intensities" in w for w in warnings), warnings


def test_a_far_spacing_is_warned_about(capsys, tiny_model, tiny_dataset, tmp_path):
    image = read_volume(first_case(tiny_dataset)[0])
    image.spacing = tuple(3 * s for s in image.spacing)
    warnings = _predict_warnings(capsys, tiny_model, image, tmp_path)
    assert any("spacing" in w for w in warnings), warnings


def test_an_oblique_scan_is_warned_about(capsys, tiny_model, tiny_dataset, tmp_path):
    image = read_volume(first_case(tiny_dataset)[0])
    image.direction = rotation(0.6, 0.0)  # 34° about x
    warnings = _predict_warnings(capsys, tiny_model, image, tmp_path)
    assert any("oblique" in w for w in warnings), warnings


def test_warnings_are_events_too(capsys, tiny_model, tiny_dataset, tmp_path):
    image = read_volume(first_case(tiny_dataset)[0])
    scan = write_volume(image.with_array(image.array.max() - image.array), tmp_path / "inv.nii.gz")
    events = tmp_path / "events.jsonl"
    accepted(capsys, ["predict", "--model", tiny_model, "--input", scan, "--output", tmp_path / "o.nii.gz",
                      "--device", "cpu", "--events", events])
    kinds = [json.loads(line)["event"] for line in events.read_text(encoding="utf-8").splitlines()]
    assert "warning" in kinds and kinds[-1] == "done"


def test_an_oblique_scan_is_segmented_axis_aligned_and_mapped_back_onto_its_grid():
    from semiseg.oblique import axis_aligned, labels_onto
    # A ball (radius 9 mm) sampled on a grid tilted 30°: thresholded on the axis-aligned resampling and mapped
    # back, it covers the same voxels as thresholding the oblique grid itself.
    grid = Volume(np.zeros((24, 28, 32), np.float32), spacing=(1.0, 1.2, 1.5), origin=(-15.0, -15.0, -15.0),
                  direction=rotation(0.52, 0.3))
    image = to_sitk(grid)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([15.5, 13.5, 11.5]))
    zz, yy, xx = np.indices(grid.array.shape)
    points = np.array([image.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)])
                       for x, y, z in zip(xx.ravel(), yy.ravel(), zz.ravel())])
    oblique = grid.with_array((9.0 - np.linalg.norm(points - centre, axis=1)).reshape(grid.array.shape)
                              .astype(np.float32))
    aligned = axis_aligned(oblique)
    assert aligned.direction == pytest.approx(IDENTITY)
    back = labels_onto(aligned.with_array((aligned.array > 0).astype(np.uint8)), oblique)
    truth = oblique.array > 0
    assert back.shape == truth.shape
    dice = 2 * np.logical_and(back > 0, truth).sum() / (np.sum(back > 0) + truth.sum())
    assert dice > 0.95
