"""In-process CLI runs for tests: exit code, stdout and stderr of ``clinalign.cli.main(args)``."""

from __future__ import annotations

import pytest

from clinalign.cli import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``clinalign <args>`` in this process; a ``SystemExit`` becomes its exit code."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
