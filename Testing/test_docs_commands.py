"""Every command in README.md and docs/ runs, at a tiny size, so the documentation cannot drift from the CLI.

Commands are taken from the fenced code blocks of README.md and docs/ (generated benchmark reports excluded;
`make demo` counts as the `semiseg demo` it runs). Each file's commands run in order in a fresh folder in
which the paths the docs use exist (`../shared/data/la-dev`, `DATA`, `RUN/data/...`, `scan.nii.gz`) and
point at a tiny phantom dataset (and `UA-MT/data` at a tiny fake of UA-MT's LA h5 folder); training is cut to 2 iterations of a 4-filter network, benchmarks use
the smoke profile. Commands that need several GPUs (torchrun, `--gpus`, CUDA_VISIBLE_DEVICES) or that
elide arguments with `...` are parsed, not run, and must still parse. Inline mentions are not commands.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from semiseg.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
GENERATED = re.compile(r"docs/benchmarks/[^/]+/report\.md$")  # written by `semiseg bench`, not by hand
PARSE_ONLY = ("torchrun", "--gpus", "CUDA_VISIBLE_DEVICES", "...")
TINY_TRAIN = {"--iterations": "2", "--patch": "32,32,32", "--val-every": "1"}


def fenced_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks, with backslash continuations joined."""
    lines, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines


def doc_commands(path: Path) -> list[str]:
    """`semiseg ...` (or `make demo`) commands of one documentation file."""
    out = []
    for line in fenced_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"^\$\s+", "", line).rstrip("&").strip()
        if line == "make demo":
            out.append("semiseg demo --out demo-output --overwrite")
        elif re.match(r"^(\S+=\S+\s+)*semiseg\s", line) or " -m semiseg " in line:
            out.append(line)
    return out


def to_argv(command: str) -> list[str]:
    """The engine's argv: environment assignments, launchers, `[ ]` of synopses and `...` removed."""
    command = command.replace("$g", "0").replace("[", " ").replace("]", " ")
    tokens = [t for t in shlex.split(command, comments=True) if t != "..." and not re.match(r"^[A-Z_]+=", t)]
    start = tokens.index("semiseg") + 1 if "semiseg" in tokens else 0
    return tokens[start:]


def tiny(argv: list[str]) -> list[str]:
    """The same command at a tiny size and on the CPU."""
    argv = list(argv)
    command = argv[0]
    options = {a for a in argv if a.startswith("-")}
    known = {s for a in build_parser()._subparsers._group_actions[0].choices[command]._actions
             for s in a.option_strings}
    settings = dict(TINY_TRAIN) if command == "train" else {}
    if command == "demo":
        settings = {"--iterations": "2"}
    if command == "bench":
        settings = {"--profile": "smoke", "--seeds": "0"}
        if "--time" in argv:  # a budget of minutes per run; test_bench_budget covers --time
            del argv[argv.index("--time"):argv.index("--time") + 2]
    if "--device" in known:
        settings["--device"] = "cpu"
    for option, value in settings.items():
        if option in options:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    if command == "train":
        argv += ["--option", "n_filters=4", "--quiet"]
    return argv


def sandbox(root: Path, dataset: Path, image: Path) -> Path:
    """A working folder in which the docs' example paths exist; returns it."""
    work = root / "work"
    (root / "shared" / "data").mkdir(parents=True)
    shutil.copytree(dataset, root / "shared" / "data" / "la-dev")
    shutil.copytree(dataset, work / "DATA")
    shutil.copytree(dataset, work / "RUN" / "data")
    (work / "RUN" / "data" / "label-info.json").write_text("{}\n", encoding="utf-8")
    shutil.copy(image, work / "scan.nii.gz")
    fake_uamt(work / "UA-MT" / "data", n_train=9, n_test=1)
    return work


def fake_uamt(data: Path, n_train: int, n_test: int) -> None:
    """A tiny copy of UA-MT's data/ folder (train.list, test.list, one mri_norm2.h5 per case)."""
    import h5py
    import numpy as np

    ids = [f"CASE{i:02d}" for i in range(n_train + n_test)]
    data.mkdir(parents=True)
    (data / "train.list").write_text("\n".join(ids[:n_train]) + "\n", encoding="utf-8")
    (data / "test.list").write_text("\n".join(ids[n_train:]) + "\n", encoding="utf-8")
    for i, case in enumerate(ids):
        folder = data / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        label = np.zeros((12, 10, 8), np.uint8)
        label[3:8, 3:7, 2:6] = 1
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"] = np.random.default_rng(i).normal(size=label.shape).astype(np.float32) + label
            f["label"] = label


def documented() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        relative = path.relative_to(ROOT).as_posix()
        if not GENERATED.search(relative) and doc_commands(path):
            found.append((relative, doc_commands(path)))
    return found


def test_the_docs_hold_commands_to_check():
    files = dict(documented())
    assert {"README.md", "docs/cli.md", "docs/distributed.md"} <= set(files)
    assert sum(len(c) for c in files.values()) >= 10


@pytest.mark.parametrize("relative, commands", documented(), ids=[f for f, _ in documented()])
def test_documented_commands_run(relative, commands, tiny_dataset, tmp_path, monkeypatch, capsys):
    from semiseg.datasets import load_dataset

    monkeypatch.chdir(sandbox(tmp_path, tiny_dataset, load_dataset(tiny_dataset).test[0].image))
    for command in commands:
        argv = to_argv(command)
        if any(marker in command for marker in PARSE_ONLY):
            try:
                build_parser().parse_args(argv)
            except SystemExit as exc:
                pytest.fail(f"{relative}: `{command}` does not parse ({capsys.readouterr().err.strip()}) [{exc}]")
            continue
        code = main(tiny(argv))
        err = capsys.readouterr().err
        assert code == 0, f"{relative}: `{command}` exited {code}:\n{err}"
