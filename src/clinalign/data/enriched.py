"""The enriched-row format, its one reader and its one checklist loader (enrich, training, generate, scoring).

An enriched row is a JSON object (or a CSV/TSV row) with these fields:

==============================  ==========================================================================
``id``                          the record id (the real image; generated images point back to it as ref_id)
``image``                       path of the real image (relative to the file's folder or the working dir)
``label``                       class name
``prompt`` / ``t_ep``           the enriched prompt (both names are read; ``prompt`` first)
``checklist`` / ``t_c``         the class checklist text (both names are read; ``checklist`` first)
``ref_id``                      generated rows: the id of the real image the prompt came from
``split``                       train / val / test (optional)
==============================  ==========================================================================

Rows live in one ``enriched.jsonl`` (live enrichment) or a part-file set with an index (batch/import).

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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


def _jsonl_rows(file: Path, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    try:
        with open(file, encoding=encoding) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    if not line.endswith("\n"):  # the last line, without its newline: an interrupted write
                        raise DataError(
                            f"{file}, line {number}: the last line is cut off (no newline, not valid JSON); the file "
                            "was probably written by a run that was interrupted. Complete or remove that line."
                        ) from None
                    raise DataError(
                        f"{file}, line {number}: not valid JSON ({exc.msg}). Fix or remove that line."
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{file}, line {number}: expected a JSON object, got {type(row).__name__}.")
                yield number, row
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{file}, line {number + 1}: not valid {encoding} text ({exc.reason}). Save the file as UTF-8."
        ) from None


def iter_enriched_rows(path: str | os.PathLike[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Stream ``(file, line number, row)`` over every enriched row at ``path`` (see :func:`enriched_files`).

    JSONL files are streamed (any malformed line, the last included, is an error naming it); a CSV/TSV
    manifest is read through :func:`clinalign.data.manifest.manifest_rows`.
    """
    for file in enriched_files(path):
        if file.suffix.lower() in (".csv", ".tsv"):
            from clinalign.data.manifest import manifest_rows

            for number, row in manifest_rows(file):
                yield file, number, row
            continue
        for number, row in _jsonl_rows(file):
            yield file, number, row


# ---------------------------------------------------------------------- fields

PROMPT_FIELDS = ("prompt", "t_ep")
CHECKLIST_FIELDS = ("checklist", "t_c")


def _text_field(row: Mapping[str, Any], names: tuple[str, ...], where: str) -> str | None:
    for name in names:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise DataError(
                f"{where}: field '{name}' must be text, got {type(value).__name__} ({str(value)[:60]!r}). "
                f"Write it as a JSON string."
            )
        return value
    return None


def prompt_of(row: Mapping[str, Any], where: str) -> str | None:
    """The row's enriched prompt t_ep (``prompt``, else ``t_ep``), or None when it has none."""
    return _text_field(row, PROMPT_FIELDS, where)


def checklist_of(row: Mapping[str, Any], where: str) -> str | None:
    """The row's checklist t_c (``checklist``, else ``t_c``), or None when it has none."""
    return _text_field(row, CHECKLIST_FIELDS, where)


def require_prompt(row: Mapping[str, Any], where: str, purpose: str) -> str:
    """:func:`prompt_of`, or a :class:`DataError` naming the place, the field and the fix."""
    prompt = prompt_of(row, where)
    if prompt is None:
        raise DataError(
            f"{where}: missing 'prompt' (or 't_ep'): {purpose}. Use the rows `clinalign enrich` writes "
            "(OUT/enriched.jsonl or the OUT/enriched part-file folder), or add a 'prompt' field."
        )
    return prompt


@dataclass(frozen=True)
class EnrichedRow:
    """One enriched row, its fields resolved (see the module docstring); ``data`` is the row as read."""

    file: Path
    line: int
    prompt: str | None
    checklist: str | None
    label: str | None
    id: str | None
    ref_id: str | None
    image: str | None
    split: str | None
    data: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}, line {self.line}"


