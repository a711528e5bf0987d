"""Reading tabular input files (CSV/TSV/JSONL manifests, dataset CSVs) with errors that name the line.

Bytes are decoded up front so a file in the wrong encoding fails with its line and byte offset (and
the ``--encoding`` fix) instead of a traceback halfway through; CSV fields longer than the csv
module's default limit (128 KiB, long free-text reports) are accepted up to :data:`MAX_CSV_FIELD`.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from pathlib import Path

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


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The file's text; a byte sequence invalid in ``encoding`` is a :class:`DataError` naming line and offset."""
    # a UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    return decode_text(path, path.read_bytes(), codec)


def read_csv_rows(
    path: Path, *, encoding: str = "utf-8", delimiter: str = ","
) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    """(column names, [(line number, row dict)]) of a CSV file; line numbers count the header as line 1."""
    text = read_text(path, encoding)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, dict[str, str | None]]] = []
    try:
        with _field_limit(MAX_CSV_FIELD):
            for row in reader:
                # reader.line_num is the line the row ended on (a quoted field may span lines)
                rows.append((reader.line_num, dict(row)))
    except csv.Error as exc:
        raise DataError(
            f"{path}, line {reader.line_num}: not a valid CSV row ({exc}). Check quoting on that line; fields "
            f"are limited to {MAX_CSV_FIELD // (1024 * 1024)} MiB."
        ) from None
    return [c for c in (reader.fieldnames or [])], rows
