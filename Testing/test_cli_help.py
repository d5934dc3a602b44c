"""Help texts that state defaults, the documented exit codes, and Ctrl-C reported as an interruption."""

from __future__ import annotations

import pytest

from semiseg import cli
from semiseg.errors import Interrupted


def help_of(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("argv, option, default", [
    (["train"], "--seed", "default 0"),
    (["train"], "--fg-ratio", "default 0.33"),
    (["train"], "--augment", "standard (default)"),
    (["predict"], "--blend", "gaussian (default"),
    (["demo"], "--device", "auto (default"),
    (["synthetic"], "--labeled", "default 4"),
    (["synthetic"], "--unlabeled", "default 8"),
    (["synthetic"], "--test", "default 4"),
    (["synthetic"], "--seed", "default 0"),
    (["bench"], "--out", "default: the current folder, so ./NAME/"),
])
def test_options_say_their_default(capsys, argv, option, default):
    text = help_of(capsys, *argv)
    after = text[text.index(f"{option} ", text.index("options:")):]
    assert default in after[:400], after[:400]


def test_exit_codes_are_documented(capsys):
    assert "130 interrupted" in help_of(capsys)


def test_ctrl_c_is_reported_as_interrupted(capsys, monkeypatch):
    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_methods", stopped)
    assert cli.main(["methods"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "error" not in err


def test_a_cancelled_training_is_interrupted_not_an_error(capsys, monkeypatch):
    def cancelled(args):
        raise Interrupted("cancelled at iteration 7; the last checkpoint is in w (continue with --resume)")

    monkeypatch.setattr(cli, "cmd_methods", cancelled)
    assert cli.main(["methods"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: cancelled at iteration 7" in err and "error" not in err
