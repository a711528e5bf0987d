"""Apply a protocol's subset and split design to a dataset's records, producing the run's ``split.json``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinalign.data.records import Record
from clinalign.data.subsets import (
    GroupKey,
    SplitManifest,
    apply_split,
    few_shot,
    filter_classes,
    group_by_column,
    group_by_image_hash,
    group_by_patient,
    grouped_split,
    read_split_file,
    sample_per_class,
    sample_split_sizes,
)
from clinalign.errors import ConfigError, DataError
from clinalign.protocols.base import Protocol, SubsetDesign


@dataclass
class PreparedData:
    """The records a protocol run uses (split set on each) and the ``split.json`` describing them."""

    records: list[Record]
    split: SplitManifest

    def summary(self) -> str:
        parts = []
        for name, counts in self.split.counts.items():
            listed = ", ".join(f"{label}: {n}" for label, n in counts.items())
            parts.append(f"{name} {sum(counts.values())} ({listed})")
        return "; ".join(parts)


def _breakhis_patient(record: Record) -> str:
    from clinalign.data.adapters import _BREAKHIS_NAME

    match = _BREAKHIS_NAME.match(Path(record.image).name)
    if match is not None:
        return f"patient:{match.group('patient')}"
    return group_by_patient(record)


def group_key(design: SubsetDesign, records: Sequence[Record]) -> tuple[GroupKey, str]:
    """The grouping function of ``design`` and its name (recorded in split.json)."""
    if design.group_column and any(r.metadata.get(design.group_column) not in (None, "") for r in records):
        return group_by_column(design.group_column), f"column:{design.group_column}"
    if design.group == "image-hash":
        return group_by_image_hash, "image-hash"
    if design.group == "breakhis-filename":
        return _breakhis_patient, "breakhis-filename"
    return group_by_patient, "patient"


def loader_options(protocol: Protocol, dataset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The dataset loader options of the protocol merged with the user's; a contradiction is an error."""
    fixed = dict(protocol.for_dataset(dataset).subset.loader_options)
    for key, value in given.items():
        if value is None:
            continue
        if key in fixed and str(fixed[key]).lower() != str(value).lower():
            raise ConfigError(
                f"--{key.replace('_', '-')} {value} contradicts protocol {protocol.name!r}, which fixes it to "
                f"{fixed[key]} for {dataset}. Drop the flag or drop --protocol."
            )
        fixed[key] = value
    return fixed


def prepare_records(
    records: Sequence[Record],
    protocol: Protocol,
    dataset: str,
    *,
    data_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    per_class: int | None = None,
    shots: int | None = None,
    split_file: str | os.PathLike[str] | None = None,
) -> PreparedData:
    """Apply ``protocol``'s design for ``dataset`` to ``records`` (as its loader returned them).

    Steps, in order: rename labels (``label_map``); keep the protocol's classes (or the subset
    ``classes`` of them); assign splits (``split_file`` when given, else the design's grouped split or
    its required split file); sample ``per_class`` records per class in every split (else the design's
    ``sizes``); keep ``shots`` records per class in the train split. Seeded: the same records and seed
    give the same result.
    """
    design = protocol.for_dataset(dataset).subset
    rows = [dataclasses.replace(r, label=design.label_map.get(r.label, r.label)) for r in records]
    wanted = list(design.classes)
    if classes:
        extra = [c for c in classes if c not in design.classes]
        if extra:
            raise ConfigError(
                f"--classes {extra} are not classes of protocol {protocol.name!r} for {dataset} ({wanted})."
            )
        wanted = list(dict.fromkeys(classes))
    rows = filter_classes(rows, wanted)
    info: dict[str, Any] = {"classes": wanted}

    if split_file is None and design.split == "file":
        if data_root is None or design.split_file is None:
            raise ConfigError(f"protocol {protocol.name!r} needs a split file for {dataset}: pass --split-file FILE.")
        split_file = Path(data_root) / design.split_file
        if not Path(split_file).is_file():
            raise DataError(
                f"{split_file}: the official split file of {dataset} is required by protocol {protocol.name!r} "
                "but was not found. Put it there (a CSV with the columns id,split; id = the image file name "
                "without extension) or pass --split-file FILE."
            )
    if split_file is not None:
        rows = apply_split(rows, read_split_file(split_file), source=str(split_file))
        info["split"] = {"file": str(split_file)}
    else:
        key, key_name = group_key(design, rows)
        rows = grouped_split(rows, design.fractions, seed=seed, group=key)
        info["split"] = {"grouped_by": key_name, "fractions": dict(design.fractions)}

    if per_class is not None:
        rows = sample_per_class(rows, per_class, seed=seed)
        info["per_class"] = per_class
    elif design.sizes is not None:
        rows = sample_split_sizes(rows, design.sizes, seed=seed)
        info["sizes"] = dict(design.sizes)
    if shots is not None:
        rows = few_shot(rows, shots, seed=seed)
        info["shots"] = shots
    manifest = SplitManifest.from_records(rows, seed=seed, protocol=protocol.name, dataset=dataset, design=info)
    return PreparedData(records=rows, split=manifest)
