"""Seeded patient-level splits: no patient ever lands in two splits."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence

from clinalign.data.records import Record
from clinalign.errors import ConfigError


def patient_key(record: Record) -> str:
    """The group :func:`patient_split` keeps together: the patient id (a record without one is its own group)."""
    return record.patient_id if record.patient_id is not None else f"\0record:{record.id}"


def _majority(labels: str | tuple[str, int] | Counter[str]) -> str:
    if isinstance(labels, str):
        return labels
    if isinstance(labels, tuple):
        return labels[0]
    return max(sorted(labels), key=lambda label: labels[label])


def patient_split_map(
    records: Iterable[Record],
    fractions: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, str]:
    """The split of every patient (:func:`patient_key` -> split name) that :func:`patient_split` assigns.

    ``records`` is read once, as a stream: memory holds one entry per patient (its labels), not the
    records, so a dataset can be split in one pass and the records assigned in another
    (:func:`assign_splits`).
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
    if not fractions or any(not isinstance(v, (int, float)) or v < 0 for v in fractions.values()):
        raise ConfigError(f"fractions must map split names to non-negative numbers, got {fractions}.")
    total = float(sum(fractions.values()))
    if total <= 0:
        raise ConfigError(f"fractions must not all be zero, got {fractions}.")
    names = list(fractions)
    weights = [fractions[n] / total for n in names]

    # patient -> the label of its records while they share one (label, or (label, count) from the second
    # record on), a Counter once they differ; labels are interned so a patient costs its key and a reference
    labels_of: dict[str, str | tuple[str, int] | Counter[str]] = {}
    interned: dict[str, str] = {}
    for record in records:
        patient = patient_key(record)
        label = interned.setdefault(record.label, record.label) if stratify else ""
        held = labels_of.get(patient)
        if held is None:
            labels_of[patient] = label
        elif isinstance(held, str):
            labels_of[patient] = (label, 2) if held == label else Counter((held, label))
        elif isinstance(held, tuple):
            labels_of[patient] = (label, held[1] + 1) if held[0] == label else Counter({held[0]: held[1], label: 1})
        else:
            held[label] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, labels in labels_of.items():
        strata[_majority(labels)].append(patient)

    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for key in sorted(strata):
        patients = sorted(strata[key])
        rng.shuffle(patients)
        # largest-remainder rounding of the per-split patient counts
        quotas = [w * len(patients) for w in weights]
        counts = [math.floor(q) for q in quotas]
        for i in sorted(range(len(names)), key=lambda i: quotas[i] - counts[i], reverse=True)[
            : len(patients) - sum(counts)
        ]:
            counts[i] += 1
        start = 0
        for name, count in zip(names, counts, strict=True):
            for patient in patients[start : start + count]:
                assignment[patient] = name
            start += count
    return assignment


def assign_splits(records: Iterable[Record], assignment: Mapping[str, str]) -> Iterator[Record]:
    """``records`` with ``split`` set from a :func:`patient_split_map` (lazily, one record at a time)."""
    for record in records:
        yield dataclasses.replace(record, split=assignment[patient_key(record)])


def patient_split(
    records: Sequence[Record],
    fractions: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
    stratify: bool = True,
) -> list[Record]:
    """Assign a split to every record so that all images of one patient share a split.

    Patients (records without ``patient_id`` count as their own patient) are shuffled with ``seed``
    and dealt to the splits in proportion to ``fractions`` (default train 0.8 / val 0.1 / test 0.1,
    normalised). With ``stratify``, patients are dealt per majority label (ties: the first label in
    sorted order) so every split gets a similar class mix. Returns new records (input order kept) with
    ``split`` set; same input and seed give the same split. The streaming form is
    :func:`patient_split_map` + :func:`assign_splits` (same assignment).
    """
    assignment = patient_split_map(records, fractions, seed=seed, stratify=stratify)
    return list(assign_splits(records, assignment))
