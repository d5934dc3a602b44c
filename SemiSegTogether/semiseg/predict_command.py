"""`semiseg predict`: one model load, then every case of --input, with one progress bar over the cases.

One image and an --output file name work as they always did; a folder or several inputs predict into the
--output folder under nnU-Net's names (semiseg.predict_cases). The wall time printed at the end counts from
the command's start, start-up and model loading included, because that is what a user waits for.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from semiseg.errors import DataError
from semiseg.memory import PeakMemory
from semiseg.predict_cases import (PredictCase, collect_cases, existing_outputs, is_many, plan_outputs,
                                   refuse_existing)


def plan(args, n_channels: int) -> tuple[list[PredictCase], list[PredictCase], bool]:
    """(cases to predict, existing outputs skipped, whether --output is a folder of several cases)."""
    inputs = [Path(p) for p in args.input]
    out = Path(args.output)
    many = is_many(inputs)
    if not many:
        cases = collect_cases(inputs, n_channels)
        planned = [PredictCase(cases[0][0], cases[0][1], out)]
    else:
        planned = plan_outputs(collect_cases(inputs, n_channels), out)
        if not planned:
            raise DataError(f"{', '.join(map(str, inputs))}: no image to predict")
    refuse_unsafe_outputs(planned, overwrite=args.overwrite)
    existing = existing_outputs(planned)
    if args.overwrite or not existing:
        return planned, [], many
    if args.skip_existing:
        return [c for c in planned if c not in existing], existing, many
    if len(planned) == 1:
        raise DataError(f"{out}: already exists (choose another --output or pass --overwrite)")
    refuse_existing(existing)
    raise AssertionError("unreachable")


def refuse_unsafe_outputs(planned: list[PredictCase], overwrite: bool) -> None:
    """An output that is one of the inputs (never replaced, even with --overwrite), a folder, or under a file."""
    from semiseg.ownership import check_new_file, same_file
    for case in planned:
        if any(same_file(case.output, p) for p in case.inputs):
            raise DataError(f"--output {case.output}: is the input image; choose another file (the scan is never "
                            f"replaced)")
        check_new_file(case.output, True, "--output")  # existing files: decided below (--overwrite, --skip-existing)


def run_predict(args, started: float) -> int:
    from semiseg.cli import _fast_paths as fast_paths
    from semiseg.devices import resolve_device
    from semiseg.events import EventWriter
    from semiseg.infer import predict_volume
    from semiseg.io import read_volume, write_volume
    from semiseg.model import load_model, read_manifest

    from semiseg.infer import check_window_settings
    from semiseg.ownership import check_new_file
    check_window_settings(args.overlap, args.sw_batch_size)  # before the model is loaded or a scan read
    if args.events and args.events != "-":
        check_new_file(args.events, args.overwrite, "--events")
    with EventWriter(args.events) as events:
        try:
            device = resolve_device(args.device)
            manifest = read_manifest(Path(args.model))
            todo, skipped, many = plan(args, len(manifest.get("channels") or ["image"]))
            inputs = [str(p) for p in args.input]
            events.emit("start", input=inputs[0] if len(inputs) == 1 else inputs, device=str(device),
                        cases=len(todo), skipped=len(skipped))
            if not todo:
                events.emit("done", output=str(args.output), files=[], seconds=time.perf_counter() - started,
                            cases=0, skipped=len(skipped))
                print(f"nothing to predict: all {len(skipped)} label maps exist in {args.output} (--skip-existing)",
                      file=sys.stderr)
                return 0
            peak = PeakMemory(device).start()  # the model and every case: what this command needs
            net, manifest = load_model(Path(args.model), device)
            loaded = time.perf_counter()
            events.emit("progress", fraction=0.0, stage="model loaded")
            prompts = [p for p in (args.prompts or "").split(",") if p.strip()] or None
            fast, stats = fast_paths(args), {}
            written, window_seconds = [], 0.0
            bar = tqdm(todo, disable=args.quiet or len(todo) < 2, file=sys.stderr, unit="case", desc="predict",
                       dynamic_ncols=True)
            for i, case in enumerate(bar):
                bar.set_postfix_str(case.id)

                def progress(fraction: float, i=i) -> None:
                    events.emit("progress", fraction=round(0.05 + 0.9 * (i + fraction) / len(todo), 4),
                                stage=f"sliding window, case {i + 1}/{len(todo)}", case=case.id)

                channels = [read_volume(p) for p in case.inputs]
                volume = channels[0]
                label, stats = predict_volume(net, manifest, channels, device, prompts=prompts, overlap=args.overlap,
                                              sw_batch_size=args.sw_batch_size, blend=args.blend, lcc=args.lcc,
                                              fast=fast, preprocess_on_device=not args.cpu_preprocessing,
                                              progress=progress, mirror=args.tta)
                window_seconds += stats["seconds"]
                for warning in stats.pop("warnings", []):
                    events.emit("warning", message=warning, case=case.id)
                    tqdm.write(f"semiseg predict: warning: {case.inputs[0]}: {warning}", file=sys.stderr)
                if case.output.name.lower().endswith(".seg.nrrd"):  # segments with the model's names, colours
                    from semiseg.segfile import write_segmentation
                    chosen = [lab for lab in manifest["labels"] if not prompts or lab["name"] in prompts]
                    write_segmentation(label, chosen, case.output, overwrite=args.overwrite)
                else:
                    write_volume(label, case.output, overwrite=args.overwrite)
                written.append(str(case.output))
                written += _surfaces(args, manifest, label, case, many=many)
                if args.preview:
                    written.append(str(write_preview(volume, label, manifest, case.output)))
            bar.close()
            peak.stop()
            wall = time.perf_counter() - started
            events.emit("done", output=str(args.output) if many else str(todo[0].output), files=written,
                        seconds=wall, cases=len(todo), skipped=len(skipped), device=str(device),
                        sliding_window_seconds=window_seconds, model_load_seconds=loaded - started,
                        peak_memory_mb=peak.mb, fast_paths=stats.get("fast_paths"))
        except Exception as exc:
            events.emit("error", message=f"{exc}")
            raise
    print(_summary(todo, skipped, written, many, wall, loaded - started, window_seconds, str(device)) +
          f"; peak memory {peak.mb:.0f} MB", file=sys.stderr)
    return 0


def preview_path(output: Path) -> Path:
    """scan-seg.nii.gz -> scan-seg_preview.png, next to the label map."""
    from semiseg.io import strip_image_extension
    return output.with_name(f"{strip_image_extension(output.name)}_preview.png")


def write_preview(volume, label, manifest: dict, output: Path) -> Path:
    """The label map over its image: three planes, three slices each, one colour per structure."""
    from semiseg.overlays import overlay_planes
    names = {lab["value"]: lab["name"] for lab in manifest["labels"]}
    return overlay_planes(volume.array, preview_path(output), names, {"prediction": label.array},
                          spacing_zyx=volume.spacing_zyx, title=f"{output.name} ({manifest.get('name', 'model')})")


def _surfaces(args, manifest, label, case: PredictCase, many: bool) -> list[str]:
    if not args.surface:
        return []
    from semiseg.io import strip_image_extension
    from semiseg.surface import write_surfaces
    target = Path(args.surface)
    if many:  # --surface .vtp: CASE.vtp next to each label map
        suffix = target.suffix if target.suffix in (".vtp", ".stl") else target.name
        if suffix not in (".vtp", ".stl"):
            raise DataError(f"--surface {args.surface}: with several cases give the surface format, .vtp or .stl; "
                            f"each case's surfaces are written next to its label map")
        target = case.output.with_name(strip_image_extension(case.output.name) + suffix)
    names = {lab["name"]: lab["value"] for lab in manifest["labels"]}
    return [str(p) for p in write_surfaces(label, target, names, overwrite=args.overwrite)]


def _summary(todo, skipped, written, many, wall, load, window, device) -> str:
    what = f"wrote {len(todo)} label map(s) into {todo[0].output.parent}" if many else f"wrote {', '.join(written)}"
    kept = f"; kept {len(skipped)} existing (--skip-existing)" if skipped else ""
    per_case = f", {window / len(todo):.2f} s per case" if many else ""
    return (f"{what}{kept} in {wall:.1f} s wall time (start-up and model load {load:.1f} s, sliding window "
            f"{window:.1f} s on {device}{per_case})")
