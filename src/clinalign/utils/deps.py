"""Optional dependencies: check for them at the point of use, with the install command in the error."""

from __future__ import annotations

import importlib.util

from clinalign.errors import MissingDependencyError


def require(module: str, *, feature: str, extra: str | None = None, package: str | None = None) -> None:
    """Raise :class:`MissingDependencyError` unless ``module`` can be imported.

    Args:
        module: the import name (``"sklearn"``).
        feature: what needs it, for the message (``"Rebuilding the toy assets"``).
        extra: the clinalign extra that installs it (``"toy-build"`` -> ``pip install 'clinalign[toy-build]'``).
        package: the distribution name when it differs from ``module`` (``"scikit-learn"``).
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError(package or module, feature, extra)
