"""Every kind of usage error, through the real entry point: one message, the usage hint, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


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
def test_usage_error_exits_2_without_traceback(args, message, usage):
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert message in proc.stderr
    assert usage in proc.stderr
    assert "--help' for help." in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1


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
