"""``CASScorer``: the Clinical Alignment Score of generated images, in an evaluator critic's space.

Accumulate-then-reduce like a torchmetrics metric: :meth:`CASScorer.update` takes a batch (images or
precomputed embeddings with their prompts, checklists, labels and optional references) and stores
per-image primitives; :meth:`CASScorer.compute` returns them as :class:`CASScores`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinalign.critics.base import Critic
from clinalign.errors import ConfigError, DataError
from clinalign.probe import LinearProbe
from clinalign.scoring.functional import DD_MODES, cas_from_primitives, dd_scores, row_cosine
from clinalign.utils.io import atomic_open

NO_REFERENCE_NOTE = (
    "no reference images: SFS is absent and CAS is the mean of VDC, CCS and DD (3 primitives, not 4); "
    "compare only with CAS computed the same way"
)


@dataclass
class CASScores:
    """Per-image CAS primitives of one image set.

    Attributes:
        vdc: float64 [N], cos(E_I(x), E_T(t_ep)).
        ccs: float64 [N], cos(E_I(x), E_T(t_c)).
        dd: float64 [N], 1/0 (probe predicts the label) in ``"accuracy"`` mode, p(label) in ``"probability"``.
        sfs: float64 [N] cos(E_I(x), E_I(x_ref)), or ``None`` when scored without references.
        cas: float64 [N], mean of the primitives listed in ``primitives``.
        labels: class name per image.
        predicted: the probe's predicted class name per image.
        dd_mode: how DD was computed.
        primitives: names of the primitives averaged into CAS.
        evaluator: name of the evaluator critic.
        ids: optional identifier per image (file name, record id), carried into CSV output.
        note: what a reader must know (e.g. CAS without SFS); empty when nothing.
        extra: further per-image columns carried into :meth:`rows` and CSV output (method, run, ...).
    """

    vdc: np.ndarray
    ccs: np.ndarray
    dd: np.ndarray
    sfs: np.ndarray | None
    cas: np.ndarray
    labels: list[str]
    predicted: list[str]
    dd_mode: str
    primitives: tuple[str, ...]
    evaluator: str | None = None
    ids: list[str] | None = None
    note: str = ""
    extra: dict[str, list[Any]] = field(default_factory=dict)

    higher_is_better = True

    def __len__(self) -> int:
        return int(self.cas.shape[0])

    @property
    def has_references(self) -> bool:
        return self.sfs is not None

    def primitive(self, name: str) -> np.ndarray | None:
        """One primitive (or ``"cas"``) by name."""
        if name not in ("vdc", "ccs", "dd", "sfs", "cas"):
            raise ConfigError(f"unknown score {name!r}; use vdc, ccs, dd, sfs or cas.")
        return getattr(self, name)

    def means(self) -> dict[str, float | None]:
        """Mean of each primitive and CAS (``None`` for an absent SFS)."""
        out: dict[str, float | None] = {}
        for name in ("vdc", "ccs", "dd", "sfs", "cas"):
            values = self.primitive(name)
            out[name] = None if values is None else float(np.mean(values))
        return out

    def select(self, mask: np.ndarray) -> CASScores:
        """The subset of images where ``mask`` is true (e.g. one class)."""
        return self.select_order(np.flatnonzero(np.asarray(mask, dtype=bool)))

    def select_order(self, index: Sequence[int] | np.ndarray) -> CASScores:
        """The images at positions ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        return CASScores(
            vdc=self.vdc[index],
            ccs=self.ccs[index],
            dd=self.dd[index],
            sfs=None if self.sfs is None else self.sfs[index],
            cas=self.cas[index],
            labels=[self.labels[i] for i in index],
            predicted=[self.predicted[i] for i in index],
            dd_mode=self.dd_mode,
            primitives=self.primitives,
            evaluator=self.evaluator,
            ids=None if self.ids is None else [self.ids[i] for i in index],
            note=self.note,
            extra={k: [v[i] for i in index] for k, v in self.extra.items()},
        )

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image: id, label, predicted, the primitives, CAS, plus any extra columns."""
        return list(self.iter_rows())

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """The dicts of :meth:`rows`, one at a time (for writing large sets without holding them all)."""
        for i in range(len(self)):
            row: dict[str, Any] = {key: values[i] for key, values in self.extra.items()}
            if self.ids is not None:
                row["id"] = self.ids[i]
            row.update(
                {
                    "label": self.labels[i],
                    "predicted": self.predicted[i],
                    "vdc": float(self.vdc[i]),
                    "ccs": float(self.ccs[i]),
                    "dd": float(self.dd[i]),
                    "sfs": None if self.sfs is None else float(self.sfs[i]),
                    "cas": float(self.cas[i]),
                    # in every row, so a CSV read on its own still says how CAS was computed
                    "cas_primitives": "+".join(self.primitives),
                }
            )
            yield row

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one row per image (atomically). An absent SFS is an empty cell; the ``cas_primitives``
        column says which primitives each CAS averages (``vdc+ccs+dd`` without references)."""
        path = Path(path)
        first = next(self.iter_rows(), None)
        default = ["label", "predicted", "vdc", "ccs", "dd", "sfs", "cas", "cas_primitives"]
        columns = list(first) if first is not None else default
        with atomic_open(path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for row in self.iter_rows():
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return path

    @classmethod
    def concat(cls, parts: Sequence[CASScores]) -> CASScores:
        """Join scores of several batches or sets computed the same way."""
        if not parts:
            raise DataError("nothing to concatenate: no scores.")
        first = parts[0]
        for part in parts[1:]:
            if part.primitives != first.primitives or part.dd_mode != first.dd_mode:
                raise DataError(
                    f"cannot join scores computed differently: primitives {part.primitives} vs {first.primitives}, "
                    f"dd_mode {part.dd_mode!r} vs {first.dd_mode!r}."
                )
        has_ids = all(p.ids is not None for p in parts)
        extra_keys = set.intersection(*(set(p.extra) for p in parts))
        return cls(
            vdc=np.concatenate([p.vdc for p in parts]),
            ccs=np.concatenate([p.ccs for p in parts]),
            dd=np.concatenate([p.dd for p in parts]),
            sfs=None if first.sfs is None else np.concatenate([p.sfs for p in parts]),  # type: ignore[misc]
            cas=np.concatenate([p.cas for p in parts]),
            labels=[x for p in parts for x in p.labels],
            predicted=[x for p in parts for x in p.predicted],
            dd_mode=first.dd_mode,
            primitives=first.primitives,
            evaluator=first.evaluator,
            ids=[x for p in parts for x in p.ids] if has_ids else None,  # type: ignore[union-attr]
            note=first.note,
            extra={k: [x for p in parts for x in p.extra[k]] for k in sorted(extra_keys)},
        )


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _as_indices(indices: Sequence[int] | torch.Tensor | np.ndarray, n: int) -> np.ndarray:
    values = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if values.shape != (n,) or (n and not np.issubdtype(values.dtype, np.integer)):
        raise DataError(f"indices must be {n} integers (one position per image), got shape {list(values.shape)}.")
    if n and values.min() < 0:
        raise DataError(f"indices must be >= 0, got {int(values.min())}.")
    return values.astype(np.int64)


def _ordered(parts: Sequence[CASScores], indices: Sequence[np.ndarray | None]) -> CASScores:
    """Rows of ``parts`` in the order of their set positions, each position once (padding dropped).

    A position seen twice must carry the same row (a padded shard repeats an image); different rows
    for one position mean two different images were given the same index, which is refused.
    """
    if any(i is None for i in indices):
        raise ConfigError("pass `indices` to every update() or to none of them.")
    joined = CASScores.concat(list(parts))
    positions = np.concatenate([i for i in indices if i is not None])
    order = np.argsort(positions, kind="stable")
    sorted_positions = positions[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_positions[1:] != sorted_positions[:-1]
    rows = joined.rows()
    for k in np.flatnonzero(~first):
        a, b = rows[order[k - 1]], rows[order[k]]
        if a != b:
            raise DataError(
                f"index {int(sorted_positions[k])} was given to two different images ({a.get('id', a['label'])!r} "
                f"and {b.get('id', b['label'])!r}); each image needs its own position in the set."
            )
    return joined.select_order(order[first])


def describe_cas(primitives: Sequence[str], dd_mode: str) -> str:
    """One line saying how CAS was computed, written into every output."""
    dd = "DD = 1 if the probe predicts the label else 0" if dd_mode == "accuracy" else "DD = probe p(label)"
    names = ", ".join(p.upper() for p in primitives)
    return f"CAS = mean of {len(primitives)} primitives ({names}); {dd}"


class CASScorer:
    """Clinical Alignment Score of images in an evaluator critic's space.

    Args:
        evaluator: the evaluation critic; use a different model from the one that trained the generator.
        probe: a :class:`LinearProbe` fitted on the evaluator's embeddings of real training images.
        dd_mode: ``"accuracy"`` (DD = 1 when the probe predicts the label, else 0) or ``"probability"``.
        batch_size: images per evaluator forward pass.

    Per image: VDC = cos(E_I(x), E_T(t_ep)), CCS = cos(E_I(x), E_T(t_c)), DD from the probe,
    SFS = cos(E_I(x), E_I(x_ref)) when references are given, CAS = mean of the available primitives.
    Text embeddings are cached by the critic; image embeddings are computed under ``no_grad``.

    Example::

        scorer = CASScorer(load_critic("google/siglip-base-patch16-224"), LinearProbe.load("probes/siglip"))
        scores = scorer.score(images, prompts, checklists, labels, references=real_images)
        scores.cas.mean(), scores.to_csv("per_image.csv")
    """

    higher_is_better = True
    is_differentiable = False

    def __init__(self, evaluator: Critic, probe: LinearProbe, *, dd_mode: str = "accuracy", batch_size: int = 32):
        if dd_mode not in DD_MODES:
            raise ConfigError(f"dd_mode must be one of {list(DD_MODES)}, got {dd_mode!r}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        # DD must use a probe in the evaluator's own space (checked by weights fingerprint, then name)
        probe.check_critic(evaluator, role="evaluator")
        self.evaluator = evaluator
        self.probe = probe.eval()
        self.dd_mode = dd_mode
        self.batch_size = int(batch_size)
        self._reference_cache: dict[str, torch.Tensor] = {}
        self.reset()

    # ------------------------------------------------------------------ embedding
    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluator embeddings of images [N,3,H,W] in [0,1], in batches, no grad -> float32 [N,D] on CPU."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"images must be a tensor [N,3,H,W] in [0,1], got {shape}.")
        chunks = [
            self.evaluator.encode_images(images[start : start + self.batch_size]).cpu()
            for start in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.evaluator.embed_dim)

    def cache_references(self, ids: Sequence[str], references: torch.Tensor) -> None:
        """Embed reference images once (or take precomputed [N,D] embeddings) and keep them by id."""
        embeddings = self._reference_embeddings(references, len(ids))
        for key, row in zip(ids, embeddings, strict=True):
            self._reference_cache[str(key)] = row

    def cached_references(self, ids: Sequence[str]) -> torch.Tensor:
        """Cached reference embeddings [N,D] for ``ids``; an unknown id is a :class:`DataError`."""
        missing = [str(i) for i in ids if str(i) not in self._reference_cache]
        if missing:
            raise DataError(
                f"no cached reference for ids {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                "add them with cache_references() first."
            )
        return torch.stack([self._reference_cache[str(i)] for i in ids])

    def _reference_embeddings(self, references: torch.Tensor, n: int) -> torch.Tensor:
        if not isinstance(references, torch.Tensor):
            raise DataError(
                f"references must be images [N,3,H,W] or embeddings [N,D], got {type(references).__name__}."
            )
        if references.shape[0] != n:
            raise DataError(f"got {references.shape[0]} references for {n} images; they must pair one to one.")
        if references.dim() == 4:
            return self.embed_images(references)
        if references.dim() == 2 and references.shape[1] == self.evaluator.embed_dim:
            return references.detach().float().cpu()
        raise DataError(
            f"references must be images [N,3,H,W] or evaluator embeddings [N,{self.evaluator.embed_dim}], "
            f"got shape {list(references.shape)}."
        )

    # ------------------------------------------------------------------ accumulate / reduce
    def reset(self) -> None:
        """Forget accumulated scores (cached text and reference embeddings are kept)."""
        self._parts: list[CASScores] = []
        self._indices: list[np.ndarray | None] = []

    def update(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        checklists: Sequence[str],
        labels: Sequence[str | int] | torch.Tensor,
        references: torch.Tensor | None = None,
        *,
        ids: Sequence[str] | None = None,
        extra: dict[str, Sequence[Any]] | None = None,
        indices: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> CASScores:
        """Score a batch of images [B,3,H,W] in [0,1] and accumulate it; returns the batch's scores.

        ``references`` are the paired real images [B,3,H,W] (or their evaluator embeddings [B,D]).
        ``indices`` are the images' positions in the whole set (int [B]); needed when several processes
        score shards of one set, so :meth:`compute` can put the gathered rows back in order and drop
        the duplicates a sampler adds to even out the last shard.
        """
        n = images.shape[0] if isinstance(images, torch.Tensor) else len(images)
        self._check_lengths(n, prompts, checklists, labels, ids, extra)
        embeddings = self.embed_images(images)
        return self.update_from_embeddings(
            embeddings, prompts, checklists, labels, references, ids=ids, extra=extra, indices=indices
        )

    @torch.no_grad()
    def update_from_embeddings(
        self,
        image_embeddings: torch.Tensor,
        prompts: Sequence[str],
        checklists: Sequence[str],
        labels: Sequence[str | int] | torch.Tensor,
        references: torch.Tensor | None = None,
        *,
        ids: Sequence[str] | None = None,
        extra: dict[str, Sequence[Any]] | None = None,
        indices: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> CASScores:
        """Like :meth:`update`, from evaluator image embeddings [B,D] computed elsewhere."""
        n = int(image_embeddings.shape[0])
        self._check_lengths(n, prompts, checklists, labels, ids, extra)
        positions = None if indices is None else _as_indices(indices, n)
        if image_embeddings.dim() != 2 or image_embeddings.shape[1] != self.evaluator.embed_dim:
            raise DataError(
                f"image embeddings must be [N,{self.evaluator.embed_dim}] from the evaluator, "
                f"got {list(image_embeddings.shape)}."
            )
        targets = self._label_indices(labels)
        image_embeddings = image_embeddings.detach().float().cpu()
        t_ep = self.evaluator.encode_texts(list(prompts)).cpu()
        t_c = self.evaluator.encode_texts(list(checklists)).cpu()
        vdc = row_cosine(image_embeddings, t_ep)
        ccs = row_cosine(image_embeddings, t_c)
        log_probs = self.probe.log_prob(image_embeddings).float().cpu()
        dd = dd_scores(log_probs, targets, mode=self.dd_mode)
        sfs = None
        if references is not None:
            sfs = row_cosine(image_embeddings, self._reference_embeddings(references, n))
        primitives = {"vdc": vdc.numpy(), "ccs": ccs.numpy(), "dd": dd.numpy()}
        if sfs is not None:
            primitives["sfs"] = sfs.numpy()
        names = self.probe.class_names
        part = CASScores(
            vdc=primitives["vdc"].astype(np.float64),
            ccs=primitives["ccs"].astype(np.float64),
            dd=primitives["dd"].astype(np.float64),
            sfs=None if sfs is None else primitives["sfs"].astype(np.float64),
            cas=cas_from_primitives(primitives),
            labels=[names[int(i)] for i in targets],
            predicted=[names[int(i)] for i in log_probs.argmax(dim=-1)],
            dd_mode=self.dd_mode,
            primitives=tuple(primitives),
            evaluator=self.evaluator.name,
            ids=None if ids is None else [str(i) for i in ids],
            note="" if sfs is not None else NO_REFERENCE_NOTE,
            extra={k: list(v) for k, v in (extra or {}).items()},
        )
        if self._parts and self._parts[0].primitives != part.primitives:
            raise DataError(
                "some batches came with references and others without; a set must be scored one way so every "
                "image's CAS averages the same primitives. Pass references for all batches or for none."
            )
        self._parts.append(part)
        self._indices.append(positions)
        return part

    def compute(self, *, sync: bool | None = None) -> CASScores:
        """All accumulated per-image scores.

        Args:
            sync: gather the rows of every process of a ``torch.distributed`` job (default: whenever one
                with several processes is running). Every process must call ``compute`` then; each
                gets the whole set, ordered by the ``indices`` given to :meth:`update`, with the
                duplicates of padded shards dropped, so the result equals a single-process run.
        """
        if sync is None:
            sync = _world_size() > 1
        if not sync:
            if not self._parts:
                raise DataError("CASScorer.compute() called before any update(); there is nothing to score.")
            if any(i is not None for i in self._indices):
                return _ordered(self._parts, self._indices)
            return CASScores.concat(self._parts)
        return self._synced()

    def _synced(self) -> CASScores:
        import torch.distributed as dist

        if any(i is None for i in self._indices):
            raise ConfigError(
                "CASScorer.compute() gathers the rows of several processes, but some update() calls had no "
                "`indices`: pass each image's position in the whole set (indices=...) so the gathered rows "
                "can be ordered and padding duplicates dropped, or call compute(sync=False) for this process's rows."
            )
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self._parts, self._indices))
        parts = [p for rank_parts, _ in gathered for p in rank_parts]
        indices = [i for _, rank_indices in gathered for i in rank_indices]
        if not parts:
            raise DataError("CASScorer.compute() called before any update() on every process; nothing to score.")
        return _ordered(parts, indices)

    def score(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        checklists: Sequence[str],
        labels: Sequence[str | int] | torch.Tensor,
        references: torch.Tensor | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> CASScores:
        """Score a whole set at once (does not touch what :meth:`update` accumulated)."""
        saved = self._parts, self._indices
        self.reset()
        try:
            self.update(images, prompts, checklists, labels, references, ids=ids)
            return self.compute(sync=False)
        finally:
            self._parts, self._indices = saved

    # ------------------------------------------------------------------ checks
    def _label_indices(self, labels: Sequence[str | int] | torch.Tensor) -> torch.Tensor:
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        indices = []
        for i, label in enumerate(labels):
            try:
                indices.append(self.probe.index_of(label))
            except DataError:
                raise DataError(
                    f"labels[{i}] = {label!r} is not one of the probe's classes {self.probe.class_names}. Fix the "
                    "label or train the probe on data that has this class."
                ) from None
        return torch.tensor(indices, dtype=torch.long)

    @staticmethod
    def _check_lengths(
        n: int,
        prompts: Sequence[str],
        checklists: Sequence[str],
        labels: Sequence[Any] | torch.Tensor,
        ids: Sequence[str] | None,
        extra: dict[str, Sequence[Any]] | None,
    ) -> None:
        if isinstance(prompts, str) or isinstance(checklists, str):
            raise DataError("prompts and checklists must be lists of strings (one per image), not a single string.")
        counts = {"images": n, "prompts": len(prompts), "checklists": len(checklists), "labels": len(labels)}
        if ids is not None:
            counts["ids"] = len(ids)
        for key, values in (extra or {}).items():
            counts[key] = len(values)
        if len(set(counts.values())) != 1:
            listed = ", ".join(f"{k}={v}" for k, v in counts.items())
            raise DataError(f"mismatched counts: {listed}; every image needs exactly one of each.")
        if n == 0:
            raise DataError("empty batch: no images to score.")
