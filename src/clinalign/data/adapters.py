"""Adapters for the public datasets as their users have them on disk.

Each adapter reads the dataset's own files (CSV, folder tree) into :class:`Record` objects. Images are
not opened here (they load lazily through :func:`clinalign.data.load_image`; an adapter only checks that
the file exists); a row whose image file is missing is collected in :attr:`DatasetLoad.missing` by path
instead of stopping the run.

Every adapter has two forms: ``iter_<name>(...)`` returns a :class:`DatasetStream` that reads the source
row by row each time it is iterated (memory does not grow with the number of rows), and
``load_<name>(...)`` reads it into a :class:`DatasetLoad` list. :func:`iter_dataset` and
:func:`load_dataset` pick the adapter by name.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinalign.data.manifest import iter_manifest
from clinalign.data.records import Record
from clinalign.data.tables import csv_columns, iter_csv_rows
from clinalign.errors import ConfigError, DataError

CHEXPERT_CLASSES: tuple[str, ...] = ("Cardiomegaly", "Pleural Effusion", "Pneumonia", "No Finding")
BREAKHIS_CLASSES: tuple[str, ...] = (
    "adenosis",
    "fibroadenoma",
    "phyllodes tumor",
    "tubular adenoma",
    "ductal carcinoma",
    "lobular carcinoma",
    "mucinous carcinoma",
    "papillary carcinoma",
)
ORIGA_CLASSES: tuple[str, ...] = ("glaucoma", "normal")
UNCERTAIN_POLICIES: tuple[str, ...] = ("exclude", "positive", "negative")

# BreakHis folder names and file-name codes -> subtype label
_BREAKHIS_CODES = {
    "A": "adenosis",
    "F": "fibroadenoma",
    "PT": "phyllodes tumor",
    "TA": "tubular adenoma",
    "DC": "ductal carcinoma",
    "LC": "lobular carcinoma",
    "MC": "mucinous carcinoma",
    "PC": "papillary carcinoma",
}
_BREAKHIS_FOLDERS = {name.replace(" ", "_"): name for name in BREAKHIS_CLASSES}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


@dataclass
class DatasetLoad:
    """What an adapter read.

    Attributes:
        records: the records whose image file exists.
        missing: ``(path, reason)`` for rows whose image file is missing (reported, not fatal).
        skipped: rows left out by a filter, counted by reason (e.g. ``"lateral view": 120``).
    """

    records: list[Record]
    missing: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return _summary(Counter(r.label for r in self.records), self.missing, len(self.missing), self.skipped)


def _summary(labels: Counter[str], missing: Sequence[tuple[str, str]], n_missing: int, skipped: dict[str, int]) -> str:
    parts = [f"{sum(labels.values())} records (" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + ")"]
    if n_missing:
        parts.append(f"{n_missing} missing image files (first: {missing[0][0]})")
    if skipped:
        parts.append("skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
    return "; ".join(parts)


# Missing image files a DatasetStream keeps by path (the rest are counted): a CSV whose images are mostly
# absent must not make memory grow with it.
MAX_MISSING_KEPT = 1000


class _Tally:
    """What one pass over a source found besides its records: missing image files and skipped rows."""

    def __init__(self, keep_missing: int | None) -> None:
        self.keep_missing = keep_missing
        self.missing: list[tuple[str, str]] = []
        self.n_missing = 0
        self.skipped: Counter[str] = Counter()

    def miss(self, path: str, reason: str) -> None:
        self.n_missing += 1
        if self.keep_missing is None or len(self.missing) < self.keep_missing:
            self.missing.append((path, reason))


RowReader = Callable[[_Tally], Iterator[Record]]


class DatasetStream:
    """A dataset read row by row: every iteration re-reads the source, nothing holds all its records.

    Iterating yields the same records, in the same order, as the list of the matching ``load_*``
    function; a bad row raises its error (naming file, line and field) when the iteration reaches it.
    After a complete iteration, :attr:`labels` counts records per label, :attr:`missing` lists the
    first :data:`MAX_MISSING_KEPT` missing image files (:attr:`n_missing` counts them all) and
    :attr:`skipped` counts rows left out by a filter; :meth:`summary` describes them. A source with no
    usable record raises :class:`~clinalign.errors.DataError` at the end of the iteration.

    Args:
        source: the file or folder read (named in errors).
        rows: called with a fresh tally at the start of each iteration; yields the records.
    """

    def __init__(self, source: str | os.PathLike[str], rows: RowReader) -> None:
        self.source = Path(source)
        self._rows = rows
        self.labels: Counter[str] = Counter()
        self.missing: list[tuple[str, str]] = []
        self.n_missing = 0
        self.skipped: dict[str, int] = {}
        self.complete = False

    @classmethod
    def from_records(
        cls,
        records: Iterable[Record],
        source: str | os.PathLike[str] = "<records>",
        *,
        missing: Sequence[tuple[str, str]] = (),
        skipped: dict[str, int] | None = None,
    ) -> DatasetStream:
        """A stream over records already in memory (e.g. a loader registered without a streaming form)."""
        held = list(records)

        def rows(tally: _Tally) -> Iterator[Record]:
            for path, reason in missing:
                tally.miss(path, reason)
            tally.skipped.update(skipped or {})
            yield from held

        return cls(source, rows)

    def _iterate(self, keep_missing: int | None) -> Iterator[Record]:
        tally = _Tally(keep_missing)
        labels: Counter[str] = Counter()
        for record in self._rows(tally):
            labels[record.label] += 1
            yield record
        self.labels, self.missing, self.n_missing = labels, tally.missing, tally.n_missing
        self.skipped, self.complete = dict(tally.skipped), True
        if not labels:
            detail = f"; skipped {dict(tally.skipped)}" if tally.skipped else ""
            detail += f"; {tally.n_missing} image files missing (first: {tally.missing[0][0]})" if tally.missing else ""
            raise DataError(f"{self.source}: no usable records{detail}. Check --data-root and the filters.")

    def __iter__(self) -> Iterator[Record]:
        return self._iterate(MAX_MISSING_KEPT)

    def count(self) -> int:
        """Iterate once without keeping anything and return the number of records (fills the counters)."""
        for _ in self:
            pass
        return sum(self.labels.values())

    def load(self) -> DatasetLoad:
        """All records in a list (with every missing file), as the ``load_*`` functions return them."""
        records = list(self._iterate(None))
        return DatasetLoad(records=records, missing=self.missing, skipped=self.skipped)

    def summary(self) -> str:
        """``N records (label: n, ...); missing ...; skipped ...`` of the last complete iteration."""
        if not self.complete:
            raise RuntimeError("DatasetStream.summary() needs a complete iteration first (e.g. count()).")
        return _summary(self.labels, self.missing, self.n_missing, self.skipped)


def _check_csv(path: Path, encoding: str) -> list[str]:
    """The stripped column names of a dataset CSV (read now, so a wrong file fails before any row)."""
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found. Check the path (or pass --csv).")
    return [c.strip() for c in csv_columns(path, encoding=encoding)]


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, str]]]:
    for line, row in iter_csv_rows(path, encoding=encoding):
        yield line, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}


def _require_columns(path: Path, columns: Sequence[str], required: Sequence[str], what: str) -> None:
    absent = [c for c in required if c not in columns]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {absent} expected in {what}; found {list(columns)}. "
            f"Pass the dataset's original CSV."
        )


# ----------------------------------------------------------------------------------------------- CheXpert
def _chexpert_value(raw: str, policy: str) -> int | None:
    """Map a CheXpert cell (1, 0, -1, blank) to 1/0, or None for an uncertain row to exclude."""
    if raw == "":
        return 0
    try:
        value = float(raw)
    except ValueError:
        return -2  # flagged as malformed by the caller
    if value == 1:
        return 1
    if value == 0:
        return 0
    if value == -1:
        return {"positive": 1, "negative": 0, "exclude": None}[policy]
    return -2


def _resolve_chexpert_path(data_root: Path, rel: str) -> Path:
    """CheXpert paths start with the release folder (``CheXpert-v1.0-small/train/...``); accept either root."""
    candidate = data_root / rel
    if candidate.exists():
        return candidate
    parts = Path(rel).parts
    if len(parts) > 1:
        stripped = data_root.joinpath(*parts[1:])
        if stripped.exists() or data_root.name == parts[0]:
            return stripped
    return candidate


def iter_chexpert(
    data_root: str | os.PathLike[str],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    uncertain: str = "exclude",
    frontal_only: bool = True,
    classes: Sequence[str] = CHEXPERT_CLASSES,
    encoding: str = "utf-8",
) -> DatasetStream:
    """:func:`load_chexpert` row by row (a :class:`DatasetStream`; the CSV and its columns are checked now)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ConfigError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)}, got {uncertain!r}.")
    root = Path(data_root)
    path = Path(csv_path) if csv_path is not None else root / "train.csv"
    if csv_path is not None and not path.is_absolute() and not path.is_file():
        path = root / path
    columns = _check_csv(path, encoding)
    _require_columns(path, columns, ["Path", *classes] + (["Frontal/Lateral"] if frontal_only else []), "CheXpert")
    classes = tuple(classes)

    def rows(tally: _Tally) -> Iterator[Record]:
        for line, row in _csv_rows(path, encoding):
            if frontal_only and row["Frontal/Lateral"].lower() != "frontal":
                tally.skipped["lateral view"] += 1
                continue
            values = {}
            for name in classes:
                value = _chexpert_value(row[name], uncertain)
                if value == -2:
                    raise DataError(
                        f"{path}, line {line}, column '{name}': expected 1, 0, -1 or blank, got {row[name]!r}."
                    )
                values[name] = value
            if any(v is None for v in values.values()):
                tally.skipped["uncertain"] += 1
                continue
            positives = [name for name, v in values.items() if v == 1]
            if len(positives) != 1:
                tally.skipped["not single-label" if positives else "none of the classes"] += 1
                continue
            rel = row["Path"]
            image = _resolve_chexpert_path(root, rel)
            if not image.is_file():
                tally.miss(str(image), f"{path}, line {line}: image file not found")
                continue
            patient = re.search(r"(patient\d+)", rel)
            split = next((p for p in Path(rel).parts if p in ("train", "valid", "test")), None)
            meta = {k: row[k] for k in ("Sex", "Age", "Frontal/Lateral", "AP/PA") if k in row}
            yield Record(
                id=rel,
                image=image,
                label=positives[0],
                split=split,
                patient_id=patient.group(1) if patient else None,
                metadata=meta,
            )

    return DatasetStream(path, rows)


