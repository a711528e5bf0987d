"""Class subsets, grouped splits, per-class sampling, few-shot subsets and the ``split.json`` record of them.

Pure functions over :class:`Record` lists (seeded, deterministic for the same input and seed), and
:func:`select_streamed`, the selections that need no list (classes, seeded patient-level split) over a
dataset read row by row. A group
(patient, near-duplicate image cluster) never lands on both sides of a split. :class:`SplitManifest`
is the ``split.json`` written beside every protocol-run enrich output and read back by ``probe train``
and ``score-cas`` so one split flows through a whole experiment.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinalign.data.records import Record
from clinalign.data.split import assign_splits, patient_split, patient_split_map
from clinalign.errors import ConfigError, DataError

SPLIT_FILE = "split.json"

GroupKey = Callable[[Record], str]


def image_hash(path: str | os.PathLike[str], *, size: int = 8) -> str:
    """Average hash of an image: ``size``² grey cells, 1 where brighter than their mean, as hex.

    Resized or recompressed copies of one photograph (Fitzpatrick17k's near-duplicates) get the same
    hash, so grouping by it keeps them on one side of a split.
    """
    import numpy as np
    from PIL import Image

    from clinalign.data.images import load_image

    grey = load_image(path).convert("L").resize((size, size), Image.Resampling.BOX)
    cells = np.asarray(grey, dtype=np.float64)
    bits = (cells > cells.mean()).flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return f"{value:0{size * size // 4}x}"


def group_by_patient(record: Record) -> str:
    """A record's patient id (a record without one is its own group)."""
    return record.patient_id if record.patient_id is not None else f"record:{record.id}"


def group_by_image_hash(record: Record) -> str:
    return f"ahash:{image_hash(record.image)}"


def group_by_column(column: str) -> GroupKey:
    """Group by a metadata column (e.g. a ``group`` column of the dataset CSV); empty values are own groups."""

    def key(record: Record) -> str:
        value = record.metadata.get(column)
        return f"{column}:{value}" if value not in (None, "") else f"record:{record.id}"

    return key


def grouped_split(
    records: Sequence[Record],
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    group: GroupKey = group_by_patient,
) -> list[Record]:
    """Seeded split stratified by majority label, whole groups at a time (``group`` gives each record's group).

    Returns new records (input order kept) with ``split`` set; ``patient_id`` is left as it was.
    """
    keyed = [dataclasses.replace(r, patient_id=group(r)) for r in records]
    assigned = patient_split(keyed, fractions, seed=seed)
    return [dataclasses.replace(r, split=a.split) for r, a in zip(records, assigned, strict=True)]


def check_classes(present: Iterable[str], classes: Sequence[str]) -> list[str]:
    """``classes`` without repeats; a class not in ``present`` (the labels of the records) is an error."""
    wanted = list(dict.fromkeys(classes))
    present = set(present)
    absent = [c for c in wanted if c not in present]
    if absent:
        raise DataError(
            f"no records of class(es) {absent}; labels present: {sorted(present)}. Check the class names "
            "(they must match the dataset's labels exactly)."
        )
    return wanted


def filter_classes(records: Sequence[Record], classes: Sequence[str]) -> list[Record]:
    """Records whose label is in ``classes``; a class with no record is an error naming the labels present."""
    keep = set(check_classes({r.label for r in records}, classes))
    return [r for r in records if r.label in keep]


def _sample(records: Sequence[Record], quotas: Mapping[str, int], rng: random.Random, where: str) -> list[Record]:
    by_label: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_label[record.label].append(record)
    chosen: set[str] = set()
    for label in sorted(quotas):
        pool = sorted(by_label.get(label, []), key=lambda r: r.id)
        if len(pool) < quotas[label]:
            raise DataError(
                f"{where}: class {label!r} has {len(pool)} records, {quotas[label]} asked. "
                "Lower --per-class/--shots or add images of this class."
            )
        chosen.update(r.id for r in rng.sample(pool, quotas[label]))
    return [r for r in records if r.id in chosen]


def _by_split(records: Sequence[Record]) -> dict[str | None, list[Record]]:
    splits: dict[str | None, list[Record]] = defaultdict(list)
    for record in records:
        splits[record.split].append(record)
    return splits


def sample_per_class(
    records: Sequence[Record], per_class: int, *, seed: int = 0, splits: Sequence[str] | None = None
) -> list[Record]:
    """``per_class`` records of every class in each split (only in ``splits`` when given; others kept whole)."""
    if per_class < 1:
        raise ConfigError(f"per_class must be >= 1, got {per_class}.")
    rng = random.Random(seed)
    out: list[Record] = []
    for name, rows in sorted(_by_split(records).items(), key=lambda kv: str(kv[0])):
        if splits is not None and name not in splits:
            out += rows
            continue
        labels = sorted({r.label for r in rows})
        out += _sample(rows, dict.fromkeys(labels, per_class), rng, f"split {name!r}")
    order = {r.id: i for i, r in enumerate(records)}
    return sorted(out, key=lambda r: order[r.id])


def even_quotas(total: int, labels: Sequence[str]) -> dict[str, int]:
    """``total`` spread over ``labels`` as evenly as possible (the first labels, sorted, get the remainder)."""
    labels = sorted(labels)
    base, extra = divmod(total, len(labels))
    return {label: base + (i < extra) for i, label in enumerate(labels)}


def sample_split_sizes(records: Sequence[Record], sizes: Mapping[str, int], *, seed: int = 0) -> list[Record]:
    """Seeded per-class sampler: ``sizes[split]`` records per split, spread evenly over the classes."""
    rng = random.Random(seed)
    out: list[Record] = []
    groups = _by_split(records)
    for name in sorted(sizes):
        rows = groups.get(name, [])
        labels = sorted({r.label for r in rows})
        if not labels:
            raise DataError(f"split {name!r} has no records to sample {sizes[name]} from.")
        out += _sample(rows, even_quotas(sizes[name], labels), rng, f"split {name!r}")
    order = {r.id: i for i, r in enumerate(records)}
    return sorted(out, key=lambda r: order[r.id])


def few_shot(records: Sequence[Record], shots: int, *, seed: int = 0, split: str = "train") -> list[Record]:
    """Keep ``shots`` records per class in ``split`` (the few-shot regimes); other splits are untouched."""
    if shots < 1:
        raise ConfigError(f"shots must be >= 1, got {shots}.")
    return sample_per_class(records, shots, seed=seed, splits=[split])


def read_split_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a CSV of ``id,split`` rows (header required) into id -> split."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found. It must be a CSV with the columns id,split.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "id" not in columns or "split" not in columns:
            raise DataError(f"{path}: expected the columns id,split; found {columns}.")
        mapping: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row["id"] or not row["split"]:
                raise DataError(f"{path}, line {line}: empty id or split.")
            if row["id"] in mapping and mapping[row["id"]] != row["split"]:
                raise DataError(f"{path}, line {line}: id {row['id']!r} is listed in two splits.")
            mapping[row["id"]] = row["split"]
    if not mapping:
        raise DataError(f"{path}: the split file has no rows.")
    return mapping


def apply_split(records: Sequence[Record], mapping: Mapping[str, str], *, source: str) -> list[Record]:
    """Set each record's split from ``mapping`` (id -> split); records it does not list are dropped.

    An id of ``mapping`` without a record is an error (the file pins ids the dataset must have).
    """
    by_id = {r.id: r for r in records}
    unknown = [i for i in mapping if i not in by_id]
    if unknown:
        raise DataError(
            f"{source}: {len(unknown)} id(s) are not in the dataset (first: {unknown[0]!r}). The ids must be "
            "the records' ids (see enriched.jsonl's 'id' field)."
        )
    return [dataclasses.replace(r, split=mapping[r.id]) for r in records if r.id in mapping]


@dataclass
class SplitManifest:
    """The ``split.json`` of a run: which ids are in which split, how they were chosen, counts per class.

    Attributes:
        ids: split -> sorted record ids.
        labels: record id -> label (so counts can be checked without the dataset).
        seed: the seed the split and samplers used.
        protocol: protocol name (e.g. ``craft-paper``) or ``None``.
        dataset: dataset name.
        design: how the split was made (grouping, fractions, sizes, shots, split file) for the record.
    """

    ids: dict[str, list[str]]
    labels: dict[str, str]
    seed: int
    protocol: str | None = None
    dataset: str | None = None
    design: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Record],
        *,
        seed: int,
        protocol: str | None = None,
        dataset: str | None = None,
        design: Mapping[str, Any] | None = None,
    ) -> SplitManifest:
        """The split.json of ``records`` (read once; only their ids and labels are kept)."""
        ids: dict[str, list[str]] = defaultdict(list)
        labels: dict[str, str] = {}
        interned: dict[str, str] = {}  # one string per label, not one per record
        missing: list[str] = []
        for record in records:
            if record.split is None:
                missing.append(record.id)
                continue
            ids[str(record.split)].append(record.id)
            labels[record.id] = interned.setdefault(record.label, record.label)
        if missing:
            raise DataError(f"{len(missing)} records have no split (first: {missing[0]!r}); assign splits first.")
        return cls(
            ids={k: sorted(v) for k, v in sorted(ids.items())},
            labels=labels,
            seed=seed,
            protocol=protocol,
            dataset=dataset,
            design=dict(design or {}),
        )

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """split -> label -> number of records."""
        return {split: dict(sorted(Counter(self.labels[i] for i in ids).items())) for split, ids in self.ids.items()}

    def split_of(self) -> dict[str, str]:
        return {i: split for split, ids in self.ids.items() for i in ids}

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "seed": self.seed,
            "design": self.design,
            "counts": self.counts,
            "ids": self.ids,
            "labels": dict(sorted(self.labels.items())),
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        from clinalign.utils.io import write_json

        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / SPLIT_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SplitManifest:
        import json

        path = Path(path)
        if path.is_dir():
            path = path / SPLIT_FILE
        if not path.is_file():
            raise DataError(f"{path}: split.json not found. It is written by `clinalign enrich --protocol ...`.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ids = {str(k): [str(i) for i in v] for k, v in data["ids"].items()}
            labels = {str(k): str(v) for k, v in data["labels"].items()}
            seed = int(data["seed"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: not a valid split.json ({exc!r}); rewrite it with `clinalign enrich`.") from exc
        return cls(
            ids=ids,
            labels=labels,
            seed=seed,
            protocol=data.get("protocol"),
            dataset=data.get("dataset"),
            design=dict(data.get("design") or {}),
        )

    def assign(self, records: Sequence[Record], *, source: str = SPLIT_FILE) -> list[Record]:
        """``records`` with their split set from this split.json.

        Every record must be listed (a record that is not comes from another run: an error); listed ids
        without a record are fine (e.g. an enrich run of the train split only).
        """
        split_of = self.split_of()
        stray = [r.id for r in records if r.id not in split_of]
        if stray:
            raise DataError(
                f"{source}: {len(stray)} record(s) are not in this split.json (first: {stray[0]!r}); the manifest "
                "and the split.json come from different runs. Use the split.json written with this manifest."
            )
        return [dataclasses.replace(r, split=split_of[r.id]) for r in records]


def find_split_manifest(path: str | os.PathLike[str]) -> Path | None:
    """The ``split.json`` beside a manifest/enriched file (or inside a folder), if there is one."""
    path = Path(path)
    candidate = path / SPLIT_FILE if path.is_dir() else path.parent / SPLIT_FILE
    return candidate if candidate.is_file() else None


def select_records(
    records: Sequence[Record],
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    per_class: int | None = None,
    shots: int | None = None,
    split_file: str | os.PathLike[str] | None = None,
) -> list[Record]:
    """The dataset-independent selection flags, in order: ``classes``, ``split_file``, ``per_class``, ``shots``.

    ``per_class`` samples in every split; ``shots`` keeps K per class of the train split (records need
    splits: from the source, ``split_file`` or an earlier split step).
    """
    out = list(records)
    if classes:
        out = filter_classes(out, classes)
    if split_file is not None:
        out = apply_split(out, read_split_file(split_file), source=str(split_file))
    if per_class is not None:
        out = sample_per_class(out, per_class, seed=seed)
    if shots is not None:
        if not any(r.split == "train" for r in out):
            raise ConfigError("--shots keeps K images per class of the train split, but no record is in 'train'.")
        out = few_shot(out, shots, seed=seed)
    return out


_NO_IMAGE = Path()


class StreamedSelection:
    """Records of a dataset read row by row, with a patient split assigned and filtered by class and split.

    Re-iterable: each iteration reads the source again (see :func:`select_streamed`), so the records are
    never all in memory. ``chosen`` (record id -> split), when set, keeps only those records, with that split.
    """

    def __init__(
        self,
        source: Iterable[Record],
        *,
        assignment: Mapping[str, str] | None = None,
        classes: Iterable[str] | None = None,
        split: str | None = None,
        chosen: Mapping[str, str | None] | None = None,
    ) -> None:
        self.source = source
        self.assignment = assignment
        self.classes = None if not classes else set(classes)
        self.split = split
        self.chosen = chosen
        # split -> number of selected records (None: records without a split), set by select_streamed
        self.split_counts: Counter[str | None] = Counter()

    def only_split(self, split: str) -> StreamedSelection:
        """The same selection restricted to the records of ``split``."""
        return StreamedSelection(
            self.source, assignment=self.assignment, classes=self.classes, split=split, chosen=self.chosen
        )

    def __iter__(self) -> Iterator[Record]:
        records: Iterable[Record] = self.source
        if self.assignment is not None:
            records = assign_splits(records, self.assignment)
        for record in records:
            if self.classes is not None and record.label not in self.classes:
                continue
            if self.chosen is not None:
                if record.id not in self.chosen:
                    continue
                if self.chosen[record.id] != record.split:
                    record = dataclasses.replace(record, split=self.chosen[record.id])
            if self.split is not None and record.split != self.split:
                continue
            yield record


def select_streamed(
    source: Iterable[Record],
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    fractions: Mapping[str, float] | None = None,
    per_class: int | None = None,
    shots: int | None = None,
    split_file: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
) -> tuple[StreamedSelection, SplitManifest | None]:
    """:func:`select_records` (after a seeded patient split with ``fractions``) without holding the records.

    ``source`` must be re-iterable (e.g. a :class:`~clinalign.data.adapters.DatasetStream`). It is read
    once to count the labels (or, with ``fractions``, to deal the patients to splits exactly as
    :func:`~clinalign.data.split.patient_split` does, keeping one entry per patient). ``per_class``,
    ``shots`` and ``split_file`` need the whole set: one more pass keeps each record's id, label and split
    only (not its image path or metadata) and samples them with :func:`select_records`, so the choice is
    the same. Without them, one more pass builds the ``split.json`` when every selected record has a split
    (split.json lists their ids and labels). Returns the selection (records in source order, the same as
    ``select_records`` on the list) and the split.json, or ``None`` when a selected record has no split.
    """
    split_of_source: Counter[str | None] = Counter()
    labels: Counter[str] = Counter()
    assignment: dict[str, str] | None = None

    def counted() -> Iterator[Record]:
        for record in source:
            labels[record.label] += 1
            if not classes or record.label in classes:
                split_of_source[record.split] += 1
            yield record

    if fractions is not None:
        assignment = patient_split_map(counted(), fractions, seed=seed)
    else:
        for _ in counted():
            pass
    if classes:
        classes = check_classes(labels, classes)
    selection = StreamedSelection(source, assignment=assignment, classes=classes)
    if per_class is not None or shots is not None or split_file is not None:
        interned: dict[str, str] = {}
        skeletons = [
            Record(id=r.id, image=_NO_IMAGE, label=interned.setdefault(r.label, r.label), split=r.split)
            for r in selection
        ]
        chosen = select_records(skeletons, seed=seed, per_class=per_class, shots=shots, split_file=split_file)
        del skeletons
        selection.chosen = {r.id: r.split for r in chosen}
        selection.split_counts = Counter(r.split for r in chosen)
        if not chosen or None in selection.split_counts:
            return selection, None
        return selection, SplitManifest.from_records(chosen, seed=seed, dataset=dataset)
    if assignment is None and (not split_of_source or None in split_of_source):
        selection.split_counts = split_of_source
        return selection, None
    manifest = SplitManifest.from_records(selection, seed=seed, dataset=dataset)
    selection.split_counts = Counter({name: len(ids) for name, ids in manifest.ids.items()})
    return selection, manifest


def rows_of_split(
    rows: Sequence[Mapping[str, Any]], split: str, *, source: str | os.PathLike[str] | None = None
) -> list[Mapping[str, Any]]:
    """The rows (dicts with ``id`` and maybe ``split``) of ``split``.

    The split of a row comes from the ``split.json`` beside ``source`` when there is one (a row it does
    not list is an error), else from the row's own ``split`` field.
    """
    manifest_path = find_split_manifest(source) if source is not None else None
    where = str(source) if source is not None else "rows"
    if manifest_path is not None:
        split_of = SplitManifest.read(manifest_path).split_of()
        stray = [str(r.get("id")) for r in rows if str(r.get("id")) not in split_of]
        if stray:
            raise DataError(
                f"{where}: {len(stray)} row(s) are not in {manifest_path} (first: {stray[0]!r}); the file and the "
                "split.json come from different runs."
            )
        chosen = [r for r in rows if split_of[str(r.get("id"))] == split]
    else:
        if any(r.get("split") in (None, "") for r in rows):
            raise DataError(
                f"{where}: split {split!r} asked but rows have no 'split' field and there is no split.json beside "
                "the file. Enrich with --protocol or --split-file, or drop the split option."
            )
        chosen = [r for r in rows if r.get("split") == split]
    if not chosen:
        present = sorted({str(r.get("split")) for r in rows})
        raise DataError(f"{where}: no rows of split {split!r} (rows have splits {present}).")
    return chosen
