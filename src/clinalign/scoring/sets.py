"""Reading what CAS scores: generated sets (``clinalign generate`` manifests), the real test set, checklists.

Readers are tolerant about layout (a directory or the manifest itself, ``prompt`` or ``t_ep``) and strict
about content: every error names the file and the row and says what to fix.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinalign.data.enriched import checklist_of, require_prompt
from clinalign.data.manifest import manifest_rows
from clinalign.errors import DataError
from clinalign.utils.io import read_json
from clinalign.utils.jsonl import iter_jsonl_numbered, read_jsonl_numbered

GENERATED_MANIFEST_NAME = "manifest.jsonl"
GENERATE_CONFIG_NAME = "generate_config.json"
META_NAME = "clinalign_meta.json"


class EvaluationLeakageWarning(UserWarning):
    """The evaluator is the critic that trained the generator: CAS then measures how well it was fooled."""


@dataclass
class ImageSet:
    """Images to score with their texts.

    Attributes:
        name: display name (method name for generated sets, ``"real"`` for the reference set).
        source: the manifest it was read from.
        paths: absolute image paths.
        prompts: t_ep per image.
        checklists: t_c per image.
        labels: class name per image.
        ids: identifier per image (the manifest's ``file`` or ``id``).
        ref_ids: id of the paired real image per image, or ``None`` when the set has no pairing.
        rows: manifest line number per image (for error messages).
        seed: the generation seed, when the set records one.
        meta: the training metadata found for the set (``clinalign_meta.json``), if any.
        meta_path: where that metadata was read from.
    """

    name: str
    source: Path
    paths: list[Path]
    prompts: list[str]
    checklists: list[str]
    labels: list[str]
    ids: list[str]
    ref_ids: list[str] | None = None
    rows: list[int] = field(default_factory=list)
    seed: int | None = None
    meta: dict[str, Any] | None = None
    meta_path: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)


# ---------------------------------------------------------------------- methods


def parse_method_specs(
    generated: Sequence[str] | None, method: Sequence[str] | None, *, action: str = "score"
) -> dict[str, list[str]]:
    """Method name -> generated sets, from ``--generated DIR`` (named after the folder) and ``--method NAME=DIR``
    (a repeated NAME adds seeds of one method); the one parser of ``score-cas`` and ``evaluate``."""
    from clinalign.errors import ConfigError

    methods: dict[str, list[str]] = {}
    for path in generated or ():
        folder = Path(path)
        name = (folder.parent.name if folder.suffix == ".jsonl" else folder.name) or "generated"
        methods.setdefault(name, []).append(str(path))
    for spec in method or ():
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(
                f"--method expects NAME=DIR (e.g. --method craft=runs/craft/gen), got {spec!r}. "
                "Repeat a NAME to add seeds of the same method."
            )
        methods.setdefault(name.strip(), []).append(path.strip())
    if not methods:
        raise ConfigError(f"nothing to {action}: pass --generated DIR_OR_MANIFEST and/or --method NAME=DIR.")
    return methods


def check_methods(value: dict[str, list[str]]) -> dict[str, list[str]]:
    """The check behind every config's ``methods`` field: at least one set, named, each with paths."""
    if not value or not any(value.values()):
        raise ValueError("give at least one generated set (--generated or --method NAME=DIR)")
    for name, paths in value.items():
        if not name.strip():
            raise ValueError("method names must not be empty")
        if not paths:
            raise ValueError(f"method '{name}' has no generated sets")
    return value


# ---------------------------------------------------------------------- checklists


def read_checklists(path: str | os.PathLike[str]) -> dict[str, str]:
    """Class name -> checklist text (t_c), from JSON or YAML: :func:`clinalign.data.enriched.checklist_texts`."""
    from clinalign.data.enriched import checklist_texts

    return checklist_texts(Path(path))


def _checklist_for(row: dict[str, Any], label: str, checklists: dict[str, str] | None, where: str, path: Path) -> str:
    text = checklist_of(row, where)
    if text is not None:
        return text
    if checklists is not None and label in checklists:
        return checklists[label]
    if checklists is None:
        raise DataError(
            f"{where}: no checklist for label '{label}': the row has no 'checklist'/'t_c' field and no checklists "
            "file was given. Pass --checklists FILE (JSON/YAML mapping class name -> checklist text)."
        )
    raise DataError(
        f"{where}: label '{label}' has no entry in the checklists file (classes there: {sorted(checklists)}). "
        f"Add it to the checklists file or fix the label in {path.name}."
    )


# ---------------------------------------------------------------------- generated sets


def resolve_generated_manifest(path: str | os.PathLike[str]) -> Path:
    """A generated set's manifest from a directory (``DIR/manifest.jsonl``) or the manifest path itself."""
    path = Path(path)
    if path.is_dir():
        candidate = path / GENERATED_MANIFEST_NAME
        if not candidate.is_file():
            raise DataError(
                f"{path}: no {GENERATED_MANIFEST_NAME} in this directory. Point at the folder `clinalign generate` "
                "wrote, or at its manifest file."
            )
        return candidate
    if not path.is_file():
        raise DataError(
            f"{path}: generated set not found. Pass a directory written by `clinalign generate` or a JSONL."
        )
    return path


def _find_meta(manifest: Path, rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, Path | None]:
    """``clinalign_meta.json`` beside the manifest, or in the LoRA directory the set names."""
    candidates = [manifest.parent / META_NAME]
    lora_dirs: list[str] = []
    config_path = manifest.parent / GENERATE_CONFIG_NAME
    if config_path.is_file():
        try:
            config = read_json(config_path)
        except DataError:
            config = {}
        if isinstance(config, dict) and isinstance(config.get("lora"), str):
            lora_dirs.append(config["lora"])
    lora_dirs.extend(str(r["lora"]) for r in rows[:1] if isinstance(r.get("lora"), str))
    for lora in lora_dirs:
        lora_path = Path(lora).expanduser()
        for base in [lora_path] if lora_path.is_absolute() else [Path.cwd() / lora_path, manifest.parent / lora_path]:
            candidates.append(base / META_NAME if base.suffix != ".json" else base)
    for candidate in candidates:
        if candidate.is_file():
            meta = read_json(candidate)
            if isinstance(meta, dict):
                return meta, candidate
    return None, None


def _generation_seed(manifest: Path) -> int | None:
    config_path = manifest.parent / GENERATE_CONFIG_NAME
    if not config_path.is_file():
        return None
    try:
        config = read_json(config_path)
    except DataError:
        return None
    seed = config.get("seed") if isinstance(config, dict) else None
    return int(seed) if isinstance(seed, int) else None


@dataclass
class _GeneratedRow:
    file: str
    path: Path
    prompt: str
    checklist: str
    label: str
    ref_id: str | None
    line: int


def _generated_row(
    row: dict[str, Any],
    line: int,
    manifest: Path,
    checklists: dict[str, str] | None,
    known_labels: list[str] | None,
    check_images: bool,
) -> _GeneratedRow:
    """One validated manifest row; every error names the file and line."""
    where = f"{manifest}, line {line}"
    file = row.get("file") or row.get("image")
    if not isinstance(file, str) or not file.strip():
        raise DataError(f"{where}: missing 'file' (the image path relative to the manifest).")
    image = generated_image_path(manifest, file)
    if check_images and not image.is_file():
        raise DataError(f"{where}: image '{file}' not found (looked for {image}). Regenerate it or drop the row.")
    prompt = require_prompt(row, where, "the enriched prompt t_ep the image was generated from")
    label = _row_label(row, where, known_labels, "; CAS needs the class each image was generated for")
    ref = row.get("ref_id")
    return _GeneratedRow(
        file=str(file),
        path=image,
        prompt=prompt,
        checklist=_checklist_for(row, label, checklists, where, manifest),
        label=label,
        ref_id=None if ref is None or str(ref) == "" else str(ref),
        line=line,
    )


def generated_image_path(manifest: str | os.PathLike[str], file: str) -> Path:
    """Where a generated set's ``file`` entry (relative to the manifest, or absolute) points."""
    image = Path(file)
    return image if image.is_absolute() else Path(manifest).parent / image


def _set_name(manifest: Path, name: str | None) -> str:
    return name or (manifest.parent.name if manifest.name == GENERATED_MANIFEST_NAME else manifest.stem)


def _warn_partial_refs(manifest: Path, missing: int, total: int, first_line: int) -> None:
    warnings.warn(
        f"{manifest}: {missing} of {total} rows have no 'ref_id' (first at line {first_line}); "
        "SFS needs a reference for every image, so this set is scored without SFS.",
        UserWarning,
        stacklevel=3,
    )


def read_generated_set(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    checklists: dict[str, str] | None = None,
    known_labels: list[str] | None = None,
    check_images: bool = True,
) -> ImageSet:
    """Read a generated set written by ``clinalign generate`` (every row in memory; see
    :func:`scan_generated_set` for sets too large for that).

    Rows need ``file`` (relative to the manifest; ``image`` also accepted), ``prompt`` (or ``t_ep``) and
    ``label``; ``ref_id`` pairs a row with a real image (for SFS) and ``checklist`` (or ``t_c``) overrides
    the class checklist. With ``known_labels`` (the probe's classes), an unknown label is an error naming
    the row.
    """
    manifest = resolve_generated_manifest(path)
    numbered = read_jsonl_numbered(manifest)  # a torn or malformed line is an error naming it, never a lost row
    if not numbered:
        raise DataError(f"{manifest}: the manifest has no rows; generate images first (`clinalign generate`).")
    out = ImageSet(
        name=_set_name(manifest, name),
        source=manifest,
        paths=[],
        prompts=[],
        checklists=[],
        labels=[],
        ids=[],
        seed=_generation_seed(manifest),
    )
    ref_ids: list[str | None] = []
    for line, row in numbered:
        parsed = _generated_row(row, line, manifest, checklists, known_labels, check_images)
        out.paths.append(parsed.path)
        out.prompts.append(parsed.prompt)
        out.checklists.append(parsed.checklist)
        out.labels.append(parsed.label)
        out.ids.append(parsed.file)
        out.rows.append(line)
        ref_ids.append(parsed.ref_id)
    with_ref = sum(r is not None for r in ref_ids)
    if with_ref == len(ref_ids):
        out.ref_ids = [str(r) for r in ref_ids]
    elif with_ref:
        first = next(line for line, r in zip(out.rows, ref_ids, strict=True) if r is None)
        _warn_partial_refs(manifest, len(ref_ids) - with_ref, len(ref_ids), first)
    out.meta, out.meta_path = _find_meta(manifest, [row for _, row in numbered[:1]])
    return out


@dataclass
class GeneratedSet:
    """A generated set checked row by row without keeping its rows: what streaming scoring reads.

    :func:`scan_generated_set` validates every row in one pass over the manifest; :meth:`chunks` then
    reads it again, ``size`` rows at a time, as :class:`ImageSet` pieces. Memory does not grow with the
    number of rows.

    Attributes:
        name, source, seed, meta, meta_path: as in :class:`ImageSet`.
        n: number of rows (images).
        ref_complete: every row has a ``ref_id`` (the set can be scored with SFS).
        checklists / known_labels / check_images: how rows are validated when read again.
    """

    name: str
    source: Path
    n: int
    ref_complete: bool
    seed: int | None = None
    meta: dict[str, Any] | None = None
    meta_path: Path | None = None
    checklists: dict[str, str] | None = None
    known_labels: list[str] | None = None
    check_images: bool = True

    def __len__(self) -> int:
        return self.n

    def _rows(self) -> Iterator[_GeneratedRow]:
        for line, row in iter_jsonl_numbered(self.source):
            yield _generated_row(row, line, self.source, self.checklists, self.known_labels, self.check_images)

    def chunks(self, size: int) -> Iterator[tuple[int, ImageSet]]:
        """``(position of the first row, rows)`` pieces of at most ``size`` rows, in manifest order; a
        piece has ``ref_ids`` when the whole set has them."""
        if size < 1:
            raise DataError(f"chunk size must be >= 1, got {size}.")
        start = 0
        piece: list[_GeneratedRow] = []
        for parsed in self._rows():
            piece.append(parsed)
            if len(piece) == size:
                yield start, self._image_set(piece)
                start += len(piece)
                piece = []
        if piece:
            yield start, self._image_set(piece)
            start += len(piece)
        if start != self.n:
            raise DataError(f"{self.source}: the manifest changed while it was read ({self.n} rows, now {start}).")

    def _image_set(self, rows: list[_GeneratedRow]) -> ImageSet:
        return ImageSet(
            name=self.name,
            source=self.source,
            paths=[r.path for r in rows],
            prompts=[r.prompt for r in rows],
            checklists=[r.checklist for r in rows],
            labels=[r.label for r in rows],
            ids=[r.file for r in rows],
            ref_ids=[str(r.ref_id) for r in rows] if self.ref_complete else None,
            rows=[r.line for r in rows],
            seed=self.seed,
            meta=self.meta,
            meta_path=self.meta_path,
        )

    @property
    def paths(self) -> list[Path]:
        """Every image path (reads the manifest again; for small sets)."""
        return [r.path for r in self._rows()]

    @property
    def labels(self) -> list[str]:
        """Every row's class (reads the manifest again; for small sets)."""
        return [r.label for r in self._rows()]


def scan_generated_set(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    checklists: dict[str, str] | None = None,
    known_labels: list[str] | None = None,
    check_images: bool = True,
    reference_ids: Container[str] | None = None,
    reference_source: str | os.PathLike[str] | None = None,
) -> GeneratedSet:
    """Validate a generated set row by row, keeping no row: a :class:`GeneratedSet` to stream.

    Checks exactly what :func:`read_generated_set` checks (errors name the file and line); with
    ``reference_ids`` (the real test set's ids, read from ``reference_source``) every ``ref_id`` must be
    one of them.
    """
    manifest = resolve_generated_manifest(path)
    n = with_ref = 0
    first_without: int | None = None
    first_row: list[dict[str, Any]] = []
    for line, row in iter_jsonl_numbered(manifest):  # a torn or malformed line is an error naming it
        parsed = _generated_row(row, line, manifest, checklists, known_labels, check_images)
        if not first_row:
            first_row.append(row)
        n += 1
        if parsed.ref_id is None:
            first_without = line if first_without is None else first_without
        else:
            with_ref += 1
            if reference_ids is not None and parsed.ref_id not in reference_ids:
                shown = "" if reference_source is None else f" {reference_source}"
                raise DataError(
                    f"{manifest}, line {line}: ref_id '{parsed.ref_id}' is not an id in the real test manifest{shown}. "
                    "Score against the manifest the prompts came from, or drop ref_id to score without SFS."
                )
    if not n:
        raise DataError(f"{manifest}: the manifest has no rows; generate images first (`clinalign generate`).")
    if with_ref and first_without is not None:
        _warn_partial_refs(manifest, n - with_ref, n, first_without)
    meta, meta_path = _find_meta(manifest, first_row)
    return GeneratedSet(
        name=_set_name(manifest, name),
        source=manifest,
        n=n,
        ref_complete=with_ref == n,
        seed=_generation_seed(manifest),
        meta=meta,
        meta_path=meta_path,
        checklists=checklists,
        known_labels=known_labels,
        check_images=check_images,
    )


# ---------------------------------------------------------------------- real set


def _row_label(row: dict[str, Any], where: str, known_labels: list[str] | None, missing_hint: str) -> str:
    """The row's label, checked against the probe's classes; errors name the file and row."""
    label = row.get("label")
    if label is None or str(label).strip() == "":
        raise DataError(f"{where}: missing 'label'{missing_hint}.")
    label = str(label).strip()
    if known_labels is not None and label not in known_labels:
        raise DataError(
            f"{where}: label '{label}' is not one of the probe's classes {known_labels}. Fix the label or train "
            "the evaluator probe on data that has this class."
        )
    return label


def read_real_set(
    path: str | os.PathLike[str],
    *,
    checklists: dict[str, str] | None = None,
    known_labels: list[str] | None = None,
    split: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    check_images: bool = True,
) -> ImageSet:
    """Read the real test images with their enriched prompts.

    Accepts the generic manifest (``image``, ``label``, ``id``, ...) with a ``t_ep`` or ``prompt`` column,
    or an enriched JSONL (rows with ``id``, ``image``, ``label``, ``t_ep``). Rows are filtered to
    ``split`` when given. Relative image paths resolve against ``image_root`` (default: the manifest's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: real test manifest not found. Check --real.")
    root = Path(image_root) if image_root is not None else path.parent
    rows = manifest_rows(path)
    splits = sorted({str(row.get("split")) for _, row in rows if row.get("split") not in (None, "")})
    if split is None and len(splits) > 1:
        warnings.warn(
            f"{path}: the real manifest mixes splits {splits} and all rows are used as the real test set. "
            "τ should come from held-out images only: pass --real-split test (real_split='test').",
            UserWarning,
            stacklevel=2,
        )
    out = ImageSet(name="real", source=path, paths=[], prompts=[], checklists=[], labels=[], ids=[])
    seen: dict[str, int] = {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if split is not None and (row.get("split") or None) != split:
            continue
        image_field = row.get("image") or row.get("file")
        if not image_field or not str(image_field).strip():
            raise DataError(f"{where}: missing 'image' (the path of the real test image).")
        image = Path(str(image_field))
        if not image.is_absolute():
            # enriched JSONL rows keep the path the dataset adapter saw, often relative to where
            # `clinalign enrich` ran: fall back to the working directory when the manifest's folder has no such file
            image = root / image if (root / image).is_file() or not image.is_file() else image.resolve()
        if check_images and not image.is_file():
            raise DataError(f"{where}: image '{image_field}' not found (looked for {image}).")
        label = _row_label(row, where, known_labels, "")
        prompt = require_prompt(row, where, "the real set needs each image's enriched prompt")
        record_id = str(row.get("id") or image_field)
        if record_id in seen:
            raise DataError(f"{where}: duplicate id '{record_id}' (first at line {seen[record_id]}).")
        seen[record_id] = line
        out.paths.append(image)
        out.prompts.append(prompt)
        out.checklists.append(_checklist_for(row, label, checklists, where, path))
        out.labels.append(label)
        out.ids.append(record_id)
        out.rows.append(line)
    if not out.paths:
        where = f" with split '{split}'" if split is not None else ""
        raise DataError(f"{path}: the real manifest has no rows{where}.")
    # real images are their own references: SFS = cos(x, x) = 1
    out.ref_ids = list(out.ids)
    return out


# ---------------------------------------------------------------------- role separation


def training_critics(meta: dict[str, Any] | None) -> list[Any]:
    """The critics recorded as having trained a generator (identity dicts with a fingerprint, or names).

    Read through :class:`clinalign.artifacts.ArtifactMeta`, the type trainers write, so the fingerprints
    (``training_critic_identities``) are seen and a local copy of the training critic is caught.
    """
    from clinalign.artifacts import ArtifactMeta

    if not meta:
        return []
    return ArtifactMeta.from_dict(meta).critic_records()


def check_leakage(evaluator: Any, image_set: ImageSet | GeneratedSet) -> str | None:
    """A warning message when ``image_set`` was generated by a model trained with the evaluator, else ``None``.

    Compares by critic name, and by weights fingerprint when the metadata records one (so a local copy
    of the training critic is caught too).
    """
    from clinalign.critics.base import same_model

    for recorded in training_critics(image_set.meta):
        if same_model(evaluator, recorded):
            shown = recorded if isinstance(recorded, str) else recorded.get("name", recorded)
            return (
                f"EVALUATION LEAKAGE: set '{image_set.name}' was generated by a model trained with critic "
                f"'{shown}' (recorded in {image_set.meta_path}), and that same model is the evaluator "
                f"'{evaluator.name}'. Its CAS measures how well the generator fooled the evaluator, not clinical "
                "alignment. Score with a different evaluator (another model family)."
            )
    return None
