"""Seeded patient-level splits: no patient ever lands in two splits."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence

from clinalign.data.records import Record
from clinalign.errors import ConfigError


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
    normalised). With ``stratify``, patients are dealt per majority label so every split gets a similar
    class mix. Returns new records (input order kept) with ``split`` set; same input and seed give the
    same split.
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
    if not fractions or any(not isinstance(v, (int, float)) or v < 0 for v in fractions.values()):
        raise ConfigError(f"fractions must map split names to non-negative numbers, got {fractions}.")
    total = float(sum(fractions.values()))
    if total <= 0:
        raise ConfigError(f"fractions must not all be zero, got {fractions}.")
    names = list(fractions)
    weights = [fractions[n] / total for n in names]

    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[record.patient_id if record.patient_id is not None else f"\0record:{record.id}"].append(index)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, indices in groups.items():
        labels = [records[i].label for i in indices]
        key = max(sorted(set(labels)), key=labels.count) if stratify else ""
        strata[key].append(patient)

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
    out = list(records)
    for patient, indices in groups.items():
        for i in indices:
            out[i] = dataclasses.replace(records[i], split=assignment[patient])
    return out
