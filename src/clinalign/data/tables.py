"""Reading tabular input files (CSV/TSV/JSONL manifests, dataset CSVs) with errors that name the line.

Rows are read one at a time (:func:`iter_csv_rows`; memory does not grow with the file); a file in the
wrong encoding fails with its line and byte offset (and the ``--encoding`` fix) instead of a traceback,
when the reading reaches the bad bytes; CSV fields longer than the csv
module's default limit (128 KiB, long free-text reports) are accepted up to :data:`MAX_CSV_FIELD`.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clinalign.errors import DataError
from clinalign.utils.jsonl import decode_text

# Longest CSV field accepted (characters); the csv module's default is 131072.
MAX_CSV_FIELD = 64 * 1024 * 1024


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    previous = csv.field_size_limit()
    csv.field_size_limit(max(limit, previous))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _codec(encoding: str) -> str:
    # a UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The file's text; a byte sequence invalid in ``encoding`` is a :class:`DataError` naming line and offset."""
    return decode_text(path, path.read_bytes(), _codec(encoding))


def _stream(path: Path, encoding: str, delimiter: str) -> Iterator[Any]:
    """The header (a list of column names) first, then ``(line number, row dict)`` pairs, one at a time."""
    try:
        with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding=_codec(encoding), newline="") as text:
            reader = csv.DictReader(text, delimiter=delimiter)
            try:
                with _field_limit(MAX_CSV_FIELD):
                    yield list(reader.fieldnames or [])
                    for row in reader:
                        # reader.line_num is the line the row ended on (a quoted field may span lines)
                        yield reader.line_num, dict(row)
            except csv.Error as exc:
                raise DataError(
                    f"{path}, line {reader.line_num}: not a valid CSV row ({exc}). Check quoting on that line; "
                    f"fields are limited to {MAX_CSV_FIELD // (1024 * 1024)} MiB."
                ) from None
    except (UnicodeDecodeError, LookupError):
        # error path only: decoding the whole file names the line and byte offset of the bad sequence
        read_text(path, encoding)
        raise DataError(f"{path}: not valid {encoding} text. Save the file as UTF-8 or pass --encoding.") from None


def csv_columns(path: Path, *, encoding: str = "utf-8", delimiter: str = ",") -> list[str]:
    """The column names of a CSV file (its header), reading nothing past the first row."""
    stream = _stream(path, encoding, delimiter)
    try:
        return next(stream)
    finally:
        stream.close()


def iter_csv_rows(
    path: Path, *, encoding: str = "utf-8", delimiter: str = ","
) -> Iterator[tuple[int, dict[str, str | None]]]:
    """``(line number, row dict)`` of a CSV file, one row at a time: memory does not grow with the file.

    The rows, line numbers and errors are those of :func:`read_csv_rows`; an error is raised when the
    iteration reaches the bad row (a malformed row at the end surfaces only after the rows before it).
    """
    stream = _stream(path, encoding, delimiter)
    next(stream)
    yield from stream


def read_csv_rows(
    path: Path, *, encoding: str = "utf-8", delimiter: str = ","
) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    """(column names, [(line number, row dict)]) of a CSV file; line numbers count the header as line 1."""
    stream = _stream(path, encoding, delimiter)
    columns = next(stream)
    return columns, list(stream)
