"""Getting a JSON object out of a model reply, and telling a refusal from a broken reply."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_REFUSAL_RE = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry|i can(?:'|no)t|i can not|i'?m unable|i am unable|i won'?t|"
    r"as an ai|i'?m not able|i am not able|unfortunately,? i)",
    re.IGNORECASE,
)


class JSONExtractError(ValueError):
    """No JSON object could be read from the reply; the message says why (shown in the repair turn)."""


def _balanced_object(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text`` (braces inside strings ignored), or None."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


def extract_json(text: str) -> dict[str, Any]:
    """Parse the JSON object of a reply: bare JSON, JSON in a code fence, or JSON inside prose."""
    stripped = text.strip()
    if not stripped:
        raise JSONExtractError("the reply was empty")

    def candidates():  # cheapest first: most replies are bare JSON
        yield stripped
        yield from (m.group(1).strip() for m in _FENCE_RE.finditer(stripped))
        balanced = _balanced_object(stripped)
        if balanced is not None:
            yield balanced

    error: json.JSONDecodeError | None = None
    for candidate in candidates():
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as exc:
            error = error or exc
            continue
        if isinstance(value, dict):
            return value
        raise JSONExtractError(f"the reply is JSON but a {type(value).__name__}, not an object")
    if "{" not in stripped:
        raise JSONExtractError("the reply contains no JSON object")
    where = f" ({error.msg} at line {error.lineno}, column {error.colno})" if error is not None else ""
    raise JSONExtractError(f"the reply is not valid JSON{where}")


def looks_like_refusal(text: str) -> bool:
    """True when a non-JSON reply opens like a refusal ("I'm sorry, I can't ...")."""
    return bool(_REFUSAL_RE.match(text.strip()[:200]))
