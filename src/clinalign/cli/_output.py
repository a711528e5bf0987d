"""Claiming a command's output folder from the CLI: the lock lives as long as the command's click context."""

from __future__ import annotations

import atexit
import importlib
import os
from collections.abc import Collection
from typing import Any

from clinalign.utils.outdir import OutputLock, claim_output_dir


def _current_context() -> Any | None:
    """The running command's click context (typer >= 0.20 ships its own copy of click, so look in both)."""
    for module in ("typer._click.globals", "click.globals"):
        try:
            getter = importlib.import_module(module).get_current_context
        except (ImportError, AttributeError):
            continue
        context = getter(silent=True)
        if context is not None:
            return context
    return None


def claim(
    out: str | os.PathLike[str],
    *,
    command: str,
    overwrite: bool = False,
    resume: bool = False,
    option: str = "--out",
    resume_hint: str | None = None,
    inputs: Collection[str] = (),
) -> OutputLock:
    """:func:`~clinalign.utils.outdir.claim_output_dir`, released when the running command ends (even on error).

    The kernel drops the lock when the process dies, so a signal that kills the run releases it too.
    """
    lock = claim_output_dir(
        out,
        command=command,
        overwrite=overwrite,
        resume=resume,
        option=option,
        resume_hint=resume_hint,
        inputs=inputs,
    )
    context = _current_context()
    if context is not None:
        context.call_on_close(lock.release)
    else:  # called outside a command: hold it for the process (the kernel drops it at exit anyway)
        atexit.register(lock.release)
    return lock


def pixel_limit(max_image_pixels: int) -> None:
    """Apply ``--max-image-pixels`` (0: no limit) for the running command; the previous limit returns after it."""
    from clinalign.data.images import image_pixel_limit
    from clinalign.errors import ConfigError

    if max_image_pixels < 0:
        raise ConfigError(f"--max-image-pixels must be >= 0 (0: no limit), got {max_image_pixels}.")
    context = _current_context()
    limit = max_image_pixels or None
    if context is not None:
        context.with_resource(image_pixel_limit(limit))
    else:
        from clinalign.data.images import set_max_image_pixels

        set_max_image_pixels(limit)
