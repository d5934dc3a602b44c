"""`semiseg demo`: the whole job on built-in synthetic data, on a laptop CPU in minutes.

Generates phantoms (a few labeled, an unlabeled pool, a test set), trains the supervised baseline
and Mean Teacher on them, predicts the test cases, evaluates, and writes report.md with the metrics
table and an overlay figure.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from semiseg import __version__
from semiseg.datasets import load_dataset
from semiseg.devices import resolve_device
from semiseg.evaluate import evaluate_folder
from semiseg.figures import overlay_figure
from semiseg.infer import predict_volume
from semiseg.io import read_label, read_volume, write_volume
from semiseg.model import load_model
from semiseg.ownership import GeneratedFolder
from semiseg.synthetic import make_dataset
from semiseg.train import TrainConfig, train

DEMO_METHODS = ("supervised", "mean-teacher")
DEMO_OUTPUTS = ("data", "models", "predictions", "logs", "overlay.png", "report.md")


def run_demo(out: Path, iterations: int = 300, device: str = "auto", overwrite: bool = False,
             methods=DEMO_METHODS, shape=(48, 48, 48), patch=(32, 32, 32), n_filters: int = 16,
             n_labeled: int = 4, n_unlabeled: int = 12, n_test: int = 4, progress: bool = True) -> Path:
    out = Path(out)
    # --overwrite replaces only an earlier demo's own outputs, never other files in the folder.
    folder = GeneratedFolder(out, "demo").prepare(overwrite)
    for entry in DEMO_OUTPUTS:
        folder.add(entry)
    start = time.perf_counter()
    dev = resolve_device(device)
    data = make_dataset(out / "data", n_labeled=n_labeled, n_unlabeled=n_unlabeled, n_test=n_test, shape=shape,
                        seed=0)
    ds = load_dataset(data)
    rows, overlays, summaries = [], {}, {}
    for method in methods:
        model_path = out / "models" / f"{method}.semiseg"
        result = train(TrainConfig(data=str(data), out=str(model_path), method=method, iterations=iterations,
                                   patch=list(patch), method_options={"n_filters": n_filters}, device=str(dev),
                                   val_every=max(1, iterations // 6), seed=0, progress=progress,
                                   events=str(out / "logs" / f"{method}.jsonl")))
        net, manifest = load_model(model_path, dev)
        pred_dir = out / "predictions" / method
        seconds = []
        for case in ds.test:
            label, stats = predict_volume(net, manifest, read_volume(case.image), dev)
            write_volume(label, pred_dir / case.image.name)
            seconds.append(stats["seconds"])
        metrics = evaluate_folder(pred_dir, data, split="test")
        summaries[method] = metrics
        mean = metrics["summary"]["mean"]
        rows.append((method, mean, result, sum(seconds) / len(seconds)))
        first = ds.test[0]
        overlays[method] = read_label(pred_dir / first.image.name).array
    first = ds.test[0]
    image, truth = read_volume(first.image), read_label(first.label)
    figure = overlay_figure(image.array, truth.array, overlays, out / "overlay.png",
                            title=f"{first.id}: truth vs prediction", spacing_zyx=image.spacing_zyx)
    report = out / "report.md"
    report.write_text(_report(ds, rows, summaries, figure, dev, iterations, patch, n_filters,
                              time.perf_counter() - start), encoding="utf-8")
    return report


def _report(ds, rows, summaries, figure, device, iterations, patch, n_filters, seconds) -> str:
    def cell(s, scale=1.0):
        return f"{s['mean'] * scale:.1f} ± {s['std'] * scale:.1f}"

    lines = [
        "# SemiSeg demo report", "",
        f"Synthetic phantoms (`semiseg.synthetic`): {len(ds.training)} labeled (one held out for validation), "
        f"{len(ds.unlabeled)} unlabeled, {len(ds.test)} test cases; labels "
        f"{', '.join(ds.foreground_labels)}. V-Net n_filters {n_filters}, patch {list(patch)}, {iterations} "
        f"iterations per method, device `{device}` ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), engine {__version__}. Whole demo: {seconds / 60:.1f} min.", "",
        "Test metrics, mean ± std over the test cases and labels' mean (distances in mm; ASD directed "
        "prediction→truth):", "",
        "| method | Dice % | Jaccard % | HD95 mm | ASD mm | best val. Dice % | train s | s / volume |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, mean, result, infer_s in rows:
        best = f"{100 * result.best_dice:.1f}" if result.best_dice is not None else "–"
        lines.append(f"| {method} | {cell(mean['dice'], 100)} | {cell(mean['jaccard'], 100)} | "
                     f"{cell(mean['hd95_mm'])} | {cell(mean['asd_mm'])} | {best} | {result.seconds:.0f} | "
                     f"{infer_s:.2f} |")
    lines += ["", "Per label (Dice %):", "", "| method | " + " | ".join(ds.foreground_labels) + " |",
              "|---|" + "---|" * len(ds.foreground_labels)]
    for method, summary in summaries.items():
        lines.append(f"| {method} | " + " | ".join(cell(summary["summary"][n]["dice"], 100)
                                                   for n in ds.foreground_labels) + " |")
    lines += ["", f"![overlay]({figure.name})", "",
              "This is a smoke-scale run on tiny synthetic volumes: it shows the pipeline end to end, not "
              "the methods' quality. See docs/benchmarks/ for real-data numbers.", ""]
    return "\n".join(lines)
