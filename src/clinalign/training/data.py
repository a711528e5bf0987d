"""Training rows: real image + enriched prompt + class checklist + label, and their deterministic order."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clinalign.errors import DataError


@dataclass(frozen=True)
class TrainExample:
    """One training row.

    Attributes:
        id: row identifier (``id`` field, else the image path, else the row number).
        image: image path or an in-memory PIL image.
        prompt: the enriched prompt t_ep the model is conditioned on.
        checklist: the class checklist t_c ("" when no checklist was given).
        label: class name or index.
    """

    id: str
    image: Path | Image.Image | None
    prompt: str
    checklist: str
    label: str | int


def load_checklists(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """Class -> checklist text, from a JSON/YAML file or a mapping: :func:`clinalign.data.enriched.checklist_texts`."""
    from clinalign.data.enriched import checklist_texts

    return checklist_texts(source)


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = row.get(key)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def load_examples(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    checklists: Mapping[str, str] | None = None,
    prompt_template: str = "{label}",
    require_checklist: bool = False,
    what: str = "train_data",
    split: str | None = None,
) -> list[TrainExample]:
    """Read rows from an enriched JSONL, a manifest (CSV/TSV/JSONL) or a sequence of dicts.

    Field names: ``image`` (path, relative to the file's folder, or PIL image), ``label``, ``prompt``
    or ``t_ep`` (else ``prompt_template`` with the label), ``checklist`` or ``t_c`` (else the
    ``checklists`` entry for the label), optional ``id``. With ``split``, only rows of that split are
    kept (see :func:`clinalign.data.subsets.rows_of_split`).
    """
    from clinalign.data.enriched import checklist_of, iter_enriched_rows, prompt_of

    root: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: {what} file not found. Check the path.")
        root = path.parent if path.is_file() else None
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson") or path.is_dir():
            # the one enriched-row reader (a file, or an enrich output folder with its part files); a torn or
            # malformed line is an error naming it, never a silently lost row
            rows: list[Mapping[str, Any]] = [row for _, _, row in iter_enriched_rows(path)]
        elif suffix in (".csv", ".tsv"):
            import csv

            with open(path, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        else:
            raise DataError(f"{path}: unsupported {what} type '{suffix}'. Use an enriched .jsonl or a .csv manifest.")
        where = str(path)
    else:
        rows = list(source)
        where = what
    if split is not None:
        from clinalign.data.subsets import rows_of_split

        rows = rows_of_split(rows, split, source=source if isinstance(source, (str, os.PathLike)) else None)
    if not rows:
        raise DataError(f"{where}: no rows.")
    checklists = dict(checklists or {})
    examples: list[TrainExample] = []
    templated = 0
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DataError(
                f"{where}, row {number}: expected a mapping with image/prompt/label, got {type(row).__name__}."
            )
        label = _first(row, "label")
        if label is None:
            raise DataError(f"{where}, row {number}: missing 'label'. Every training row needs its class.")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        label = label if isinstance(label, int) else str(label).strip()
        image = _first(row, "image", "image_path", "path")
        if image is None:
            raise DataError(
                f"{where}, row {number}: missing 'image'. "
                "Training needs the real image (diffusion loss, SFS reference)."
            )
        if not isinstance(image, Image.Image):
            image_path = Path(str(image)).expanduser()
            if not image_path.is_absolute() and root is not None:
                image_path = root / image_path
            if not image_path.is_file():
                raise DataError(f"{where}, row {number}: image '{image}' not found (looked for {image_path}).")
            image = image_path
        prompt = prompt_of(row, f"{where}, row {number}")
        if prompt is None:
            prompt = prompt_template.format(label=label)
            templated += 1
        checklist = checklist_of(row, f"{where}, row {number}")
        if checklist is None:
            checklist = checklists.get(str(label))
        if checklist is None:
            if require_checklist:
                known = sorted(checklists) or "none given"
                raise DataError(
                    f"{where}, row {number}: no checklist for label '{label}' (no 'checklist'/'t_c' field; "
                    f"checklists file has: {known}). Pass `checklists` (class -> t_c) or drop the 'ccs' reward."
                )
            checklist = ""
        row_id = _first(row, "id")
        if row_id is None:
            row_id = str(image) if not isinstance(image, Image.Image) else f"row-{number}"
        examples.append(
            TrainExample(id=str(row_id), image=image, prompt=str(prompt), checklist=str(checklist), label=label)
        )
    if templated:
        warnings.warn(
            f"{where}: {templated} of {len(rows)} rows have no enriched prompt ('prompt'/'t_ep'); used "
            f"prompt_template {prompt_template!r}. Run `clinalign enrich` for CRAFT's enriched prompts.",
            UserWarning,
            stacklevel=2,
        )
    return examples


def class_names_for(examples: Sequence[TrainExample], given: Sequence[str] | None = None) -> list[str] | None:
    """The class list labels index into: ``given`` (e.g. a DD probe's), else sorted names in the data.

    Returns ``None`` when all labels are already integer indices and no list is given.
    """
    if given is not None:
        names = [str(c) for c in given]
        unknown = sorted({str(e.label) for e in examples if isinstance(e.label, str)} - set(names))
        if unknown:
            raise DataError(
                f"labels {unknown} are not among the classes {names} (from the DD probe). "
                "Use the probe trained on this dataset's classes."
            )
        return names
    if all(isinstance(e.label, int) for e in examples):
        return None
    return sorted({str(e.label) for e in examples})


def label_indices(examples: Sequence[TrainExample], class_names: Sequence[str] | None) -> torch.Tensor:
    """LongTensor [N] of class indices for ``examples``."""
    out = []
    for e in examples:
        if isinstance(e.label, int):
            out.append(e.label)
        elif class_names is None:
            raise DataError(f"label '{e.label}' is a name but no class list is known.")
        else:
            try:
                out.append(list(class_names).index(e.label))
            except ValueError as exc:
                raise DataError(f"label '{e.label}' is not among the classes {list(class_names)}.") from exc
    return torch.tensor(out, dtype=torch.long)


def load_pixels(examples: Sequence[TrainExample], resolution: int) -> torch.Tensor:
    """Real images as float [B,3,R,R] in [0,1] (centre-cropped and resized to ``resolution``)."""
    from clinalign.data import load_image
    from clinalign.data.images import pil_to_tensor

    tensors = []
    for e in examples:
        image = e.image if isinstance(e.image, Image.Image) else load_image(e.image)
        tensors.append(pil_to_tensor(image.convert("RGB"), resolution))
    return torch.stack(tensors)


class MicroBatchOrder:
    """Which rows each process sees at each micro-step: a pure function of (seed, micro-step, rank).

    The row stream is a fresh seeded permutation per epoch, cut into global batches of
    ``batch_size × world_size`` (an incomplete last global batch of an epoch is dropped); process
    ``rank`` takes its slice. Because nothing depends on iteration history, resuming at any step
    reproduces the uninterrupted order exactly.
    """

    def __init__(self, num_rows: int, *, batch_size: int, world_size: int, seed: int) -> None:
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.micro_steps_per_epoch = num_rows // (batch_size * world_size)
        if self.micro_steps_per_epoch == 0:
            raise DataError(
                f"train_data has {num_rows} rows, fewer than one global batch (batch_size {batch_size} × "
                f"{world_size} processes). Lower batch_size or add rows."
            )
        self._perm_epoch = -1
        self._perm: list[int] = []

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.micro_steps_per_epoch

    def indices(self, micro_step: int, rank: int) -> list[int]:
        epoch = self.epoch_of(micro_step)
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_rows, generator=generator).tolist()
            self._perm_epoch = epoch
        position = micro_step % self.micro_steps_per_epoch
        start = (position * self.world_size + rank) * self.batch_size
        return self._perm[start : start + self.batch_size]
