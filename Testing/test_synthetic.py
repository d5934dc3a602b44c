"""Synthetic phantoms and datasets: determinism, anatomy, scanner domains, dataset layout."""

import json

import numpy as np
import pytest
from scipy import ndimage

from semiseg.errors import ConfigError, DataError
from semiseg.io import read_volume
from semiseg.synthetic import DEFAULT_STRUCTURES, DOMAINS, make_dataset, make_phantom

SHAPE = (32, 32, 32)


def test_phantom_is_seeded_and_has_geometry():
    a_img, a_lab = make_phantom(SHAPE, seed=7)
    b_img, b_lab = make_phantom(SHAPE, seed=7)
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    assert a_img.origin == b_img.origin
    c_img, c_lab = make_phantom(SHAPE, seed=8)
    assert not np.array_equal(a_lab.array, c_lab.array)

    assert a_img.array.shape == SHAPE and a_img.array.dtype == np.float32
    assert a_lab.array.dtype == np.uint8
    assert a_img.spacing == (1.0, 1.0, 1.5)
    assert a_img.same_geometry(a_lab)
    assert any(abs(o) > 1 for o in a_img.origin)  # not the array corner at 0


def test_non_cubic_shape_keeps_array_order():
    img, lab = make_phantom((20, 28, 36), spacing=(0.8, 0.9, 2.0), seed=1)
    assert img.array.shape == (20, 28, 36) == lab.array.shape
    assert img.spacing == (0.8, 0.9, 2.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_all_structures_present_and_lesion_small_inside_organ(seed):
    _, lab = make_phantom(SHAPE, seed=seed)
    values = {s.name: s.value for s in DEFAULT_STRUCTURES}
    assert set(np.unique(lab.array)) == {0, *values.values()}
    organ = lab.array == values["organ"]
    lesion = lab.array == values["lesion"]
    # Class imbalance: the lesion is a small fraction of its organ.
    assert 0 < lesion.sum() < 0.25 * organ.sum()
    # The lesion sits in the organ: it borders organ voxels, never only background.
    ring = ndimage.binary_dilation(lesion) & ~lesion
    assert (lab.array[ring] == values["organ"]).mean() > 0.3


def test_domains_change_contrast_and_noise_but_not_anatomy():
    images = {}
    for name in DOMAINS:
        img, lab = make_phantom(SHAPE, seed=3, domain=name)
        images[name] = img.array
        if name == "scanner-a":
            ref = lab.array
        np.testing.assert_array_equal(lab.array, ref)
    organ = ndimage.binary_erosion(ref == 1, iterations=1)
    means = {n: float(a.mean()) for n, a in images.items()}
    # Relative high-frequency noise inside the organ.
    noise = {n: float(np.std((a - ndimage.gaussian_filter(a, 1.0))[organ]) / a[organ].mean()) for n, a in images.items()}
    names = list(DOMAINS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert abs(means[a] - means[b]) > 0.1 * min(means[a], means[b]), means
    assert noise["scanner-b"] > 1.3 * noise["scanner-a"], noise


def test_phantom_rejects_bad_settings():
    with pytest.raises(ConfigError):
        make_phantom(SHAPE, domain="scanner-z")
    with pytest.raises(ConfigError):
        make_phantom((4, 32, 32))


def test_make_dataset_layout_and_domains(tmp_path):
    out = make_dataset(
        tmp_path / "ds", n_labeled=3, n_unlabeled=2, n_test=2, shape=(24, 24, 24), seed=1,
        labeled_domains=("scanner-a", "scanner-b"), unlabeled_domains=("scanner-b",), test_domains=("scanner-c",),
    )
    spec = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert spec["modality"] == "MR"
    assert spec["labels"] == {"background": 0, "organ": 1, "vessel": 2, "lesion": 3}
    assert (len(spec["training"]), len(spec["unlabeled"]), len(spec["test"])) == (3, 2, 2)
    assert [c["domain"] for c in spec["training"]] == ["scanner-a", "scanner-b", "scanner-a"]
    assert [c["domain"] for c in spec["unlabeled"]] == ["scanner-b"] * 2
    assert [c["domain"] for c in spec["test"]] == ["scanner-c"] * 2
    assert all("label" not in c for c in spec["unlabeled"])
    assert "tasks" not in spec
    for c in spec["training"] + spec["test"]:
        img, lab = read_volume(out / c["image"]), read_volume(out / c["label"])
        assert img.array.shape == (24, 24, 24) and img.same_geometry(lab)
        assert set(np.unique(lab.array)) <= {0, 1, 2, 3}
    for c in spec["unlabeled"]:
        assert c["image"].startswith("imagesUn/") and (out / c["image"]).is_file()
    ids = [c["image"] for c in spec["training"] + spec["unlabeled"] + spec["test"]]
    assert len({i.split("/")[1] for i in ids}) == len(ids)  # case names unique across splits


def test_make_dataset_tasks_keep_only_their_structures(tmp_path):
    tasks = {"organs": ["organ", "vessel"], "lesions": ["lesion"]}
    out = make_dataset(tmp_path / "ds", n_labeled=4, n_unlabeled=1, n_test=2, shape=(24, 24, 24), tasks=tasks)
    spec = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert spec["tasks"] == tasks
    assert [c["task"] for c in spec["training"]] == ["organs", "lesions", "organs", "lesions"]
    assert [c["task"] for c in spec["test"]] == ["organs", "lesions"]
    assert "task" not in spec["unlabeled"][0]
    allowed = {"organs": {0, 1, 2}, "lesions": {0, 3}}
    for c in spec["training"] + spec["test"]:
        values = set(np.unique(read_volume(out / c["label"]).array).tolist())
        assert values <= allowed[c["task"]] and len(values) > 1, (c, values)


def test_make_dataset_refuses_non_empty_folder(tmp_path):
    out = tmp_path / "ds"
    make_dataset(out, n_labeled=1, n_unlabeled=0, n_test=0, shape=(16, 16, 16))
    with pytest.raises(DataError, match="not empty"):
        make_dataset(out, n_labeled=1, n_unlabeled=0, n_test=0, shape=(16, 16, 16))
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    make_dataset(out, n_labeled=2, n_unlabeled=0, n_test=0, shape=(16, 16, 16), overwrite=True)
    assert len(json.loads((out / "dataset.json").read_text(encoding="utf-8"))["training"]) == 2
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"
    with pytest.raises(ConfigError):
        make_dataset(tmp_path / "other", tasks={"t": ["no-such-structure"]})
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DataError):
        make_dataset(tmp_path / "file")
