"""What every reliability test asserts about a refusal: exit 2, the file or setting named, the problem said,
no traceback — and a small synthetic dataset to break, copied so the shared fixtures stay untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from semiseg.cli import main


def refused(capsys, argv, *names) -> str:
    """Run `semiseg ARGV` in-process; assert it exits 2 with a one-line-per-problem error naming each of
    `names` and no traceback (an unexpected exception would propagate and fail the test). Returns stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}, expected 2\nstdout: {out}\nstderr: {err}"
    assert "error:" in err and "Traceback" not in err, err
    for name in names:
        assert str(name) in err, f"{name!r} not named in: {err}"
    return err


def accepted(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"exit {code}\nstdout: {out}\nstderr: {err}"
    return out + err


def copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def dataset_json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text(encoding="utf-8"))


def write_dataset_json(root: Path, spec: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: to assert that nothing was touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
