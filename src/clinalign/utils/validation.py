"""Turning a pydantic ``ValidationError`` into one readable line (the caller adds its prefix, once)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def validation_problems(exc: Any, *, as_flags: bool = False, flags: Mapping[str, str] | None = None) -> str:
    """``field: message; ...`` for every error of a pydantic ``ValidationError``.

    pydantic's own ``Value error, `` / ``Assertion failed, `` prefixes are dropped, and a message that
    already names its field is not prefixed again. With ``as_flags`` fields are shown as CLI flags
    (``--max-tokens``); ``flags`` maps a field to its flag where the two are spelled differently.
    """
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error.get("loc", ())]
        message = str(error.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not loc:
            parts.append(message)
            continue
        name = (flags or {}).get(loc[0]) or "--" + "-".join(loc).replace("_", "-") if as_flags else ".".join(loc)
        parts.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(parts)


__all__ = ["validation_problems"]
