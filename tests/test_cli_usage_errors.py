"""Every kind of usage error: one message, the usage hint, exit 2, no traceback. The kinds are checked in
process through ``clinalign.cli.main`` (the console script's function); the real entry point
(``python -m clinalign`` in a fresh process) is checked for a usage error of each family below."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run_in_process(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``main(args)`` with the same environment as :func:`_run`: (exit code, stdout, stderr)."""
    from clinalign.cli import main

    monkeypatch.delenv("CLINALIGN_TRACEBACK", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CLINALIGN_TRACEBACK"}
    env["COLUMNS"] = "200"  # keep help lines unwrapped so substrings match
    return subprocess.run(
        [sys.executable, "-m", "clinalign", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message", "usage"),
    [
        (["nosuchcommand"], "Error: No such command 'nosuchcommand'.", "Usage: clinalign [OPTIONS] COMMAND"),
        (["train", "--nosuch"], "Error: No such option: --nosuch", "Usage: clinalign train [OPTIONS]"),
        (["score-cas"], "Error: Missing option '--real'.", "Usage: clinalign score-cas [OPTIONS]"),
        (
            ["probe", "train", "--epochs", "many"],
            "Error: Invalid value for '--epochs'",
            "Usage: clinalign probe train [OPTIONS]",
        ),
        (
            ["generate", "--model", "m", "--prompts", "p.txt", "--out", "o", "--n-per-prompt", "0"],
            "Error: Invalid value for '--n-per-prompt'",
            "Usage: clinalign generate [OPTIONS]",
        ),
        (
            ["export-lora", "lora", "--format", "zip", "--out", "x.safetensors"],
            "Error: Invalid value for '--format'",
            "Usage: clinalign export-lora [OPTIONS]",
        ),
        (["export-lora"], "Error: Missing argument 'LORA_DIR'.", "Usage: clinalign export-lora [OPTIONS]"),
        (["export-lora", "lora"], "Error: Invalid value: nothing to do", "Usage: clinalign export-lora"),
    ],
    ids=[
        "unknown-command",
        "unknown-option",
        "missing-option",
        "bad-type",
        "out-of-range",
        "bad-choice",
        "missing-argument",
        "flag-combination",
    ],
)
def test_usage_error_exits_2_without_traceback(args, message, usage, capsys, monkeypatch):
    code, out, err = _run_in_process(args, capsys, monkeypatch)
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    assert message in err
    assert usage in err
    assert "--help' for help." in err
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1


@pytest.mark.parametrize(
    "args",
    [["nosuchcommand"], ["train", "--nosuch"], ["score-cas"]],
    ids=["unknown-command", "unknown-option", "missing-option"],
)
def test_usage_error_through_the_real_entry_point(args):
    """The same as above in a fresh ``python -m clinalign`` process (the range and choice errors, the
    input error, no arguments and --help are run this way further down)."""
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "Usage: clinalign" in proc.stderr and "--help' for help." in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("Error:")]) == 1


def test_out_of_range_names_the_range():
    proc = _run("generate", "--model", "m", "--prompts", "p.txt", "--out", "o", "--n-per-prompt", "0")
    assert proc.returncode == 2
    assert "greater than or equal to 1" in proc.stderr


def test_bad_choice_lists_the_choices():
    proc = _run("export-lora", "lora", "--format", "zip", "--out", "x.safetensors")
    assert proc.returncode == 2
    assert "'kohya'" in proc.stderr


def test_no_arguments_shows_help_and_exits_2():
    proc = _run()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Usage: clinalign" in proc.stdout + proc.stderr


def test_help_lists_commands_and_shell_completion():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    for text in ("--install-completion", "--show-completion", "export-lora", "quickstart", "score-cas"):
        assert text in proc.stdout


def test_input_errors_still_exit_2_with_one_message(tmp_path):
    """A ClinAlignError (bad input rather than bad usage) keeps its own message and exit code 2."""
    proc = _run("export-lora", str(tmp_path / "missing"), "--format", "kohya", "--out", str(tmp_path / "k.safetensors"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and "LoRA weights not found" in proc.stderr


def test_click_exception_types_cover_the_click_typer_uses():
    """The handler catches the ClickException class that the installed typer's parser actually raises."""
    import typer

    from clinalign.cli import _click_exception_types

    raised = typer.BadParameter("x")  # typer re-exports the click copy its parser uses
    assert isinstance(raised, _click_exception_types())
