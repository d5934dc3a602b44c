"""A truthful model card: modality, only the intensity settings that act, no tasks without prompts, the
inference cost with what each number measures (on a CPU too), and the curves PNG beside the package."""

from __future__ import annotations

import json

from semiseg.cli import main
from semiseg.datasets import load_dataset
from semiseg.errors import Interrupted
from semiseg.train import Cancelled


def card(model) -> dict:
    return json.loads((model / "model.json").read_text(encoding="utf-8"))


def test_unprompted_model_has_no_tasks_and_only_the_acting_intensity_settings(tiny_run):
    c = card(tiny_run.model)
    assert c["prompted"] is False and c["tasks"] == []
    assert all(lab["task"] is None for lab in c["labels"])
    prep = c["preprocessing"]  # exactly the acting settings: no CT window, no percentiles
    assert set(prep) == {"spacing", "intensity", "orientation"} and prep["intensity"] == "zscore"
    assert prep["orientation"] == "canonical" and len(prep["spacing"]) == 3  # the training data's spacing
    assert c["modality"] == (load_dataset(tiny_run.dataset).modality or None)
    assert c["channels"] == ["image"] or len(c["channels"]) == 1


def test_inference_cost_says_what_it_measures_and_has_cpu_memory(tiny_run):
    inference = card(tiny_run.model)["inference"]
    assert inference["device"] == "cpu"
    assert inference["seconds_per_volume"] > 0 and "sliding window alone" in inference["seconds_per_volume_measures"]
    assert inference["prediction_seconds"] > 0 and "read the image" in inference["prediction_seconds_measures"]
    assert inference["peak_memory_mb"] > 0 and "resident memory" in inference["peak_memory_measures"]


def test_curves_png_is_written_beside_the_model(tiny_run):
    png = tiny_run.model.with_name("tiny.curves.png")
    assert png.is_file() and png.stat().st_size > 5000


def test_modality_option_fills_the_card_and_cancel_is_an_interruption(tiny_dataset, tmp_path, capsys):
    model = tmp_path / "ct.semiseg"
    code = main(["train", "--data", str(tiny_dataset), "--method", "supervised", "--out", str(model),
                 "--iterations", "1", "--patch", "32,32,32", "--device", "cpu", "--option", "n_filters=4",
                 "--quiet", "--modality", "CT"])
    assert code == 0, capsys.readouterr().err
    assert card(model)["modality"] == "CT"
    assert f"curves {tmp_path / 'ct.curves.png'}" in capsys.readouterr().out
    assert issubclass(Cancelled, Interrupted)
