"""Errors users can act on.

Every exception raised because of user input (a bad file, field, flag or value) derives from
:class:`ClinAlignError`. The CLI turns these into a one-paragraph message on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ClinAlignError(Exception):
    """Base class for errors caused by user input; the message names the input and the fix."""

    exit_code: int = 2


class ConfigError(ClinAlignError, ValueError):
    """An option or config value is invalid or contradicts another one."""


class DataError(ClinAlignError, ValueError):
    """A data file, row or field is missing or malformed."""


class MissingDependencyError(ClinAlignError, ImportError):
    """An optional dependency is needed for the requested feature."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        hint = f"pip install 'clinalign[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed. Install it with: {hint}")
        self.package = package


class ModelLoadError(ClinAlignError, OSError):
    """A model could not be found or loaded from the given id or path."""
