"""`.seg.nrrd` with the model's segment names, colours and terminology (semiseg.segfile, via slicerio)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from semiseg.errors import DataError
from semiseg.segfile import write_segmentation
from semiseg.volume import Volume

LEFT_ATRIUM = {"name": "left atrium", "value": 1, "color": [177, 122, 101],
               "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"],
                               "type": ["SCT", "82471001", "Left atrium"],
                               "region": ["SCT", "80891009", "Heart"]}}
VESSEL = {"name": "vessel", "value": 2, "color": [0, 0, 255]}


def _oblique_label():
    array = np.zeros((4, 5, 6), np.uint8)  # (z, y, x)
    array[1:3, 2:4, 1:5] = 1
    return Volume(array, spacing=(0.5, 0.7, 2.0), origin=(10.0, 20.0, 30.0), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))


def test_segments_keep_names_colours_terminology_and_geometry(tmp_path):
    label = _oblique_label()
    path = write_segmentation(label, [LEFT_ATRIUM, VESSEL], tmp_path / "result.seg.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.seg.nrrd"]  # atomic: nothing left behind
    assert path.stat().st_mode & 0o044, "readable by others, like any file the user saves"
    seg = slicerio.read_segmentation(str(path))
    atrium, vessel = seg["segments"]
    assert (atrium["name"], atrium["labelValue"], vessel["name"], vessel["labelValue"]) == ("left atrium", 1,
                                                                                          "vessel", 2)
    assert atrium["color"] == pytest.approx([177 / 255, 122 / 255, 101 / 255])
    assert atrium["terminology"]["type"] == ["SCT", "82471001", "Left atrium"]
    assert atrium["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert atrium["terminology"]["anatomicRegion"] == ["SCT", "80891009", "Heart"]
    assert "terminology" not in vessel and vessel["extent"] == [0, -1, 0, -1, 0, -1]  # empty, still listed
    image = sitk.ReadImage(str(path))  # the same grid as the input, voxel for voxel
    assert np.array_equal(sitk.GetArrayFromImage(image), label.array)
    assert image.GetSpacing() == pytest.approx(label.spacing) and image.GetOrigin() == pytest.approx(label.origin)
    assert image.GetDirection() == pytest.approx(label.direction)


def test_bad_name_unknown_values_and_existing_file_are_clear_errors(tmp_path):
    label = _oblique_label()
    with pytest.raises(DataError, match="must end with .seg.nrrd"):
        write_segmentation(label, [LEFT_ATRIUM], tmp_path / "x.nrrd")
    with pytest.raises(DataError, match=r"label values \[1\] are not among the model's labels"):
        write_segmentation(label, [VESSEL], tmp_path / "x.seg.nrrd")
    write_segmentation(label, [LEFT_ATRIUM], tmp_path / "x.seg.nrrd")
    with pytest.raises(DataError, match="already exists"):
        write_segmentation(label, [LEFT_ATRIUM], tmp_path / "x.seg.nrrd")
    write_segmentation(label, [LEFT_ATRIUM], tmp_path / "x.seg.nrrd", overwrite=True)


def test_cli_predict_writes_a_seg_nrrd_with_the_models_segments(tiny_model, tiny_dataset, tmp_path):
    image = sorted((tiny_dataset / "imagesTs").iterdir())[0]
    out = tmp_path / "pred.seg.nrrd"
    done = subprocess.run([sys.executable, "-m", "semiseg", "predict", "--model", str(tiny_model), "--input",
                           str(image), "--output", str(out), "--device", "cpu"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((tiny_model / "model.json").read_text(encoding="utf-8"))
    seg = slicerio.read_segmentation(str(out))
    assert [s["name"] for s in seg["segments"]] == [lab["name"] for lab in manifest["labels"]]
    assert [s["labelValue"] for s in seg["segments"]] == [lab["value"] for lab in manifest["labels"]]
    for segment, lab in zip(seg["segments"], manifest["labels"]):
        assert segment["color"] == pytest.approx([c / 255 for c in lab["color"]], abs=1e-6)
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(image)).GetSize()
