"""`semiseg gain`: bench reports of several budgets → a table and figure of paired gain against budget."""

import json

import pytest

from semiseg.bench_gain import gain_rows, read_reports, write_gain
from semiseg.cli import main


def _ms(mean, std=0.01, n=3, improved=None):
    out = {"mean": mean, "std": std, "n": n}
    return out if improved is None else {**out, "improved": improved, "per_seed": []}


def _report(folder, minutes, gain, name="LA", peer=False, title=None):
    c = {"method": _ms(0.70 + gain), "twin": _ms(0.70), "supervised": _ms(0.69),
         "gain_over_twin": _ms(gain, improved=3 if gain > 0 else 0),
         "gain_over_supervised": _ms(gain + 0.01, improved=3)}
    methods = {"supervised": {}, "versemi": {}, "versemi:unlabeled=false": {}, "mean-teacher": {}}  # no twin yet
    runs = [{"method": m, "options": {}} for m in methods]
    if peer:
        methods["nnunet-v2 (peer)"] = {"train_seconds": _ms(1122.0), "best": {"dice": _ms(0.81, 0.0, 1)}}
        runs.append({"method": "nnunet-v2 (peer)", "options": {"peer": "nnunetv2"}})
    results = {"name": title or f"la-{minutes}m", "dataset": {"name": name}, "protocol": {"time_seconds": 60.0 * minutes},
               "methods": methods, "runs": runs, "paired": [{"method": "versemi", "twin": "versemi:unlabeled=false", "best": c,
                                               "last": c}]}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


def test_gain_against_budget_table_and_figure(tmp_path):
    ten, thirty = _report(tmp_path / "a", 10, 0.001, peer=True), _report(tmp_path / "b", 30, 0.04)
    rows = gain_rows(read_reports([thirty, ten / "results.json"]))
    assert [r["minutes"] for r in rows] == [10, 30]  # sorted by budget, whichever order they came in
    assert rows[1]["gain_over_twin"]["mean"] == pytest.approx(4.0) and rows[1]["improved_over_twin"] == "3/3"
    assert main(["gain", str(ten), str(thirty), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "gain.md").read_text(encoding="utf-8")
    assert "| versemi | 30 | 74.0 ± 1.0 | 70.0 ± 1.0 | 69.0 ± 1.0 | +4.0 ± 1.0 | 3/3 | +5.0 ± 1.0 | 3/3 |" in text
    assert "| nnunet-v2 (peer) (peer, its own training time) | 18.7 | 81.0 ± 0.0 |" in text
    assert "mean-teacher" not in text  # a method without its twin is no peer
    assert (tmp_path / "out" / "gain.png").stat().st_size > 1000
    # The outputs are replaced only on request.
    assert main(["gain", str(ten), "--out", str(tmp_path / "out")]) == 2
    assert main(["gain", str(ten), "--out", str(tmp_path / "out"), "--overwrite"]) == 0


def test_a_rerun_at_the_same_budget_replaces_the_earlier_row_and_says_so(tmp_path):
    first, rerun = _report(tmp_path / "a", 10, 0.001), _report(tmp_path / "b", 10, 0.03, title="la-10m-rerun")
    rows = gain_rows(read_reports([first, rerun]))
    assert len(rows) == 1 and rows[0]["report"] == "la-10m-rerun" and rows[0]["replaces"] == "la-10m"
    assert rows[0]["gain_over_twin"]["mean"] == pytest.approx(3.0)
    assert main(["gain", str(first), str(rerun), "--out", str(tmp_path / "out")]) == 0
    assert "| `la-10m-rerun` (replaces `la-10m`) |" in (tmp_path / "out" / "gain.md").read_text(encoding="utf-8")


def test_bad_reports_are_named(tmp_path, capsys):
    (tmp_path / "junk.json").write_text("{}", encoding="utf-8")
    assert main(["gain", str(tmp_path / "junk.json"), "--out", str(tmp_path / "out")]) == 2
    assert "junk.json: not a `semiseg bench` results.json" in capsys.readouterr().err
    untimed = _report(tmp_path / "c", 10, 0.0)
    results = json.loads((untimed / "results.json").read_text(encoding="utf-8"))
    results["protocol"]["time_seconds"] = None
    (untimed / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert main(["gain", str(untimed), "--out", str(tmp_path / "out")]) == 2
    assert "made without --time" in capsys.readouterr().err
    other = _report(tmp_path / "d", 30, 0.0, name="Heart")
    assert main(["gain", str(_report(tmp_path / "e", 10, 0.0)), str(other), "--out", str(tmp_path / "o")]) == 2
    assert "different datasets" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
