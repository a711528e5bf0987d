"""What the evaluation checks read: generated sets (the manifests ``score-cas`` reads), real image lists,
and evaluator embeddings of both.

Generated sets go through :func:`clinalign.scoring.sets.read_generated_set`, so one ``clinalign generate``
output feeds CAS and every check. Real sets only need an image column (and a label for the checks that
group by class); prompts and checklists are not required here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clinalign.errors import ConfigError, DataError
from clinalign.scoring.sets import ImageSet, read_generated_set


class _AnyChecklist(dict):
    """A checklist mapping that accepts every label: the evaluation checks never read t_c, so a generated
    set without checklists must not fail the way it does for CAS."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return ""


@dataclass
class MethodImages:
    """A method's images pooled over its seeds (runs), with where each came from."""

    name: str
    sets: list[ImageSet]
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    ref_ids: list[str | None] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def read_methods(methods: dict[str, list[str]], *, check_images: bool = True) -> dict[str, MethodImages]:
    """Read every method's generated sets (``clinalign generate`` directories or manifests)."""
    if not methods:
        raise ConfigError("no methods to evaluate: give at least one generated set.")
    out: dict[str, MethodImages] = {}
    for name, paths in methods.items():
        if not paths:
            raise ConfigError(f"method '{name}' has no generated sets.")
        group = MethodImages(name=name, sets=[])
        for path in paths:
            image_set = read_generated_set(path, name=name, checklists=_AnyChecklist(), check_images=check_images)
            group.sets.append(image_set)
            group.paths += image_set.paths
            group.labels += image_set.labels
            group.prompts += image_set.prompts
            group.ref_ids += image_set.ref_ids if image_set.ref_ids is not None else [None] * len(image_set)
            group.ids += image_set.ids
            group.sources += [str(image_set.source)] * len(image_set)
        out[name] = group
    return out


@dataclass
class RealImages:
    """Real images from a manifest: paths, labels (``""`` when the manifest has none), ids, line numbers."""

    source: Path
    paths: list[Path]
    labels: list[str]
    ids: list[str]
    rows: list[int]
    prompts: list[str | None]

    def __len__(self) -> int:
        return len(self.paths)


def read_real_images(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    require_labels: bool = False,
    what: str = "--real",
) -> RealImages:
    """Read a real image manifest (CSV/TSV/JSONL with ``image``; ``label``, ``id``, ``split``, ``t_ep`` optional).

    Relative image paths resolve against ``image_root`` (default: the manifest's folder, falling back to
    the working directory as ``score-cas`` does). Rows are filtered to ``split`` when given.
    """
    from clinalign.data.enriched import prompt_of
    from clinalign.data.manifest import manifest_rows

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found. Check {what}.")
    root = Path(image_root) if image_root is not None else path.parent
    out = RealImages(source=path, paths=[], labels=[], ids=[], rows=[], prompts=[])
    for line, row in manifest_rows(path):
        where = f"{path}, line {line}"
        if split is not None and (row.get("split") or None) != split:
            continue
        image_field = row.get("image") or row.get("file")
        if not image_field or not str(image_field).strip():
            raise DataError(f"{where}: missing 'image' (the image path).")
        image = Path(str(image_field))
        if not image.is_absolute():
            image = root / image if (root / image).is_file() or not image.is_file() else image.resolve()
        if not image.is_file():
            raise DataError(f"{where}: image '{image_field}' not found (looked for {image}).")
        label = str(row.get("label") or "").strip()
        if require_labels and not label:
            raise DataError(f"{where}: missing 'label'; this check groups images by class.")
        prompt = prompt_of(row, where)
        out.paths.append(image)
        out.labels.append(label)
        out.ids.append(str(row.get("id") or image_field))
        out.rows.append(line)
        out.prompts.append(str(prompt) if prompt else None)
    if not out.paths:
        where = f" with split '{split}'" if split is not None else ""
        raise DataError(f"{path}: the manifest has no rows{where} ({what}).")
    return out


def load_evaluator(name: str, *, device: str | None = None, dtype: str = "fp32") -> Any:
    """A critic by hub id, local directory or ``open_clip:<name>`` (any critic can be the encoder)."""
    from clinalign.critics import load_critic

    return load_critic(name, device=device, dtype=dtype)


class EmbeddingCache:
    """Image embeddings of one critic kept by resolved file path, so several checks in one process (the
    quickstart runs four) embed each image once; embeddings computed elsewhere (a probe's cache) can be added.

    With ``store`` (a :class:`~clinalign.critics.cache.EmbeddingStore` of the same critic, e.g. the folder
    ``probe train`` and ``score-cas`` use), images missing here are read from disk or, when new there too,
    encoded and added to it, so the checks share embeddings with the other commands."""

    def __init__(self, critic: Any, *, store: Any | None = None) -> None:
        self.critic = critic
        self.store = store
        self._rows: dict[Path, torch.Tensor] = {}

    def __getattr__(self, name: str) -> Any:
        # everything else (name, encode_texts, image_size, ...) is the critic's, so a cache stands in for it
        return getattr(self.critic, name)

    def add(self, paths: Sequence[Path], embeddings: torch.Tensor) -> None:
        if len(paths) != embeddings.shape[0]:
            raise DataError(f"{len(paths)} paths but {embeddings.shape[0]} embeddings.")
        for path, row in zip(paths, embeddings.float(), strict=True):
            self._rows[Path(path).resolve()] = row

    def embed(self, paths: Sequence[Path], *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        from clinalign.critics.embed import embed_image_files

        keys = [Path(p).resolve() for p in paths]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing and self.store is not None:
            self.add(missing, self.store.embed_files(missing, batch_size=batch_size, progress=progress))
        elif missing:
            self.add(missing, embed_image_files(self.critic, missing, batch_size=batch_size, progress=progress))
        if not keys:
            return torch.zeros(0, getattr(self.critic, "embed_dim", 0))
        return torch.stack([self._rows[k] for k in keys])


def embed_paths(critic: Any, paths: Sequence[Path], *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """Image embeddings [N,D] (float32, CPU) of image files with a critic, or through an
    :class:`EmbeddingCache` passed in its place."""
    if isinstance(critic, EmbeddingCache):
        return critic.embed(paths, batch_size=batch_size, progress=progress)
    from clinalign.critics.embed import embed_image_files

    return embed_image_files(critic, list(paths), batch_size=batch_size, progress=progress).float()
