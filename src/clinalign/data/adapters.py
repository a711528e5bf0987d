"""Adapters for the public datasets as their users have them on disk.

Each adapter reads the dataset's own files (CSV, folder tree) into :class:`Record` objects. Images are
not opened here (they load lazily through :func:`clinalign.data.load_image`); a row whose image file is
missing is collected in :attr:`DatasetLoad.missing` by path instead of stopping the run.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinalign.data.manifest import read_manifest
from clinalign.data.records import Record
from clinalign.data.tables import read_csv_rows
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
        labels = Counter(r.label for r in self.records)
        parts = [f"{len(self.records)} records (" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + ")"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing image files (first: {self.missing[0][0]})")
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())))
        return "; ".join(parts)


def _read_csv(path: Path, encoding: str = "utf-8") -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found. Check the path (or pass --csv).")
    columns, raw_rows = read_csv_rows(path, encoding=encoding)
    rows = [(line, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}) for line, row in raw_rows]
    return [c.strip() for c in columns], rows


def _require_columns(path: Path, columns: Sequence[str], required: Sequence[str], what: str) -> None:
    absent = [c for c in required if c not in columns]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {absent} expected in {what}; found {list(columns)}. "
            f"Pass the dataset's original CSV."
        )


def _finish(records: list[Record], missing: list[tuple[str, str]], skipped: Counter[str], source: Path) -> DatasetLoad:
    if not records:
        detail = f"; skipped {dict(skipped)}" if skipped else ""
        detail += f"; {len(missing)} image files missing (first: {missing[0][0]})" if missing else ""
        raise DataError(f"{source}: no usable records{detail}. Check --data-root and the filters.")
    return DatasetLoad(records=records, missing=missing, skipped=dict(skipped))


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
    if uncertain not in UNCERTAIN_POLICIES:
        raise ConfigError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)}, got {uncertain!r}.")
    root = Path(data_root)
    path = Path(csv_path) if csv_path is not None else root / "train.csv"
    if csv_path is not None and not path.is_absolute() and not path.is_file():
        path = root / path
    columns, rows = _read_csv(path, encoding)
    _require_columns(path, columns, ["Path", *classes] + (["Frontal/Lateral"] if frontal_only else []), "CheXpert")
    records: list[Record] = []
    missing: list[tuple[str, str]] = []
    skipped: Counter[str] = Counter()
    for line, row in rows:
        if frontal_only and row["Frontal/Lateral"].lower() != "frontal":
            skipped["lateral view"] += 1
            continue
        values = {}
        for name in classes:
            value = _chexpert_value(row[name], uncertain)
            if value == -2:
                raise DataError(f"{path}, line {line}, column '{name}': expected 1, 0, -1 or blank, got {row[name]!r}.")
            values[name] = value
        if any(v is None for v in values.values()):
            skipped["uncertain"] += 1
            continue
        positives = [name for name, v in values.items() if v == 1]
        if len(positives) != 1:
            skipped["not single-label" if positives else "none of the classes"] += 1
            continue
        rel = row["Path"]
        image = _resolve_chexpert_path(root, rel)
        if not image.is_file():
            missing.append((str(image), f"{path}, line {line}: image file not found"))
            continue
        patient = re.search(r"(patient\d+)", rel)
        split = next((p for p in Path(rel).parts if p in ("train", "valid", "test")), None)
        meta = {k: row[k] for k in ("Sex", "Age", "Frontal/Lateral", "AP/PA") if k in row}
        records.append(
            Record(
                id=rel,
                image=image,
                label=positives[0],
                split=split,
                patient_id=patient.group(1) if patient else None,
                metadata=meta,
            )
        )
    return _finish(records, missing, skipped, path)


# ------------------------------------------------------------------------------------------ Fitzpatrick17k
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
    root = Path(data_root)
    path = Path(csv_path) if csv_path is not None else root / "fitzpatrick17k.csv"
    if csv_path is not None and not path.is_absolute() and not path.is_file():
        path = root / path
    images = (root / "images" if (root / "images").is_dir() else root) if image_dir is None else Path(image_dir)
    columns, rows = _read_csv(path, encoding)
    _require_columns(path, columns, ["md5hash", "label"], "Fitzpatrick17k")
    if top_conditions is not None and classes is not None:
        raise ConfigError("pass either top_conditions or classes, not both.")
    keep: set[str] | None = None
    if top_conditions is not None:
        if top_conditions < 1:
            raise ConfigError(f"top_conditions must be >= 1, got {top_conditions}.")
        counts = Counter(row["label"] for _, row in rows if row["label"])
        keep = {name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_conditions]}
    elif classes is not None:
        keep = set(classes)
    records: list[Record] = []
    missing: list[tuple[str, str]] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for line, row in rows:
        label, md5 = row["label"], row["md5hash"]
        if not md5 or not label:
            raise DataError(f"{path}, line {line}: empty 'md5hash' or 'label'. Fix or remove the row.")
        if keep is not None and label not in keep:
            skipped["other condition"] += 1
            continue
        if md5 in seen:
            skipped["duplicate md5hash"] += 1
            continue
        seen.add(md5)
        image = next(
            (images / f"{md5}{ext}" for ext in (".jpg", ".jpeg", ".png") if (images / f"{md5}{ext}").is_file()), None
        )
        if image is None:
            missing.append((str(images / f"{md5}.jpg"), f"{path}, line {line}: image file not found"))
            continue
        meta = {k: v for k, v in row.items() if k not in ("md5hash", "label") and v != ""}
        records.append(Record(id=md5, image=image, label=label, metadata=meta))
    return _finish(records, missing, skipped, path)


# ---------------------------------------------------------------------------------------------- BreakHis
_BREAKHIS_NAME = re.compile(r"^SOB_(?P<kind>[BM])_(?P<code>[A-Z]+)-(?P<patient>[^-]+-[^-]+)-(?P<mag>\d+)-\d+", re.I)


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
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: BreakHis folder not found. Pass the folder that holds 'benign' and 'malignant'.")
    if magnification is not None:
        magnification = magnification.upper()
        if magnification not in ("40X", "100X", "200X", "400X"):
            raise ConfigError(f"magnification must be 40X, 100X, 200X or 400X, got {magnification!r}.")
    records: list[Record] = []
    skipped: Counter[str] = Counter()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    for image in files:
        rel = image.relative_to(root)
        parts = [p.lower() for p in rel.parts]
        subtype = next((_BREAKHIS_FOLDERS[p] for p in parts if p in _BREAKHIS_FOLDERS), None)
        match = _BREAKHIS_NAME.match(image.name)
        if subtype is None and match is not None:
            subtype = _BREAKHIS_CODES.get(match.group("code").upper())
        if subtype is None:
            skipped["not a BreakHis image"] += 1
            continue
        mag = next((p.upper() for p in rel.parts if re.fullmatch(r"\d+X", p, re.I)), None)
        if mag is None and match is not None:
            mag = f"{match.group('mag')}X"
        if magnification is not None and mag != magnification:
            skipped["other magnification"] += 1
            continue
        patient = next((p for p in rel.parts if p.upper().startswith("SOB_") and p != image.name), None)
        if patient is None and match is not None:
            patient = match.group("patient")
        records.append(
            Record(
                id=rel.as_posix(),
                image=image,
                label=subtype,
                patient_id=patient,
                metadata={
                    "magnification": mag,
                    "tumor_class": "benign" if subtype in BREAKHIS_CLASSES[:4] else "malignant",
                },
            )
        )
    return _finish(records, [], skipped, root)


# ------------------------------------------------------------------------------------------------- ORIGA
_TRUE = {"1", "true", "yes", "glaucoma", "y"}
_FALSE = {"0", "false", "no", "normal", "n"}


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
    root = Path(data_root)
    path = Path(csv_path) if csv_path is not None else root / "OrigaList.csv"
    if csv_path is not None and not path.is_absolute() and not path.is_file():
        path = root / path
    columns, rows = _read_csv(path, encoding)
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
    records: list[Record] = []
    missing: list[tuple[str, str]] = []
    for line, row in rows:
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
            missing.append((str(candidates[0]), f"{path}, line {line}: image file not found"))
            continue
        meta = {k: v for k, v in row.items() if k not in (image_col, label_col) and v != ""}
        records.append(Record(id=Path(name).stem, image=image, label=label, patient_id=Path(name).stem, metadata=meta))
    return _finish(records, missing, Counter(), path)


# ---------------------------------------------------------------------------------------------- generic
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
    if manifest is None:
        raise ConfigError("the generic dataset needs a manifest: pass manifest= (--manifest FILE).")
    records = read_manifest(manifest, image_root=data_root, check_images=False, encoding=encoding)
    present = [r for r in records if Path(r.image).is_file()]
    missing = [(str(r.image), f"{manifest}: image of record '{r.id}' not found") for r in records if r not in present]
    return _finish(present, missing, Counter(), Path(manifest))


# ----------------------------------------------------------------------------------------------- registry
DatasetLoader = Callable[..., DatasetLoad]
_DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str, loader: DatasetLoader, *, overwrite: bool = False) -> None:
    """Make ``loader`` available as ``load_dataset(name, ...)`` (and ``clinalign enrich --dataset name``)."""
    if name in _DATASETS and not overwrite:
        raise ConfigError(f"a dataset named {name!r} is already registered; pass overwrite=True to replace it.")
    _DATASETS[name] = loader


def available_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(name: str, data_root: str | os.PathLike[str] | None = None, **options: Any) -> DatasetLoad:
    """Load a registered dataset by name, e.g. ``load_dataset("chexpert", "data/", uncertain="positive")``."""
    loader = _DATASETS.get(name)
    if loader is None:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {available_datasets()}.")
    if data_root is None and name != "generic":
        raise ConfigError(f"the {name} dataset needs its folder: pass data_root (--data-root DIR).")
    return loader(data_root, **{k: v for k, v in options.items() if v is not None})


register_dataset("chexpert", load_chexpert)
register_dataset("fitzpatrick17k", load_fitzpatrick17k)
register_dataset("breakhis", load_breakhis)
register_dataset("origa", load_origa)
register_dataset("generic", load_generic)
