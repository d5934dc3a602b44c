"""Overlay figures: three planes, slices through every structure, distinct colours, and their callers."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from semiseg.cli import main
from semiseg.datasets import load_dataset
from semiseg.overlays import LABEL_COLORS, choose_slices, label_color, overlay_planes


def phantom() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((20, 24, 28), np.uint8)
    label[4:16, 4:20, 4:24] = 1  # a big organ
    label[9:11, 14:16, 18:20] = 3  # a small lesion off its centre
    image = np.random.default_rng(0).normal(size=label.shape).astype(np.float32) + label
    return image, label


def colour_share(png, colour: str, tol: float = 0.12) -> float:
    pixels = imread(png)[..., :3]
    return float((np.abs(pixels - np.array(to_rgb(colour))).max(axis=-1) < tol).mean())


def test_slices_go_through_each_structures_centre():
    _, label = phantom()
    for axis, lesion_centre in ((0, 9), (1, 14), (2, 18)):
        chosen = choose_slices([label], axis, 3)
        assert len(chosen) == 3 and chosen == sorted(chosen)
        assert any(abs(i - lesion_centre) <= 1 for i in chosen)  # the small structure is shown


def test_colours_are_distinct_and_not_grey():
    rgb = [np.array(to_rgb(c)) for c in LABEL_COLORS]
    assert len({tuple(c) for c in rgb}) == len(rgb)
    assert all(c.max() - c.min() > 0.5 for c in rgb)  # saturated: no white, grey or black outline


def test_overlay_draws_truth_and_prediction_in_their_colours(tmp_path):
    image, label = phantom()
    names = {1: "organ", 2: "vessel", 3: "lesion"}
    png = overlay_planes(image, tmp_path / "o.png", names, {"a": label, "b": label}, truth=label, title="t")
    assert colour_share(png, label_color(0)) > 0.002  # organ
    assert colour_share(png, label_color(2)) > 0.0001  # lesion, small but drawn
    assert not list(tmp_path.glob(".*"))  # written atomically, nothing left behind


def test_predict_preview_is_written_next_to_the_label_map(capsys, tiny_model, tiny_dataset, tmp_path):
    case = load_dataset(tiny_dataset).test[0]
    out = tmp_path / "scan-seg.nii.gz"
    code = main(["predict", "--model", str(tiny_model), "--input", str(case.image), "--output", str(out),
                 "--device", "cpu", "--preview"])
    assert code == 0, capsys.readouterr().err
    preview = tmp_path / "scan-seg_preview.png"
    assert preview.is_file() and str(preview) in capsys.readouterr().err
    assert imread(preview).shape[0] > 300  # three rows of planes


@pytest.mark.parametrize("iterations", [2])
def test_demo_report_puts_structures_first_and_explains_a_miss(tmp_path, iterations):
    from semiseg.demo import run_demo
    report = run_demo(tmp_path / "demo", iterations=iterations, device="cpu", methods=("supervised",),
                      shape=(32, 32, 32), patch=(32, 32, 32), n_filters=4, n_labeled=3, n_unlabeled=1, n_test=2,
                      progress=False)
    text = report.read_text(encoding="utf-8")
    assert text.index("## Per structure") < text.index("## Mean over structures")
    assert "lesion Dice %" in text
    missed = [line for line in text.splitlines() if line.startswith("**Why the")]
    assert missed and all("voxels per test case" in line for line in missed)
    assert (tmp_path / "demo" / "overlay.png").is_file()


def test_demo_report_gives_mean_teachers_paired_gain_over_its_twin():
    from semiseg.demo import pool_gain_lines

    def summary(*dice):
        return {"cases": {f"c{i}": {"mean": {"dice": d}} for i, d in enumerate(dice)}}

    same = pool_gain_lines({"supervised": summary(0.5, 0.6), "mean-teacher": summary(0.5, 0.6)})
    assert "**+0.0 ± 0.0 Dice points**, better on 0 of 2 cases" in "\n".join(same)
    assert "no gain" in "\n".join(same) and "la-dev-twins-10m" in "\n".join(same)
    ahead = "\n".join(pool_gain_lines({"supervised": summary(0.5, 0.6, 0.7), "mean-teacher": summary(0.6, 0.7, 0.7)}))
    assert "**+6.7 ± 4.7 Dice points**, better on 2 of 3 cases" in ahead and "a hint, not evidence" in ahead
    assert pool_gain_lines({"supervised": summary(0.5)}) == []
