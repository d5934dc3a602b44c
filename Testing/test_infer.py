"""Prediction: the label lies on exactly the input's grid, prompts, prompted merging, LCC, window counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_data import rotation
from monai.inferers import sliding_window_inference
from scipy import ndimage
from torch import nn

from semiseg.errors import ConfigError
from semiseg.infer import (keep_largest_component, predict_classes, predict_volume, select_prompts,
                           sliding_window_probabilities, window_count)
from semiseg.io import read_volume, write_volume
from semiseg.nets import build_network
from semiseg.prompts import merge_task_probabilities as merge_prompted  # what predict_classes merges with
from semiseg.volume import Volume

CPU = torch.device("cpu")


def manifest(patch=(16, 16, 16), spacing=None, intensity="zscore", labels=("a", "b")) -> dict:
    return {
        "labels": [{"name": n, "value": i + 1, "color": [255, 0, 0], "terminology": None, "task": None}
                   for i, n in enumerate(labels)],
        "tasks": [], "prompted": False, "patch_size": list(patch),
        "preprocessing": {"spacing": None if spacing is None else list(spacing), "intensity": intensity},
    }


def vnet(n_classes: int = 3):
    torch.manual_seed(0)
    return build_network("vnet", in_channels=1, n_classes=n_classes, n_filters=4).eval()


class NearestIntensity(nn.Module):
    """Class c wherever the (unnormalised) intensity is closest to c: a 'model' whose right answer is known."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.register_buffer("centres", torch.arange(n_classes, dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return -10.0 * (x - self.centres) ** 2


