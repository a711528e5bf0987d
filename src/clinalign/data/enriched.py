"""Enriched-row files: one ``enriched.jsonl`` (live enrichment) or a part-file set with an index (batch/import).

Layout of a part-file set (``clinalign enrich --mode batch|export`` and ``clinalign enrich import``)::

    OUT/enriched/index.json          {"format": "clinalign-enriched-parts", "version": 1,
                                      "parts": [{"file": "part-00000.jsonl", "rows": 49731}, ...], "rows": N}
    OUT/enriched/part-00000.jsonl    enriched rows, one per line (same fields as enriched.jsonl)

:func:`enriched_files` resolves any of ``OUT``, ``OUT/enriched``, ``OUT/enriched/index.json`` or a single JSONL
file to the files to read, and :func:`iter_enriched_rows` streams their rows as one set (one file open at a time,
nothing held in memory), naming the file and line of a malformed row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clinalign.errors import DataError
from clinalign.utils.io import write_json

ENRICHED_FILE = "enriched.jsonl"
PARTS_DIR = "enriched"
INDEX_FILE = "index.json"
INDEX_FORMAT = "clinalign-enriched-parts"


def part_name(number: int) -> str:
    """The file name of part ``number``."""
    return f"part-{number:05d}.jsonl"


def write_index(parts_dir: str | os.PathLike[str], parts: list[tuple[str, int]]) -> Path:
    """Write ``index.json`` listing ``parts`` (file name, row count) in reading order; atomic."""
    parts_dir = Path(parts_dir)
    path = parts_dir / INDEX_FILE
    write_json(
        path,
        {
            "format": INDEX_FORMAT,
            "version": 1,
            "parts": [{"file": name, "rows": rows} for name, rows in parts],
            "rows": sum(rows for _, rows in parts),
        },
    )
    return path


def _index_files(index: Path) -> list[Path]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        parts = data["parts"]
        files = [index.parent / str(part["file"]) for part in parts]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{index}: not a readable part-file index ({exc}). It is rewritten by rerunning the enrich command "
            "that made the folder."
        ) from None
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise DataError(f"{index}: lists part files that do not exist: {missing[:3]}. Rerun the enrich command.")
    return files


def enriched_files(path: str | os.PathLike[str]) -> list[Path]:
    """The JSONL files holding the enriched rows at ``path``, in reading order.

    ``path`` is a JSONL file, an ``index.json``, a part-file folder, or an enrich output folder (its
    ``enriched/index.json`` set, else its ``enriched.jsonl``).
    """
    path = Path(path)
    if path.is_file():
        return _index_files(path) if path.name == INDEX_FILE else [path]
    if path.is_dir():
        for index in (path / INDEX_FILE, path / PARTS_DIR / INDEX_FILE):
            if index.is_file():
                return _index_files(index)
        if (path / ENRICHED_FILE).is_file():
            return [path / ENRICHED_FILE]
        raise DataError(
            f"{path}: no enriched rows here (neither {ENRICHED_FILE} nor {PARTS_DIR}/{INDEX_FILE}). Pass the "
            "output folder of `clinalign enrich` or a JSONL file."
        )
    raise DataError(f"{path}: file not found. Check the path.")


def iter_enriched_rows(path: str | os.PathLike[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Stream ``(file, line number, row)`` over every enriched row at ``path`` (see :func:`enriched_files`)."""
    for file in enriched_files(path):
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{file}, line {number}: not valid JSON ({exc.msg}). Fix or remove that line."
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{file}, line {number}: expected a JSON object, got {type(row).__name__}.")
                yield file, number, row


__all__ = [
    "ENRICHED_FILE",
    "INDEX_FILE",
    "PARTS_DIR",
    "enriched_files",
    "iter_enriched_rows",
    "part_name",
    "write_index",
]
