"""The one record type every dataset adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Record:
    """One labelled image.

    Attributes:
        id: stable identifier, unique within a dataset (used to resume and to pair generated images
            with the real image they re-synthesise).
        image: path to the image file.
        label: class name.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` when the source has no split.
        patient_id: patient identifier when known (splits must not share patients).
        metadata: any other source fields (kept as-is, JSON-serialisable).
    """

    id: str
    image: Path
    label: str
    split: str | None = None
    patient_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": str(self.image),
            "label": self.label,
            "split": self.split,
            "patient_id": self.patient_id,
            "metadata": dict(self.metadata),
        }