def phantom(shape, spacing, origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Volume:
    """Background 0, an off-centre ball of 1 and a box of 2 (array order z, y, x)."""
    z, y, x = np.indices(shape)
    sz, sy, sx = spacing[::-1]
    arr = np.zeros(shape, np.float32)
    c = np.array(shape) * np.array([0.35, 0.6, 0.3])
    r = 0.22 * min(n * s for n, s in zip(shape, (sz, sy, sx)))
    arr[((z - c[0]) * sz) ** 2 + ((y - c[1]) * sy) ** 2 + ((x - c[2]) * sx) ** 2 <= r * r] = 1
    d, h, w = shape
    arr[int(0.6 * d):int(0.9 * d), int(0.1 * h):int(0.4 * h), int(0.6 * w):int(0.9 * w)] = 2
    return Volume(arr, tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                  tuple(float(v) for v in direction))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def same_grid_exactly(label: Volume, image: Volume) -> None:
    assert label.array.shape == image.array.shape
    assert tuple(label.spacing) == tuple(image.spacing)
    assert tuple(label.origin) == tuple(image.origin)
    assert tuple(label.direction) == tuple(image.direction)


ROTATED = dict(shape=(20, 24, 18), spacing=(0.7, 1.3, 2.1), origin=(-31.5, 12.25, 104.0), direction=rotation(0.4, 0.9))


# ---- geometry --------------------------------------------------------------------------------------------
def test_rotated_anisotropic_shifted_image_keeps_its_grid(tmp_path):
    image = phantom(**ROTATED)
    label, stats = predict_volume(vnet(), manifest(), image, CPU)
    same_grid_exactly(label, image)
    assert np.issubdtype(label.array.dtype, np.integer)
    assert set(np.unique(label.array)) <= {0, 1, 2}
    assert stats["device"] == "cpu" and stats["seconds"] >= 0
    for ext in (".nii.gz", ".nrrd"):
        image_file = write_volume(image, tmp_path / f"image{ext}")
        label_file = write_volume(label, tmp_path / f"label{ext}")
        on_disk, back = read_volume(image_file), read_volume(label_file)
        same_grid_exactly(back, on_disk)
        assert np.allclose(back.spacing, image.spacing) and np.allclose(back.origin, image.origin)
        assert np.allclose(back.direction, image.direction, atol=1e-6)
        assert np.array_equal(back.array, label.array)


def test_prediction_lands_on_the_right_voxels():
    image = phantom(**ROTATED)
    label, _ = predict_volume(NearestIntensity(), manifest(intensity="none"), image, CPU, overlap=0.25)
    assert np.array_equal(label.array, image.array.astype(np.uint8))


def test_image_smaller_than_the_patch():
    image = phantom((20, 18, 12), (1.0, 1.0, 1.0), origin=(5.0, -3.0, 2.0))
    label, _ = predict_volume(vnet(), manifest(patch=(32, 32, 32)), image, CPU)
    same_grid_exactly(label, image)
    truth, _ = predict_volume(NearestIntensity(), manifest(patch=(32, 32, 32), intensity="none"), image, CPU)
    assert np.array_equal(truth.array, image.array.astype(np.uint8))


@pytest.mark.parametrize("target", [(2.0, 2.0, 2.0), (0.6, 0.9, 1.1)], ids=["coarser", "finer"])
def test_preprocessing_spacing_change_gives_the_input_grid(target):
    image = phantom((22, 26, 30), (0.8, 1.2, 1.5), origin=(-10.0, 20.0, 3.5), direction=rotation(0.2, -0.3))
    model = manifest(spacing=target, intensity="none")
    net = NearestIntensity()
    label, _ = predict_volume(net, model, image, CPU)
    same_grid_exactly(label, image)
    # Resampled there and back: the structures are still where they were, up to boundary voxels (the
    # blurred edge of the box of 2s reads as 1s to this 'model', so class 1 is checked on the ball's core).
    assert dice(label.array > 0, image.array > 0) > 0.85
    assert dice(label.array == 2, image.array == 2) > 0.8
    core = ndimage.binary_erosion(image.array == 1, iterations=2)
    assert core.sum() > 10 and (label.array[core] == 1).all()
    # A flipped axis would not pass: the structures are off-centre.
    assert dice(label.array[:, :, ::-1] > 0, image.array > 0) < 0.5
    label_vnet, _ = predict_volume(vnet(), manifest(spacing=target), image, CPU)
    same_grid_exactly(label_vnet, image)


# ---- prompts -----------------------------------------------------------------------------------------------
def test_prompts_select_labels():
    image = phantom((16, 20, 24), (1.0, 1.0, 1.0))
    model = manifest(intensity="none")
    everything, _ = predict_volume(NearestIntensity(), model, image, CPU)
    assert set(np.unique(everything.array)) == {0, 1, 2}
    only_b, _ = predict_volume(NearestIntensity(), model, image, CPU, prompts=[" B "])
    assert set(np.unique(only_b.array)) == {0, 2}
    assert np.array_equal(only_b.array == 2, everything.array == 2)
    assert [lab["name"] for lab in select_prompts(model, None)] == ["a", "b"]
    assert [lab["name"] for lab in select_prompts(model, ["b", "a"])] == ["b", "a"]


def test_unknown_prompt_is_a_config_error():
    image = phantom((16, 16, 16), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="liver"):
        predict_volume(vnet(), manifest(), image, CPU, prompts=["a", "liver"])


def test_prompted_model_runs_only_the_asked_tasks():
    """A prompted manifest: one pass per task; a voxel claimed by two tasks goes to the more confident."""

    class TwoTasks(nn.Module):
        prompted = True

        def __init__(self):
            super().__init__()
            self.tasks_seen = []

        def forward(self, x, task):
            self.tasks_seen.append(int(task[0]))
            fg = (x > 0.5).float() * (0.6 if int(task[0]) == 0 else 0.9) * 10
            return torch.cat([torch.zeros_like(x), fg], 1)

    model = manifest(intensity="none", labels=("a", "b"))
    model["prompted"] = True
    model["tasks"] = [{"name": "ta", "index": 0, "labels": ["a"]}, {"name": "tb", "index": 1, "labels": ["b"]}]
    model["labels"][0]["task"], model["labels"][1]["task"] = "ta", "tb"
    image = phantom((16, 16, 16), (1.0, 1.0, 1.0))
    net = TwoTasks()
    both = predict_classes(net, model, image.array, CPU)
    assert sorted(set(net.tasks_seen)) == [0, 1]
    assert set(np.unique(both)) == {0, 2}  # task b is the more confident everywhere both claim
    net = TwoTasks()
    only_a = predict_classes(net, model, image.array, CPU, chosen=select_prompts(model, ["a"]))
    assert set(net.tasks_seen) == {0}
    assert np.array_equal(only_a == 1, image.array > 0.5)


# ---- merging and post-processing -------------------------------------------------------------------------
def test_merge_prompted_gives_shared_voxels_to_the_more_confident_task():
    # Four voxels. Task A (value 1): claims 0, 1, 2. Task B (values 2, 3): claims 0 (as 3), 1 (as 2).
    a = torch.tensor([[0.3, 0.05, 0.4, 0.9],
                      [0.7, 0.95, 0.6, 0.1]])
    b = torch.tensor([[0.05, 0.2, 0.8, 0.9],
                      [0.05, 0.6, 0.1, 0.05],
                      [0.9, 0.2, 0.1, 0.05]])
    merged = merge_prompted([([1], a), ([2, 3], b)])
    assert merged.tolist() == [3, 1, 1, 0]
    # Order does not matter.
    assert merge_prompted([([2, 3], b), ([1], a)]).tolist() == [3, 1, 1, 0]


def test_keep_largest_component_per_label():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[0:3, 0:3, 0:3] = 1  # 27 voxels: kept
    labels[8, 8, 8] = 1  # stray voxel: dropped
    labels[6:8, 0:2, 0:2] = 2  # 8 voxels ...
    labels[8, 2, 2] = 2  # ... plus one touching only by a corner: the same 26-connected component
    labels[10:12, 10:12, 0:3] = 2  # 12 voxels: the largest of label 2
    labels[11, 0, 11] = 2  # stray
    out = keep_largest_component(labels)
    expected = np.zeros_like(labels)
    expected[0:3, 0:3, 0:3] = 1
    expected[10:12, 10:12, 0:3] = 2
    assert np.array_equal(out, expected)
    assert out.dtype == labels.dtype
    assert not keep_largest_component(np.zeros((4, 4, 4), np.uint8)).any()


def test_lcc_option_of_predict_volume():
    image = phantom((16, 20, 24), (1.0, 1.0, 1.0))
    image.array[0, 0, 0] = 1  # an isolated voxel the 'model' will label
    label, _ = predict_volume(NearestIntensity(), manifest(intensity="none"), image, CPU, lcc=False)
    assert label.array[0, 0, 0] == 1
    label, _ = predict_volume(NearestIntensity(), manifest(intensity="none"), image, CPU, lcc=True)
    assert label.array[0, 0, 0] == 0 and (label.array == 1).sum() == (image.array == 1).sum() - 1


# ---- sliding-window bookkeeping -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, patch", [
    ((32, 32, 32), (16, 16, 16)),
    ((40, 33, 17), (16, 16, 16)),
    ((20, 18, 12), (32, 32, 32)),
    ((64, 48, 40), (32, 16, 24)),
    ((16, 50, 16), (16, 16, 16)),
])
def test_window_count_matches_monai(shape, patch):
    for overlap in (0.0, 0.25, 0.5, 0.75):
        calls = []

        def predictor(window):
            calls.append(window.shape[0])
            return window

        sliding_window_inference(torch.zeros(1, 1, *shape), roi_size=patch, sw_batch_size=1, predictor=predictor,
                                 overlap=overlap)
        assert window_count(shape, patch, overlap) == len(calls), (shape, patch, overlap)