def load_chexpert(
    data_root: str | os.PathLike[str],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    uncertain: str = "exclude",
    frontal_only: bool = True,
    classes: Sequence[str] = CHEXPERT_CLASSES,
    encoding: str = "utf-8",
) -> DatasetLoad:
    """Read CheXpert's official CSV into the single-label subset of ``classes``.

    A row is kept when it is a frontal view (with ``frontal_only``) and exactly one of ``classes`` is
    positive. Blank cells mean "not mentioned" (0). Uncertain cells (-1) follow ``uncertain``:
    ``"exclude"`` drops the row when any of ``classes`` is uncertain (default), ``"positive"`` reads
    -1 as 1 (U-Ones), ``"negative"`` reads it as 0 (U-Zeros). The split comes from the path
    (``train``/``valid``), the patient id from the ``patientNNNNN`` folder.
    """
    return iter_chexpert(
        data_root,
        csv_path=csv_path,
        uncertain=uncertain,
        frontal_only=frontal_only,
        classes=classes,
        encoding=encoding,
    ).load()


# ------------------------------------------------------------------------------------------ Fitzpatrick17k
def iter_fitzpatrick17k(
    data_root: str | os.PathLike[str],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    top_conditions: int | None = None,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> DatasetStream:
    """:func:`load_fitzpatrick17k` row by row (``top_conditions`` counts the labels in a first streaming pass)."""
    root = Path(data_root)
    path = Path(csv_path) if csv_path is not None else root / "fitzpatrick17k.csv"
    if csv_path is not None and not path.is_absolute() and not path.is_file():
        path = root / path
    images = (root / "images" if (root / "images").is_dir() else root) if image_dir is None else Path(image_dir)
    columns = _check_csv(path, encoding)
    _require_columns(path, columns, ["md5hash", "label"], "Fitzpatrick17k")
    if top_conditions is not None and classes is not None:
        raise ConfigError("pass either top_conditions or classes, not both.")
    if top_conditions is not None and top_conditions < 1:
        raise ConfigError(f"top_conditions must be >= 1, got {top_conditions}.")
    wanted = None if classes is None else set(classes)

    def rows(tally: _Tally) -> Iterator[Record]:
        keep = wanted
        if top_conditions is not None:
            counts = Counter(row["label"] for _, row in _csv_rows(path, encoding) if row["label"])
            keep = {name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_conditions]}
        seen: set[str] = set()  # md5 hashes (duplicates are skipped); the records are not kept
        for line, row in _csv_rows(path, encoding):
            label, md5 = row["label"], row["md5hash"]
            if not md5 or not label:
                raise DataError(f"{path}, line {line}: empty 'md5hash' or 'label'. Fix or remove the row.")
            if keep is not None and label not in keep:
                tally.skipped["other condition"] += 1
                continue
            if md5 in seen:
                tally.skipped["duplicate md5hash"] += 1
                continue
            seen.add(md5)
            image = next(
                (images / f"{md5}{ext}" for ext in (".jpg", ".jpeg", ".png") if (images / f"{md5}{ext}").is_file()),
                None,
            )
            if image is None:
                tally.miss(str(images / f"{md5}.jpg"), f"{path}, line {line}: image file not found")
                continue
            meta = {k: v for k, v in row.items() if k not in ("md5hash", "label") and v != ""}
            yield Record(id=md5, image=image, label=label, metadata=meta)

    return DatasetStream(path, rows)


