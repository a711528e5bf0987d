"""JSONL reading with an explicit policy for a torn last line.

A crash mid-append leaves a last line without its newline (and usually not valid JSON). What to do
with it depends on who wrote the file:

- an *input* file (a manifest, a prompts file, a real test set) is read with :func:`read_jsonl_strict`:
  a torn or malformed line is an error naming the file and line, never a silently lost row;
- a file clinalign appends to itself (enriched.jsonl, a generation manifest) is read with
  :func:`repair_jsonl` on resume: a torn last line is cut off and the file is rewritten atomically
  (the caller warns with the number of rows dropped), so the next append does not glue onto the torn line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clinalign.errors import DataError
from clinalign.utils.io import atomic_write_text, decode_text


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg}). Fix or remove that line.") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
    return row


def read_jsonl_numbered(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of an input JSONL file; any malformed line, the last one included, is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Check the path.")
    text = decode_text(path, path.read_bytes(), encoding)
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, _parse(path, number, line)))
        except DataError as exc:
            if number == len(lines) and not text.endswith("\n"):
                raise DataError(
                    f"{path}, line {number}: the last line is cut off (no newline, not valid JSON); the file was "
                    "probably written by a run that was interrupted. Complete or remove that line."
                ) from exc
            raise
    return rows


def iter_jsonl_numbered(
    path: str | os.PathLike[str], *, encoding: str = "utf-8"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Like :func:`read_jsonl_numbered`, one line at a time: memory does not grow with the file.

    Lines are split on ``\\n`` only (a ``\\r`` before it is dropped); a malformed line is an error
    naming it when the iteration reaches it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Check the path.")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            torn = not raw.endswith(b"\n")
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}, line {number}: not valid {encoding} text ({exc.reason}). Save the file as UTF-8, or "
                    "pass its encoding (e.g. --encoding latin-1)."
                ) from None
            except LookupError:
                raise DataError(
                    f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1."
                ) from None
            if not line.strip():
                continue
            try:
                yield number, _parse(path, number, line)
            except DataError as exc:
                if torn:
                    raise DataError(
                        f"{path}, line {number}: the last line is cut off (no newline, not valid JSON); the file was "
                        "probably written by a run that was interrupted. Complete or remove that line."
                    ) from exc
                raise


def read_jsonl_strict(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """Rows of an input JSONL file; a malformed line anywhere, the last one included, is a :class:`DataError`."""
    return [row for _, row in read_jsonl_numbered(path, encoding=encoding)]


def repair_jsonl(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """Rows of a JSONL file clinalign appends to, after cutting off a torn last line; returns (rows, dropped).

    A last line without its newline is what a crash mid-append leaves: it is dropped when it is not valid
    JSON (kept, with its newline restored, when it is), and the file is rewritten atomically; the caller
    warns with the count. A malformed line elsewhere is a :class:`DataError` (that is not a torn append,
    and the rows must not be guessed).
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    raw = path.read_bytes()
    head = raw[: raw.rfind(b"\n") + 1]
    tail = raw[len(head) :]
    rows = [_parse(path, number, line) for number, line in _numbered(decode_text(path, head, "utf-8")) if line.strip()]
    if not tail:
        return rows, 0
    dropped = 0
    if tail.strip():
        try:
            rows.append(_parse(path, head.count(b"\n") + 1, tail.decode("utf-8")))
        except (DataError, UnicodeDecodeError):
            dropped = 1
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    return rows, dropped


def _numbered(text: str) -> list[tuple[int, str]]:
    return list(enumerate(text.splitlines(), start=1))


__all__ = ["decode_text", "iter_jsonl_numbered", "read_jsonl_numbered", "read_jsonl_strict", "repair_jsonl"]
