"""The generic manifest: a CSV or JSONL with ``image``, ``label`` and optional ``split``, ``patient_id``, ``id``."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clinalign.data.records import Record
from clinalign.data.tables import iter_csv_rows, read_csv_rows
from clinalign.errors import DataError
from clinalign.utils.jsonl import iter_jsonl_numbered, read_jsonl_numbered

_KNOWN = {"id", "image", "label", "split", "patient_id"}


def manifest_rows(path: Path, *, encoding: str = "utf-8") -> list[tuple[int, dict[str, Any]]]:
    """(line number, row dict) for every row of a CSV/TSV/JSONL table; line numbers are the file's own.

    A torn or malformed line, a byte invalid in ``encoding`` or an over-long CSV field is a
    :class:`DataError` naming the line: an input row is never dropped silently.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl_numbered(path, encoding=encoding)
    if suffix in (".csv", ".tsv"):
        return read_csv_rows(path, encoding=encoding, delimiter="\t" if suffix == ".tsv" else ",")[1]
    raise DataError(f"{path}: unsupported manifest type '{suffix}'. Use a .csv, .tsv or .jsonl file.")


def _ascii_compatible(encoding: str) -> bool:
    """Whether ``\\n`` is the byte 0x0A in ``encoding`` (so a JSONL file can be split into lines as bytes)."""
    try:
        return "\n".encode(encoding) == b"\n" and "{".encode(encoding) == b"{"
    except LookupError:
        return True  # the line reader names the unknown encoding


def iter_manifest_rows(path: Path, *, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`manifest_rows` one row at a time (memory does not grow with the file); errors when reached."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        if _ascii_compatible(encoding):
            try:
                yield from iter_jsonl_numbered(path, encoding=encoding)
            except DataError:
                # error path only: the whole-file reader's message also names the byte offset of a bad byte
                read_jsonl_numbered(path, encoding=encoding)
                raise
        else:  # UTF-16/32: lines cannot be split as bytes
            yield from read_jsonl_numbered(path, encoding=encoding)
    elif suffix in (".csv", ".tsv"):
        yield from iter_csv_rows(path, encoding=encoding, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise DataError(f"{path}: unsupported manifest type '{suffix}'. Use a .csv, .tsv or .jsonl file.")


def read_manifest(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    check_images: bool = True,
    encoding: str = "utf-8",
) -> list[Record]:
    """Read a generic manifest into :class:`Record` objects.

    Relative image paths resolve against ``image_root`` (default: the manifest's folder). Rows are
    filtered to ``split`` when given. With ``check_images``, a missing image file is an error naming
    the row. ``encoding`` is the file's text encoding (UTF-8 by default, a byte-order mark allowed).
    """
    return list(iter_manifest(path, image_root=image_root, split=split, check_images=check_images, encoding=encoding))


def iter_manifest(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    check_images: bool = True,
    encoding: str = "utf-8",
    duplicates_at_end: bool = False,
) -> Iterator[Record]:
    """:func:`read_manifest` one record at a time, reading the file as it goes.

    The same records and errors, each raised when the iteration reaches its row. To name the first line
    of a duplicate id, the ids seen so far are kept (not the records); with ``duplicates_at_end`` only an
    8-byte hash per row is kept and a duplicate id is reported (with the same message) once the last row
    is read, after the records before it were yielded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found. Check the path.")
    root = Path(image_root) if image_root is not None else path.parent
    seen: dict[str, int] = {}
    hashes = array("q")
    yielded = False
    for line, row in iter_manifest_rows(path, encoding=encoding):
        for required in ("image", "label"):
            value = row.get(required)
            if value is None or str(value).strip() == "":
                raise DataError(
                    f"{path}, row at line {line}: missing '{required}'. A manifest needs 'image' and 'label' columns."
                )
        image = Path(str(row["image"]))
        if not image.is_absolute():
            image = root / image
        if check_images and not image.is_file():
            raise DataError(f"{path}, row at line {line}: image '{row['image']}' not found (looked for {image}).")
        record_id = str(row.get("id") or row["image"])
        if duplicates_at_end:
            hashes.append(hash(record_id))
        else:
            if record_id in seen:
                raise DataError(_duplicate(path, line, record_id, seen[record_id]))
            seen[record_id] = line
        row_split = row.get("split") or None
        if split is not None and row_split != split:
            continue
        yielded = True
        yield (
            Record(
                id=record_id,
                image=image,
                label=str(row["label"]).strip(),
                split=row_split,
                patient_id=(str(row["patient_id"]) if row.get("patient_id") not in (None, "") else None),
                metadata={k: v for k, v in row.items() if k not in _KNOWN},
            )
        )
    if duplicates_at_end:
        _check_hashed_ids(path, hashes, encoding)
    if not yielded:
        where = f" with split '{split}'" if split is not None else ""
        raise DataError(f"{path}: the manifest has no rows{where}.")


def _duplicate(path: Path, line: int, record_id: str, first: int) -> str:
    return f"{path}, row at line {line}: duplicate id '{record_id}' (first at line {first})."


def _check_hashed_ids(path: Path, hashes: array, encoding: str) -> None:
    """Raise the duplicate-id error of :func:`read_manifest` if two rows share an id (``hashes``: one per row)."""
    import numpy as np

    ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
    suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not suspects:
        return
    # equal hashes: read the file again, keeping only the ids with those hashes (a collision is no duplicate)
    seen: dict[str, int] = {}
    for line, row in iter_manifest_rows(path, encoding=encoding):
        record_id = str(row.get("id") or row["image"])
        if hash(record_id) in suspects:
            if record_id in seen:
                raise DataError(_duplicate(path, line, record_id, seen[record_id]))
            seen[record_id] = line
