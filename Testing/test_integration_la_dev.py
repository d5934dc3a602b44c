"""Real data end to end: train on ../shared/data/la-dev, predict a test MRI, geometry preserved.

la-dev (20 left-atrium MRIs) lives beside the development checkout and CI's clone, not in a user's
clone, so these tests run only where it is present.
"""

from pathlib import Path

import numpy as np
import pytest

from semiseg.cli import main
from semiseg.io import read_label, read_volume

LA_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "la-dev"
pytestmark = pytest.mark.skipif(not LA_DEV.is_dir(), reason="la-dev is only beside the development checkout")


@pytest.fixture(scope="module")
def la_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("la") / "la.semiseg"
    # Coarse 4 mm voxels and a 4-filter V-Net keep this to seconds; the geometry path is the same.
    code = main(["train", "--data", str(LA_DEV), "--method", "mean-teacher", "--out", str(out), "--iterations",
                 "3", "--val-every", "3", "--spacing", "4,4,4", "--patch", "16,16,16", "--device", "cpu",
                 "--quiet", "--option", "n_filters=4"])
    assert code == 0
    return out


def test_check_accepts_la_dev(capsys):
    assert main(["check", str(LA_DEV)]) == 0
    out = capsys.readouterr().out
    assert "left atrium" in out and "12" in out


def test_predict_writes_labels_on_the_inputs_grid(la_model, tmp_path):
    image_path = sorted((LA_DEV / "imagesTs").iterdir())[0]
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", "--model", str(la_model), "--input", str(image_path), "--output", str(out),
                 "--device", "cpu"]) == 0
    image, pred = read_volume(image_path), read_label(out)
    assert pred.array.shape == image.array.shape
    assert np.allclose(pred.spacing, image.spacing) and np.allclose(pred.origin, image.origin)
    assert np.allclose(pred.direction, image.direction)
    assert set(np.unique(pred.array)) <= {0, 1}
