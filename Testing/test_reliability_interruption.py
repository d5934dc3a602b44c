"""Reliability, interruption: what is kept and what is cleaned. A process killed with SIGKILL mid-write leaves
the previous file intact; its temporary (named with its process id) is removed by the next write of the
same target; a live writer's temporary is never touched; what the engine writes follows the umask.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from semiseg.atomic import atomic_dir, atomic_path
from semiseg.io import write_volume
from semiseg.volume import Volume

KILLED_WRITERS = {
    # A checkpoint (train's last.pt), a model package folder, an image (predict's output).
    "checkpoint": ("last.pt", """
        with atomic_path(target, ".pt") as tmp:
            tmp.write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)"""),
    "package": ("m.semiseg", """
        with atomic_dir(target) as tmp:
            (tmp / "model.json").write_text("{}")
            os.kill(os.getpid(), signal.SIGKILL)"""),
    "image": ("seg.nii.gz", """
        import semiseg.io as io
        io.sitk.WriteImage = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        io.write_volume(Volume(np.zeros((4, 4, 4), np.uint8)), target, overwrite=True)"""),
}


def kill_mid_write(folder, name, body):
    script = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        import numpy as np
        from semiseg.atomic import atomic_dir, atomic_path
        from semiseg.volume import Volume
        target = Path(sys.argv[1])
    """) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script, str(folder / name)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()


def leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.parametrize("kind", KILLED_WRITERS)
def test_kill_9_mid_write_keeps_the_old_file_and_the_next_write_cleans_up(tmp_path, kind):
    name, body = KILLED_WRITERS[kind]
    target = tmp_path / name
    kill_mid_write(tmp_path, name, body)
    assert leftovers(tmp_path, name), "the killed writer should have left its temporary"
    assert not target.exists()  # nothing half-written under the real name
    # The next write of the same target (a resumed run, a rerun) removes the dead process's leftovers.
    if kind == "checkpoint":
        with atomic_path(target, ".pt") as tmp:
            tmp.write_bytes(b"complete")
    elif kind == "package":
        with atomic_dir(target) as tmp:
            (tmp / "model.json").write_text("{}", encoding="utf-8")
    else:
        write_volume(Volume(np.zeros((4, 4, 4), np.uint8)), target)
    assert leftovers(tmp_path, name) == []
    assert target.exists()


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    target = tmp_path / "last.pt"
    # A concurrent writer (this process's parent stands in: alive) has a temporary beside the target.
    alive = tmp_path / f".last.pt.{os.getppid()}.abcd1234.pt"
    alive.write_bytes(b"in progress")
    with atomic_path(target, ".pt") as tmp:
        tmp.write_bytes(b"done")
    assert alive.exists()


def test_an_interrupted_swap_leaves_no_old_copy_once_the_target_is_written_again(tmp_path):
    target = tmp_path / "m.semiseg"
    target.mkdir()
    old = tmp_path / ".m.semiseg.old"
    old.mkdir()  # killed between the two renames of an overwrite, then finished by hand
    with atomic_dir(target) as tmp:
        (tmp / "model.json").write_text("{}", encoding="utf-8")
    assert not old.exists()


def test_replacing_a_file_with_a_folder_leaves_no_old_file(tmp_path):
    target = tmp_path / "FILE"
    target.write_text("x", encoding="utf-8")
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("y", encoding="utf-8")
    assert target.is_dir() and not (tmp_path / ".FILE.old").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_model_packages_and_checkpoints_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "m.semiseg") as tmp:
            (tmp / "model.json").write_text("{}", encoding="utf-8")
        with atomic_path(tmp_path / "last.pt", ".pt") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.semiseg").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "m.semiseg" / "model.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o666 & ~umask


def test_a_trained_package_is_readable_by_the_group_under_umask_022(tiny_model):
    # The shared fixture was written under the test run's umask (022 by default on Linux).
    mask = os.umask(0)
    os.umask(mask)
    if mask & 0o044:
        pytest.skip(f"this run's umask {mask:03o} hides files from the group anyway")
    assert stat.S_IMODE(tiny_model.stat().st_mode) & 0o055 == 0o055
    assert stat.S_IMODE((tiny_model / "model.json").stat().st_mode) & 0o044 == 0o044


# ---- --resume continues the same run, or refuses ---------------------------------------------------------
RUN = ["--method", "supervised", "--iterations", "2", "--patch", "32,32,32", "--option", "n_filters=4",
       "--device", "cpu", "--quiet", "--val-every", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset):
    """A 2-iteration run whose checkpoint (WORK/last.pt) later resumes are checked against."""
    from semiseg.cli import main
    folder = tmp_path_factory.mktemp("resume")
    assert main([str(a) for a in ["train", "--data", tiny_dataset, "--out", folder / "m.semiseg", "--workdir",
                                  folder / "work", *RUN]]) == 0
    return folder


@pytest.mark.parametrize("change", [["--iterations", "4"], ["--patch", "16,32,32"], ["--spacing", "2,2,2"],
                                    ["--option", "n_filters=8"]])
def test_resume_refuses_changed_settings_naming_them(capsys, finished_run, tiny_dataset, tmp_path, change):
    from helpers_reliability import refused
    argv = ["train", "--data", tiny_dataset, "--out", tmp_path / "m.semiseg", "--workdir", finished_run / "work",
            "--resume", *RUN, *change]
    err = refused(capsys, argv, finished_run / "work" / "last.pt", "other settings")
    assert {"--iterations": "iterations", "--patch": "patch", "--spacing": "spacing",
            "--option": "method_options"}[change[0]] in err


def test_resume_refuses_a_garbage_checkpoint(capsys, tiny_dataset, tmp_path):
    from helpers_reliability import refused
    work = tmp_path / "work"
    work.mkdir()
    (work / "last.pt").write_bytes(b"\x80\x04 this is not a checkpoint")
    refused(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "m.semiseg", "--workdir", work, "--resume",
                     *RUN], work / "last.pt", "not a readable SemiSeg checkpoint")
