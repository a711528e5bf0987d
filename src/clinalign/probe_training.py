"""Train a DD linear probe on a critic's embeddings of real labelled images (``clinalign probe train``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clinalign.critics.base import Critic
from clinalign.critics.cache import EmbeddingStore
from clinalign.critics.embed import embed_image_files
from clinalign.data.records import Record
from clinalign.errors import DataError
from clinalign.probe import LinearProbe


@dataclass
class ProbeTrainingResult:
    """What :func:`train_probe` produced.

    Attributes:
        probe: the fitted probe (also saved to ``out_dir``).
        out_dir: where it was saved.
        train_accuracy / val_accuracy: accuracies on the training and held-out images (``None`` without val).
        n_train / n_val: numbers of images used.
    """

    probe: LinearProbe
    out_dir: Path
    train_accuracy: float
    val_accuracy: float | None
    n_train: int
    n_val: int


def split_for_validation(
    records: Sequence[Record], *, val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Hold out ``val_fraction`` of the records, by patient when patient ids are known (no patient in both)."""
    records = list(records)
    if val_fraction <= 0:
        return records, []
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.patient_id or f"__record__{record.id}", []).append(record)
    keys = sorted(groups)
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val_target = max(1, round(val_fraction * len(records)))
    train, val = [], []
    for index in order:
        (val if len(val) < n_val_target else train).extend(groups[keys[index]])
    if not train:
        raise DataError(f"val_fraction={val_fraction} leaves no training images out of {len(records)}.")
    return train, val


def _cached_embeddings(
    critic: Critic, records: Sequence[Record], store: EmbeddingStore | None, **kwargs
) -> torch.Tensor:
    """Embed records' images, reading back those the store already holds for this critic."""
    paths = [r.image for r in records]
    if store is None:
        return embed_image_files(critic, paths, **kwargs)
    return store.embed_files(paths, **kwargs)


def train_probe(
    critic: Critic,
    train_records: Sequence[Record],
    out_dir: str | os.PathLike[str],
    *,
    val_records: Sequence[Record] | None = None,
    class_names: Sequence[str] | None = None,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    embed_batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    embedding_cache: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> ProbeTrainingResult:
    """Embed real images with ``critic``, fit a :class:`LinearProbe`, save it to ``out_dir``.

    Embeddings are kept in an :class:`~clinalign.critics.cache.EmbeddingStore` (``out_dir/cache``, or the
    shared ``embedding_cache`` folder), so a rerun (e.g. with other epochs), ``score-cas`` and the
    evaluation checks skip the encoder for images already embedded with this critic.
    Class names default to the sorted labels of the training records.
    """
    if not train_records:
        raise DataError("no training images: the manifest selection is empty.")
    out = Path(out_dir)
    names = list(class_names) if class_names is not None else sorted({r.label for r in train_records})
    known = set(names)
    for role, records in (("training", train_records), ("validation", val_records or [])):
        for record in records:
            if record.label not in known:
                raise DataError(
                    f"{role} image '{record.id}' has label '{record.label}', which is not among the classes {names}."
                )
    if len(names) < 2:
        raise DataError(f"a probe needs at least 2 classes, the training images have {names}.")
    common = {"batch_size": embed_batch_size, "progress": progress}
    store = None
    if cache:
        store = EmbeddingStore(out / "cache" if embedding_cache is None else Path(embedding_cache), critic)
    x_train = _cached_embeddings(critic, train_records, store, **common)
    x_val = None
    if val_records:
        x_val = _cached_embeddings(critic, val_records, store, **common)
    probe = LinearProbe.fit(
        x_train,
        [r.label for r in train_records],
        names,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        critic_name=critic.name,
        critic_fingerprint=critic.fingerprint,
        val_embeddings=x_val,
        val_labels=[r.label for r in val_records] if val_records else None,
    )
    probe.save(out)
    return ProbeTrainingResult(
        probe=probe,
        out_dir=out,
        train_accuracy=probe.metrics["train_accuracy"],
        val_accuracy=probe.metrics.get("val_accuracy"),
        n_train=len(train_records),
        n_val=len(val_records or []),
    )
