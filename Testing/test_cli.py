"""The `semiseg` command line, in-process through semiseg.cli.main (one real subprocess for `python -m`)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from semiseg.cli import build_parser, main
from semiseg.datasets import load_dataset
from semiseg.io import read_volume, write_volume
from semiseg.model import load_model

SUBCOMMANDS = {
    "demo": ["--out", "--iterations", "--device", "--overwrite"],
    "check": ["data"],
    "convert": ["la-h5", "--labeled", "--overwrite"],
    "train": ["--data", "--method", "--out", "--iterations", "--device", "--events", "--resume", "--workdir",
              "--seed", "--patch", "--option", "--overwrite"],
    "predict": ["--model", "--input", "--output", "--prompts", "--device", "--overlap", "--sw-batch-size", "--lcc",
                "--surface", "--events", "--overwrite"],
    "evaluate": ["--pred", "--data", "--split", "--out"],
    "methods": ["--json"],
}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


# ---- help -----------------------------------------------------------------------------------------------
def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: semiseg {command}")
    for option in SUBCOMMANDS[command]:
        assert option in out, option


def test_every_subcommand_has_help(capsys):
    """Also the subcommands added later than this file: each one's --help works."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(SUBCOMMANDS) <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: semiseg {command}")


@pytest.mark.parametrize("given, spacing", [("2", [2.0, 2.0, 2.0]), ("1.5,1.5,3", [1.5, 1.5, 3.0])])
def test_train_spacing_takes_one_value_for_all_three_axes(given, spacing):
    """`train --spacing 2` is an isotropic 2 mm grid, as `bench --spacing 2` is (it was refused: not 3 numbers)."""
    args = build_parser().parse_args(["train", "--data", "d", "--out", "m.semiseg", "--spacing", given])
    assert args.spacing == spacing
    bench = build_parser().parse_args(["bench", "--data", "d", "--name", "n", "--spacing", given])
    assert bench.spacing == spacing  # one parser


def test_python_m_semiseg_help(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "semiseg", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: semiseg") and "predict" in proc.stdout


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# ---- check -----------------------------------------------------------------------------------------------
def test_check_prints_counts(capsys, tiny_dataset):
    code, out, err = run(capsys, "check", tiny_dataset)
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in
            (["training"], ["unlabeled"], ["test"])}
    assert rows == {"training": ["4", "4"], "unlabeled": ["4", "0"], "test": ["2", "2"]}
    for name in ("organ", "vessel", "lesion"):
        assert name in out


