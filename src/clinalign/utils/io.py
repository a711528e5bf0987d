"""Atomic file output and JSON/JSONL helpers.

Everything clinalign writes goes through these, so an interrupted run never leaves a half-written
file behind: content goes to a temporary file in the same directory and is renamed into place.
The renamed file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` minus
the user's umask), not the owner-only ``0o600`` of the temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from clinalign.errors import DataError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without leaving it changed.

    POSIX only offers read-by-setting, so the umask is set and restored under a lock (threads of
    this process that write through these helpers never see the temporary value); Linux's
    ``/proc/self/status`` is read first when it is available, which changes nothing.
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a newly created regular file gets: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            # mkstemp creates 0o600; give the file the mode open() would have, before it becomes visible
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), default_file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", encoding=None) as handle:
        handle.write(data)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as sorted, indented JSON atomically (sorted keys keep diffs readable)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def decode_text(path: Path, raw: bytes, encoding: str) -> str:
    """Decode ``raw`` (the bytes of ``path``); an invalid byte is a :class:`DataError` naming line and offset."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}, line {line} (byte offset {exc.start}): not valid {encoding} text ({exc.reason}). Save the file "
            "as UTF-8, or pass its encoding (e.g. --encoding latin-1)."
        ) from None
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1."
        ) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Check the path.")
    try:
        return json.loads(decode_text(path, path.read_bytes(), "utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it, so a crash loses at most the line being written.

    The line is written with a single ``write`` call on a file opened in append mode, so
    concurrent appenders in one process never interleave within a line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike[str], *, skip_truncated_tail: bool = True) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts.

    A malformed *last* line (what a crash mid-write leaves) is skipped when ``skip_truncated_tail``;
    a malformed line anywhere else is an error naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Check the path.")
    lines = decode_text(path, path.read_bytes(), "utf-8").splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if skip_truncated_tail and number == len(lines):
                break
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg}). Fix or remove that line.") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
        rows.append(row)
    return rows