def load_fitzpatrick17k(
    data_root: str | os.PathLike[str],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    top_conditions: int | None = None,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> DatasetLoad:
    """Read the Fitzpatrick17k CSV (``md5hash``, ``label``, ``fitzpatrick_scale``, ...) and its image folder.

    Images are looked up as ``<image_dir>/<md5hash>.<jpg|jpeg|png>`` (default ``image_dir``:
    ``<data_root>/images``, else ``data_root``). ``top_conditions=20`` keeps the 20 most frequent
    conditions of the CSV (ties broken alphabetically), the subset used in the paper; ``classes`` keeps
    an explicit list instead. Rows without an image URL in the source simply have no file and are
    reported as missing.
    """
    return iter_fitzpatrick17k(
        data_root,
        csv_path=csv_path,
        image_dir=image_dir,
        top_conditions=top_conditions,
        classes=classes,
        encoding=encoding,
    ).load()


# ---------------------------------------------------------------------------------------------- BreakHis
_BREAKHIS_NAME = re.compile(r"^SOB_(?P<kind>[BM])_(?P<code>[A-Z]+)-(?P<patient>[^-]+-[^-]+)-(?P<mag>\d+)-\d+", re.I)


def iter_breakhis(
    data_root: str | os.PathLike[str],
    *,
    magnification: str | None = "100X",
) -> DatasetStream:
    """:func:`load_breakhis` image by image (the sorted list of image paths is read at each iteration)."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: BreakHis folder not found. Pass the folder that holds 'benign' and 'malignant'.")
    if magnification is not None:
        magnification = magnification.upper()
        if magnification not in ("40X", "100X", "200X", "400X"):
            raise ConfigError(f"magnification must be 40X, 100X, 200X or 400X, got {magnification!r}.")

    def rows(tally: _Tally) -> Iterator[Record]:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
        for image in files:
            rel = image.relative_to(root)
            parts = [p.lower() for p in rel.parts]
            subtype = next((_BREAKHIS_FOLDERS[p] for p in parts if p in _BREAKHIS_FOLDERS), None)
            match = _BREAKHIS_NAME.match(image.name)
            if subtype is None and match is not None:
                subtype = _BREAKHIS_CODES.get(match.group("code").upper())
            if subtype is None:
                tally.skipped["not a BreakHis image"] += 1
                continue
            mag = next((p.upper() for p in rel.parts if re.fullmatch(r"\d+X", p, re.I)), None)
            if mag is None and match is not None:
                mag = f"{match.group('mag')}X"
            if magnification is not None and mag != magnification:
                tally.skipped["other magnification"] += 1
                continue
            patient = next((p for p in rel.parts if p.upper().startswith("SOB_") and p != image.name), None)
            if patient is None and match is not None:
                patient = match.group("patient")
            yield Record(
                id=rel.as_posix(),
                image=image,
                label=subtype,
                patient_id=patient,
                metadata={
                    "magnification": mag,
                    "tumor_class": "benign" if subtype in BREAKHIS_CLASSES[:4] else "malignant",
                },
            )

    return DatasetStream(root, rows)


def load_breakhis(
    data_root: str | os.PathLike[str],
    *,
    magnification: str | None = "100X",
) -> DatasetLoad:
    """Read the BreakHis folder tree (``benign|malignant/SOB/<subtype>/<patient>/<magnification>/*.png``).

    The label is one of the 8 subtypes (from the subtype folder, checked against the file-name code);
    the patient id is the slide folder (e.g. ``SOB_B_A_14-22549AB``); ``magnification`` keeps one of
    ``40X``, ``100X``, ``200X``, ``400X`` (``None`` keeps all).
    """
    return iter_breakhis(data_root, magnification=magnification).load()


# ------------------------------------------------------------------------------------------------- ORIGA
_TRUE = {"1", "true", "yes", "glaucoma", "y"}
_FALSE = {"0", "false", "no", "normal", "n"}


def iter_origa(
    data_root: str | os.PathLike[str],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
) -> DatasetStream:
    """:func:`load_origa` row by row (the CSV and its columns are checked now)."""
    root = Path(data_root)
    path = Path(csv_path) if csv_path is not None else root / "OrigaList.csv"
    if csv_path is not None and not path.is_absolute() and not path.is_file():
        path = root / path
    columns = _check_csv(path, encoding)
    lower = {c.lower(): c for c in columns}
    image_col = image_column or next((lower[c] for c in ("filename", "image", "file", "imgname") if c in lower), None)
    label_col = label_column or next((lower[c] for c in ("glaucoma", "label", "diagnosis") if c in lower), None)
    if image_col is None or label_col is None or image_col not in columns or label_col not in columns:
        raise DataError(
            f"{path}: cannot find the image and glaucoma columns in {columns}. "
            "Name them 'Filename' and 'Glaucoma' or pass image_column=/label_column= (--image-column/--label-column)."
        )
    if image_dir is not None:
        images = Path(image_dir)
    else:
        images = next((root / d for d in ("Images", "images") if (root / d).is_dir()), root)

    def rows(tally: _Tally) -> Iterator[Record]:
        for line, row in _csv_rows(path, encoding):
            raw = row[label_col].lower()
            if raw in _TRUE:
                label = "glaucoma"
            elif raw in _FALSE:
                label = "normal"
            else:
                raise DataError(
                    f"{path}, line {line}, column '{label_col}': expected 1/0, true/false or glaucoma/normal, "
                    f"got {row[label_col]!r}."
                )
            name = row[image_col]
            candidates = [images / name] if Path(name).suffix else [images / f"{name}{e}" for e in (".jpg", ".png")]
            image = next((c for c in candidates if c.is_file()), None)
            if image is None:
                tally.miss(str(candidates[0]), f"{path}, line {line}: image file not found")
                continue
            meta = {k: v for k, v in row.items() if k not in (image_col, label_col) and v != ""}
            yield Record(id=Path(name).stem, image=image, label=label, patient_id=Path(name).stem, metadata=meta)

    return DatasetStream(path, rows)


def load_origa(
    data_root: str | os.PathLike[str],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
) -> DatasetLoad:
    """Read ORIGA from a CSV of image file + glaucoma flag (1/0, true/false, glaucoma/normal).

    Column names are detected (``Filename``/``image``/``file`` and ``Glaucoma``/``label``) unless given.
    Images resolve against ``image_dir`` (default ``<data_root>/Images`` or ``<data_root>/images`` when
    present, else ``data_root``); a name without extension tries ``.jpg`` and ``.png``.
    """
    return iter_origa(
        data_root,
        csv_path=csv_path,
        image_column=image_column,
        label_column=label_column,
        image_dir=image_dir,
        encoding=encoding,
    ).load()


# ---------------------------------------------------------------------------------------------- generic
def _generic_stream(
    data_root: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str] | None,
    encoding: str,
    *,
    duplicates_at_end: bool,
) -> DatasetStream:
    if manifest is None:
        raise ConfigError("the generic dataset needs a manifest: pass manifest= (--manifest FILE).")
    path = Path(manifest)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found. Check the path.")

    def rows(tally: _Tally) -> Iterator[Record]:
        records = iter_manifest(
            path, image_root=data_root, check_images=False, encoding=encoding, duplicates_at_end=duplicates_at_end
        )
        for record in records:
            if Path(record.image).is_file():
                yield record
            else:
                tally.miss(str(record.image), f"{manifest}: image of record '{record.id}' not found")

    return DatasetStream(path, rows)


def iter_generic(
    data_root: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
) -> DatasetStream:
    """:func:`load_generic` row by row.

    Memory holds an 8-byte hash per row (not the records): a duplicate id is reported, naming both lines,
    when the iteration reaches the end of the manifest (:func:`load_generic` reports it at its row).
    """
    return _generic_stream(data_root, manifest, encoding, duplicates_at_end=True)


def load_generic(
    data_root: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
) -> DatasetLoad:
    """Read a generic CSV/JSONL manifest (``image``, ``label``, optional ``split``, ``patient_id``, ``id``).

    Relative image paths resolve against ``data_root`` (default: the manifest's folder); rows whose
    image file is missing are reported in :attr:`DatasetLoad.missing`.
    """
    # a duplicate id is reported at its row, before any later bad row (as read_manifest does)
    return _generic_stream(data_root, manifest, encoding, duplicates_at_end=False).load()


# ----------------------------------------------------------------------------------------------- registry
DatasetLoader = Callable[..., DatasetLoad]
DatasetIterator = Callable[..., DatasetStream]
_DATASETS: dict[str, DatasetLoader] = {}
_ITERATORS: dict[str, DatasetIterator] = {}


def register_dataset(
    name: str, loader: DatasetLoader, *, overwrite: bool = False, iterate: DatasetIterator | None = None
) -> None:
    """Make ``loader`` available as ``load_dataset(name, ...)`` (and ``clinalign enrich --dataset name``).

    ``iterate`` (same arguments, returns a :class:`DatasetStream`) is the row-by-row form used by
    :func:`iter_dataset`; without it, :func:`iter_dataset` calls ``loader`` and streams its list.
    """
    if name in _DATASETS and not overwrite:
        raise ConfigError(f"a dataset named {name!r} is already registered; pass overwrite=True to replace it.")
    _DATASETS[name] = loader
    if iterate is not None:
        _ITERATORS[name] = iterate
    else:
        _ITERATORS.pop(name, None)


def available_datasets() -> list[str]:
    return sorted(_DATASETS)


def _options(name: str, data_root: Any, options: dict[str, Any]) -> dict[str, Any]:
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {available_datasets()}.")
    if data_root is None and name != "generic":
        raise ConfigError(f"the {name} dataset needs its folder: pass data_root (--data-root DIR).")
    return {k: v for k, v in options.items() if v is not None}


def load_dataset(name: str, data_root: str | os.PathLike[str] | None = None, **options: Any) -> DatasetLoad:
    """Load a registered dataset by name, e.g. ``load_dataset("chexpert", "data/", uncertain="positive")``."""
    options = _options(name, data_root, options)
    return _DATASETS[name](data_root, **options)


def iter_dataset(name: str, data_root: str | os.PathLike[str] | None = None, **options: Any) -> DatasetStream:
    """A registered dataset as a :class:`DatasetStream` (read row by row), e.g. ``iter_dataset("generic", ...)``.

    Same arguments and records as :func:`load_dataset`; a loader registered without a streaming form
    is loaded into memory and its list streamed.
    """
    options = _options(name, data_root, options)
    iterate = _ITERATORS.get(name)
    if iterate is not None:
        return iterate(data_root, **options)
    loaded = _DATASETS[name](data_root, **options)
    return DatasetStream.from_records(loaded.records, name, missing=loaded.missing, skipped=loaded.skipped)


register_dataset("chexpert", load_chexpert, iterate=iter_chexpert)
register_dataset("fitzpatrick17k", load_fitzpatrick17k, iterate=iter_fitzpatrick17k)
register_dataset("breakhis", load_breakhis, iterate=iter_breakhis)
register_dataset("origa", load_origa, iterate=iter_origa)
register_dataset("generic", load_generic, iterate=iter_generic)