@pytest.mark.parametrize("sw_batch_size", [1, 3])
def test_progress_ends_at_one(sw_batch_size):
    fractions = []
    net = NearestIntensity()
    image = torch.zeros(1, 1, 40, 33, 17)
    probs = sliding_window_probabilities(net, image, (16, 16, 16), overlap=0.5, sw_batch_size=sw_batch_size,
                                         progress=fractions.append)
    assert probs.shape == (1, 3, 40, 33, 17)
    assert fractions and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and all(0 < f <= 1 for f in fractions)
    assert fractions.count(1.0) == 1  # 1.0 only at the end, not reached early
    assert len(fractions) == net.calls


def test_progress_through_predict_volume():
    fractions = []
    image = phantom((20, 24, 18), (1.0, 1.0, 1.0))
    predict_volume(vnet(), manifest(), image, CPU, overlap=0.25, progress=fractions.append)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(fractions) == window_count((20, 24, 18), (16, 16, 16), 0.25)


def test_window_count_examples():
    assert window_count((32, 32, 32), (16, 16, 16), 0.5) == 27
    assert window_count((10, 10, 10), (16, 16, 16), 0.5) == 1
    assert window_count((16, 16, 16), (16, 16, 16), 0.0) == 1
    assert window_count((48, 16, 16), (16, 16, 16), 0.0) == 3


# ---- test-time mirroring -------------------------------------------------------------------------------
def test_mirror_averages_the_eight_mirrorings_of_each_window():
    """One window covers the image, so mirroring each window is mirroring the image: the result must be the mean
    of the network's softmax on the 8 mirrored images, each mirrored back."""
    from semiseg.infer import MIRRORS, sliding_window_probabilities
    net = vnet()  # random weights: nothing makes it symmetric
    image = torch.from_numpy(phantom((16, 16, 16), (1.0, 1.0, 1.0)).array)[None, None]
    mirrored = sliding_window_probabilities(net, image, (16, 16, 16), mirror=True)
    by_hand = sum(sliding_window_probabilities(net, image.flip(a), (16, 16, 16)).flip(a) for a in MIRRORS) / 8
    assert len(set(MIRRORS)) == 8
    assert torch.allclose(mirrored, by_hand, atol=1e-5)
    assert not torch.allclose(mirrored, sliding_window_probabilities(net, image, (16, 16, 16)), atol=1e-3)


def test_mirror_through_predict_volume_costs_eight_passes_a_window_and_keeps_a_symmetric_answer():
    net = NearestIntensity()  # voxel-wise: every mirroring gives the same answer
    volume = phantom((20, 24, 18), (1.0, 1.0, 1.0))
    plain, _ = predict_volume(net, manifest(intensity="none"), volume, CPU)
    calls = net.calls
    mirrored, _ = predict_volume(net, manifest(intensity="none"), volume, CPU, mirror=True)
    assert net.calls - calls == 8 * calls
    assert np.array_equal(mirrored.array, plain.array)