def _optional_str(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    return None if value is None or (isinstance(value, str) and not value.strip()) else str(value)


def read_enriched(path: str | os.PathLike[str], *, require: str | None = None) -> Iterator[EnrichedRow]:
    """Stream the enriched rows at ``path`` (a JSONL/CSV file, an ``index.json``, a part-file folder or an enrich
    output folder) as :class:`EnrichedRow`; with ``require`` set, a row without a prompt is an error saying what
    the prompt is needed for."""
    for file, number, row in iter_enriched_rows(path):
        where = f"{file}, line {number}"
        prompt = prompt_of(row, where) if require is None else require_prompt(row, where, require)
        yield EnrichedRow(
            file=file,
            line=number,
            prompt=prompt,
            checklist=checklist_of(row, where),
            label=_optional_str(row, "label"),
            id=_optional_str(row, "id"),
            ref_id=_optional_str(row, "ref_id"),
            image=_optional_str(row, "image") or _optional_str(row, "file"),
            split=_optional_str(row, "split"),
            data=row,
        )


# ---------------------------------------------------------------------- checklists


def _read_mapping(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Any, str]:
    if isinstance(source, Mapping):
        return source, "checklists"
    path = Path(source)
    if not path.is_file():
        raise DataError(
            f"{path}: checklists file not found. Check the path (--checklists, or `checklists` in the config)."
        )
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text ({exc.reason}). Save the file as UTF-8.") from None
    if suffix == ".json":
        try:
            return json.loads(text), str(path)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text), str(path)
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({exc}).") from None
    raise DataError(f"{path}: unsupported checklists file '{suffix}'. Use .json or .yaml (class name -> text).")


@dataclass(frozen=True)
class Checklist:
    """One class's checklist: the text t_c and its attributes (attribute name -> expected finding)."""

    text: str
    attributes: dict[str, str]


def _attributes_from_text(text: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in text.split(";") if p.strip()):
        name, sep, finding = part.partition(":")
        attributes[name.strip() if sep else f"item {i + 1}"] = finding.strip() if sep else part
    return attributes


def load_checklists(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Checklist]:
    """The one checklist loader: class name -> :class:`Checklist`, from a JSON/YAML file or a mapping.

    Accepted layouts (optionally under a top-level ``checklists:`` key): what ``clinalign checklists`` writes
    (``{class: {"attributes": {...}, "t_c": "..."}}``: ``t_c`` is the text), a preset-style block of attribute
    mappings (``{class: {"Location": "...", ...}}``, joined as ``"Location: ...; Colour: ..."``), lists of
    attribute lines, or plain text per class (its attributes split on ``;`` and ``:``).
    """
    if source is None:
        return {}
    data, where = _read_mapping(source)
    if isinstance(data, Mapping) and isinstance(data.get("checklists"), Mapping):
        data = data["checklists"]
    if not isinstance(data, Mapping) or not data:
        raise DataError(
            f"{where}: expected a mapping of class name -> checklist text, got {type(data).__name__}. "
            'Write `class: checklist text` lines (YAML) or {"class": "text"} (JSON).'
        )
    out: dict[str, Checklist] = {}
    for label, value in data.items():
        if isinstance(value, Mapping):
            attrs = value.get("attributes") if isinstance(value.get("attributes"), Mapping) else None
            if attrs is None:
                attrs = {k: v for k, v in value.items() if k not in ("t_c", "source")}
            attributes = {str(k): str(v) for k, v in attrs.items()}
            given = value.get("t_c")
            text = given if isinstance(given, str) else "; ".join(f"{k}: {v}" for k, v in attributes.items())
        elif isinstance(value, list):
            text = "; ".join(str(v) for v in value)
            attributes = _attributes_from_text(text)
        elif isinstance(value, str):
            text, attributes = value, _attributes_from_text(value)
        elif value is None:
            text, attributes = "", {}
        else:
            raise DataError(
                f"{where}: the checklist for class '{label}' must be text, a list or a mapping, got {value!r}."
            )
        if not text.strip():
            raise DataError(f"{where}: the checklist for class '{label}' is empty. Write its attributes or drop it.")
        out[str(label)] = Checklist(text=text, attributes=attributes or _attributes_from_text(text))
    return out


def checklist_texts(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """Class name -> checklist text t_c (:func:`load_checklists`)."""
    return {label: c.text for label, c in load_checklists(source).items()}


def checklist_attributes(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Class name -> {attribute: expected finding} (:func:`load_checklists`)."""
    return {label: c.attributes for label, c in load_checklists(source).items()}


__all__ = [
    "CHECKLIST_FIELDS",
    "ENRICHED_FILE",
    "INDEX_FILE",
    "PARTS_DIR",
    "PROMPT_FIELDS",
    "Checklist",
    "EnrichedRow",
    "checklist_attributes",
    "checklist_of",
    "checklist_texts",
    "enriched_files",
    "iter_enriched_rows",
    "load_checklists",
    "part_name",
    "prompt_of",
    "read_enriched",
    "require_prompt",
    "write_index",
]