def test_check_broken_dataset_exits_2_naming_the_file(capsys, tiny_dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    label_file = broken / json.loads((broken / "dataset.json").read_text(encoding="utf-8"))["training"][1]["label"]
    label = read_volume(label_file)
    array = label.array.copy()
    array[0, 0, 0] = 9  # a value the dataset does not declare
    write_volume(label.with_array(array), label_file, overwrite=True)
    code, out, err = run(capsys, "check", broken)
    assert code == 2
    assert err.startswith("semiseg check: error:")
    assert str(label_file) in err and "9" in err
    assert_no_traceback(out, err)


def test_check_missing_dataset(capsys, tmp_path):
    code, out, err = run(capsys, "check", tmp_path / "nowhere")
    assert code == 2 and str(tmp_path / "nowhere") in err
    assert_no_traceback(out, err)


# ---- train → predict → evaluate ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_model(tiny_dataset, tmp_path_factory):
    """`semiseg train` through the CLI (2 iterations); returns (model path, events, stdout)."""
    folder = tmp_path_factory.mktemp("cli-train")
    model, events = folder / "cli.semiseg", folder / "train.jsonl"
    argv = ["train", "--data", str(tiny_dataset), "--method", "supervised", "--out", str(model), "--iterations", "2",
            "--patch", "32,32,32", "--device", "cpu", "--option", "n_filters=4", "--val-every", "1", "--quiet",
            "--events", str(events), "--seed", "3", "--val-cases", "1"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0
    return model, events, out.getvalue()


def test_train(cli_model):
    model, events, out = cli_model
    assert (model / "model.json").is_file()
    assert out.startswith(f"wrote {model} (the last checkpoint;") and "best at" in out
    manifest = json.loads((model / "model.json").read_text(encoding="utf-8"))
    assert manifest["architecture"]["args"]["n_filters"] == 4 and manifest["training"]["seed"] == 3
    kinds = [strict_json(line)["event"] for line in events.read_text(encoding="utf-8").splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "done" and "validation" in kinds


def test_predict_with_events_on_stdout(capsys, cli_model, tiny_dataset, tmp_path):
    model = cli_model[0]
    case = load_dataset(tiny_dataset).test[0]
    output = tmp_path / "pred" / f"{case.id}.nii.gz"
    code, out, err = run(capsys, "predict", "--model", model, "--input", case.image, "--output", output,
                         "--device", "cpu", "--events", "-")
    assert code == 0, err
    events = [strict_json(line) for line in out.splitlines()]  # stdout holds JSON lines only
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    assert events[0]["input"] == str(case.image) and events[0]["device"] == "cpu"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and all(0.0 <= f <= 1.0 for f in fractions)
    assert all(e["stage"] for e in events if e["event"] == "progress")
    assert events[-1]["output"] == str(output) and events[-1]["seconds"] >= 0
    image, label = read_volume(case.image), read_volume(output)
    assert label.array.shape == image.array.shape
    assert np.allclose(label.spacing, image.spacing, atol=1e-6) and np.allclose(label.origin, image.origin, atol=1e-5)
    assert np.allclose(label.direction, image.direction, atol=1e-6)
    assert set(np.unique(label.array)) <= {0, 1, 2, 3}
    assert f"wrote {output}" in err


def test_predict_refuses_an_existing_output(capsys, cli_model, tiny_dataset, tmp_path):
    case = load_dataset(tiny_dataset).test[0]
    output = tmp_path / "exists.nii.gz"
    output.write_bytes(b"keep me")
    code, out, err = run(capsys, "predict", "--model", cli_model[0], "--input", case.image, "--output", output,
                         "--device", "cpu")
    assert code == 2 and str(output) in err and "--overwrite" in err
    assert output.read_bytes() == b"keep me"
    assert_no_traceback(out, err)


def test_predict_bad_model_reports_an_error_event(capsys, tiny_dataset, tmp_path):
    case = load_dataset(tiny_dataset).test[0]
    code, out, err = run(capsys, "predict", "--model", tmp_path / "none.semiseg", "--input", case.image,
                         "--output", tmp_path / "o.nii.gz", "--device", "cpu", "--events", "-")
    assert code == 2 and str(tmp_path / "none.semiseg") in err
    events = [strict_json(line) for line in out.splitlines()]
    assert events[-1]["event"] == "error" and str(tmp_path / "none.semiseg") in events[-1]["message"]
    assert not (tmp_path / "o.nii.gz").exists()
    assert_no_traceback(out, err)


def test_evaluate_writes_strict_json(capsys, cli_model, tiny_dataset, tmp_path):
    preds = tmp_path / "preds"
    for case in load_dataset(tiny_dataset).test:
        code, _, err = run(capsys, "predict", "--model", cli_model[0], "--input", case.image, "--output",
                           preds / f"{case.id}.nii.gz", "--device", "cpu", "--overlap", "0.25")
        assert code == 0, err
    metrics = tmp_path / "metrics.json"
    code, out, err = run(capsys, "evaluate", "--pred", preds, "--data", tiny_dataset, "--out", metrics)
    assert code == 0, err
    assert "Dice" in out and "HD95 mm" in out
    for name in ("organ", "vessel", "lesion"):
        assert name in out
    assert "(2 cases;" in out
    result = strict_json(metrics.read_text(encoding="utf-8"))
    assert len(result["cases"]) == 2 and set(result["summary"]) >= {"organ", "vessel", "lesion"}


def test_evaluate_undefined_distances_are_null(capsys, tiny_dataset, tmp_path):
    """Empty predictions: every distance is undefined (NaN), which the JSON file must hold as null."""
    preds = tmp_path / "empty-preds"
    for case in load_dataset(tiny_dataset).test:
        image = read_volume(case.image)
        write_volume(image.with_array(np.zeros(image.array.shape, np.uint8)), preds / f"{case.id}.nii.gz")
    metrics = tmp_path / "metrics.json"
    code, out, err = run(capsys, "evaluate", "--pred", preds, "--data", tiny_dataset, "--out", metrics)
    assert code == 0, err
    text = metrics.read_text(encoding="utf-8")
    result = strict_json(text)
    assert "null" in text
    assert result["summary"]["organ"]["dice"]["mean"] == 0.0
    assert result["summary"]["organ"]["hd95_mm"]["n_nan"] == 2


def test_evaluate_without_predictions(capsys, tiny_dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "evaluate", "--pred", tmp_path / "empty", "--data", tiny_dataset)
    assert code == 2 and str(tmp_path / "empty") in err
    assert_no_traceback(out, err)


# ---- methods, devices ---------------------------------------------------------------------------------------
def test_methods_json(capsys):
    code, out, _ = run(capsys, "methods", "--json")
    assert code == 0
    methods = strict_json(out)
    names = [m["name"] for m in methods]
    assert "supervised" in names and "mean-teacher" in names
    for m in methods:
        assert m["description"] and isinstance(m["options"], dict)
        for opt in m["options"].values():
            assert set(opt) == {"default", "help"}


def test_methods_text(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "mean-teacher" in out and "ema_decay" in out


@pytest.mark.parametrize("command", ["train", "predict"])
def test_cuda_on_a_cpu_only_machine(capsys, command, tiny_dataset, tiny_model, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine that has a GPU
    if command == "train":
        argv = ["train", "--data", tiny_dataset, "--method", "supervised", "--out", tmp_path / "m.semiseg",
                "--iterations", "1", "--device", "cuda", "--quiet"]
    else:
        case = load_dataset(tiny_dataset).test[0]
        argv = ["predict", "--model", tiny_model, "--input", case.image, "--output", tmp_path / "o.nii.gz",
                "--device", "cuda"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "--device cuda" in err and "CUDA is not available" in err
    assert_no_traceback(out, err)
    assert not (tmp_path / "m.semiseg").exists() and not (tmp_path / "o.nii.gz").exists()


def test_synthetic_writes_a_two_task_multi_domain_dataset(tmp_path, capsys):
    out = tmp_path / "two-task"
    assert main(["synthetic", str(out), "--labeled", "2", "--unlabeled", "1", "--test", "1", "--shape", "16,16,16",
                 "--tasks", "organs=organ,vessel;lesions=lesion", "--labeled-domains", "scanner-a,scanner-b",
                 "--test-domains", "scanner-c"]) == 0
    spec = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert spec["tasks"] == {"organs": ["organ", "vessel"], "lesions": ["lesion"]}
    assert [c["task"] for c in spec["training"]] == ["organs", "lesions"]
    assert [c["domain"] for c in spec["training"]] == ["scanner-a", "scanner-b"]
    assert spec["test"][0]["domain"] == "scanner-c"
    assert main(["synthetic", str(out), "--tasks", "organs"]) == 2
    assert "expected task=label" in capsys.readouterr().err


def test_evaluate_scores_each_case_on_its_own_task(tmp_path):
    # Case A is annotated for "organs" only, case B for "lesions" only. A prediction that finds every structure
    # in both is perfect: the lesion in A (and the organ in B) is real, just not annotated there.
    from semiseg.evaluate import evaluate_folder
    from semiseg.synthetic import make_phantom

    data = tmp_path / "data"
    for folder in ("imagesTs", "labelsTs", "pred"):
        (data / folder).mkdir(parents=True)
    entries = []
    for i, task in enumerate(["organs", "lesions"]):
        image, label = make_phantom(shape=(24, 24, 24), seed=i)
        keep = [1, 2] if task == "organs" else [3]
        write_volume(image, data / "imagesTs" / f"c{i}.nii.gz")
        write_volume(label.with_array(np.where(np.isin(label.array, keep), label.array, 0).astype(np.uint8)),
                     data / "labelsTs" / f"c{i}.nii.gz")
        write_volume(label, data / "pred" / f"c{i}.nii.gz")
        entries.append({"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz", "task": task})
    spec = {"labels": {"background": 0, "organ": 1, "vessel": 2, "lesion": 3}, "training": [entries[0]],
            "test": entries, "tasks": {"organs": ["organ", "vessel"], "lesions": ["lesion"]}}
    (data / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    result = evaluate_folder(data / "pred", data)
    assert set(result["cases"]["c0"]) == {"organ", "vessel", "mean"} and set(result["cases"]["c1"]) == {"lesion", "mean"}
    assert result["summary"]["mean"]["dice"]["mean"] == 1.0
    assert result["summary"]["lesion"]["dice"]["n"] == 1


def test_predict_tta_mirrors_every_window(capsys, cli_model, tiny_dataset, tmp_path, monkeypatch):
    import semiseg.infer as infer
    seen, real = [], infer.predict_volume
    monkeypatch.setattr(infer, "predict_volume", lambda *a, **k: seen.append(k["mirror"]) or real(*a, **k))
    case = load_dataset(tiny_dataset).test[0]
    for flags, name in (([], "plain"), (["--tta"], "tta")):
        code, _, err = run(capsys, "predict", "--model", cli_model[0], "--input", case.image, "--output",
                           tmp_path / name / f"{case.id}.nii.gz", "--device", "cpu", *flags)
        assert code == 0, err
    assert seen == [False, True]
    net, manifest = load_model(cli_model[0], "cpu")
    expected, _ = real(net, manifest, read_volume(case.image), torch.device("cpu"), mirror=True)
    assert np.array_equal(read_volume(tmp_path / "tta" / f"{case.id}.nii.gz").array, expected.array)
