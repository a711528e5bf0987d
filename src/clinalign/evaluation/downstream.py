"""``downstream``: does adding a method's synthetic images help a classifier trained on real data?

The CRAFT paper's augmentation protocol (its Table 13), in the fast form: a linear head on frozen
evaluator embeddings is trained on real training images, with a fixed fraction of every batch (default
20%) drawn from a method's generated images (labelled with the class they were generated for), at
several real-data scales (default 25%, 50%, 100% of the real training set) and seeds, and evaluated on the
real test set. A ``real_only`` row (no synthetic images) is the baseline each method is compared with.
Accuracy and macro-F1 per method × scale (mean ± std over seeds); with a ``score-cas`` summary the
correlation between method CAS and the accuracy gain over ``real_only``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from clinalign.errors import DataError
from clinalign.evaluation.common import CheckResult, SetsConfig, figure, save_figure, write_result
from clinalign.evaluation.functional import correlations
from clinalign.evaluation.inputs import embed_paths, load_evaluator, read_methods, read_real_images

REAL_ONLY = "real_only"


class DownstreamConfig(SetsConfig):
    """Settings of ``clinalign evaluate downstream`` (``real`` is the real test set the head is scored on)."""

    evaluator: str = Field(description="Frozen encoder (critic) whose embeddings the linear head reads.")
    train: str = Field(description="Real training manifest with image and label columns.")
    train_split: str | None = Field(None, description="Only use training-manifest rows with this split.")
    train_image_root: str | None = Field(None, description="Folder relative training image paths resolve against.")
    synthetic_fraction: float = Field(0.2, gt=0, lt=1, description="Share of every batch drawn from generated images.")
    scales: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0], description="Fractions of the real training set used."
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Training seeds per method × scale.")
    steps: int = Field(300, ge=1, description="Optimiser steps of the linear head.")
    head_batch_size: int = Field(64, ge=2, description="Embeddings per training batch.")
    learning_rate: float = Field(1e-2, gt=0, description="Adam learning rate of the head.")
    cas_summary: str | None = Field(None, description="score-cas summary.json: correlate CAS with the gains.")

    @field_validator("scales")
    @classmethod
    def _scales(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < s <= 1 for s in value):
            raise ValueError(f"scales must be fractions in (0, 1], got {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed")
        return value


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over the classes that occur in ``y_true`` or ``y_pred`` of 2TP / (2TP + FP + FN)."""
    scores = []
    for c in range(n_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def train_linear_head(
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    n_classes: int,
    *,
    synthetic_x: torch.Tensor | None = None,
    synthetic_y: torch.Tensor | None = None,
    synthetic_fraction: float = 0.2,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    seed: int = 0,
) -> torch.nn.Linear:
    """A linear classifier on frozen embeddings; each batch holds ``round(synthetic_fraction · batch_size)``
    synthetic rows (sampled with replacement) and real rows for the rest."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(real_x.shape[1], n_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    n_syn = 0 if synthetic_x is None else max(1, round(synthetic_fraction * batch_size))
    n_real = batch_size - n_syn
    for _ in range(steps):
        idx = torch.randint(0, real_x.shape[0], (n_real,), generator=generator)
        x, y = real_x[idx], real_y[idx]
        if synthetic_x is not None and synthetic_y is not None:
            sidx = torch.randint(0, synthetic_x.shape[0], (n_syn,), generator=generator)
            x, y = torch.cat([x, synthetic_x[sidx]]), torch.cat([y, synthetic_y[sidx]])
        loss = torch.nn.functional.cross_entropy(head(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head


def evaluate_downstream(config: DownstreamConfig, *, critic: Any = None, progress: bool = False) -> CheckResult:
    """Accuracy and macro-F1 of a linear head trained on real + synthetic embeddings, per method × scale;
    writes downstream.csv/json/png."""
    if config.real is None:
        raise DataError("downstream scores the classifier on the real test set: pass --real MANIFEST.")
    train = read_real_images(
        config.train, split=config.train_split, image_root=config.train_image_root, require_labels=True, what="--train"
    )
    test = read_real_images(config.real, split=config.real_split, image_root=config.image_root, require_labels=True)
    methods = read_methods(config.methods)
    classes = sorted(set(train.labels))
    index = {c: i for i, c in enumerate(classes)}
    for c, line in zip(test.labels, test.rows, strict=True):
        if c not in index:
            raise DataError(f"{test.source}, line {line}: label '{c}' does not occur in the training set {classes}.")
    for name, group in methods.items():
        for label, source, file in zip(group.labels, group.sources, group.ids, strict=True):
            if label not in index:
                raise DataError(
                    f"{source} ({file}): method '{name}' has label '{label}', which is not a training class {classes}."
                )
    if REAL_ONLY in methods:
        raise DataError(f"'{REAL_ONLY}' names the baseline without synthetic images; rename that method.")
    if critic is None:
        critic = load_evaluator(config.evaluator, device=config.device, dtype=config.dtype)
    embed = {"progress": progress, "batch_size": config.batch_size}
    train_x = embed_paths(critic, train.paths, **embed)
    train_y = torch.tensor([index[c] for c in train.labels])
    test_x = embed_paths(critic, test.paths, **embed)
    test_y = np.array([index[c] for c in test.labels])
    synthetic = {
        name: (embed_paths(critic, g.paths, **embed), torch.tensor([index[c] for c in g.labels]))
        for name, g in methods.items()
    }
    per_seed: list[dict[str, Any]] = []
    for scale in config.scales:
        for seed in config.seeds:
            order = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(seed))
            keep = order[: max(len(classes), round(scale * train_x.shape[0]))]
            for name in [REAL_ONLY, *methods]:
                syn_x, syn_y = synthetic.get(name, (None, None))
                head = train_linear_head(
                    train_x[keep],
                    train_y[keep],
                    len(classes),
                    synthetic_x=syn_x,
                    synthetic_y=syn_y,
                    synthetic_fraction=config.synthetic_fraction,
                    steps=config.steps,
                    batch_size=config.head_batch_size,
                    learning_rate=config.learning_rate,
                    seed=seed,
                )
                with torch.no_grad():
                    predicted = head(test_x).argmax(dim=1).numpy()
                per_seed.append(
                    {
                        "method": name,
                        "scale": scale,
                        "n_real": int(keep.numel()),
                        "seed": seed,
                        "accuracy": float(np.mean(predicted == test_y)),
                        "macro_f1": macro_f1(test_y, predicted, len(classes)),
                    }
                )
    rows: list[dict[str, Any]] = []
    for name in [REAL_ONLY, *methods]:
        for scale in config.scales:
            runs = [r for r in per_seed if r["method"] == name and r["scale"] == scale]
            base = [r for r in per_seed if r["method"] == REAL_ONLY and r["scale"] == scale]
            acc = np.array([r["accuracy"] for r in runs])
            f1 = np.array([r["macro_f1"] for r in runs])
            gain = acc - np.array([r["accuracy"] for r in base])  # same seeds, same real subsets
            rows.append(
                {
                    "method": name,
                    "scale": scale,
                    "n_real": runs[0]["n_real"],
                    "n_seeds": len(runs),
                    "accuracy_mean": float(acc.mean()),
                    "accuracy_std": float(acc.std(ddof=1)) if acc.size > 1 else None,
                    "macro_f1_mean": float(f1.mean()),
                    "macro_f1_std": float(f1.std(ddof=1)) if f1.size > 1 else None,
                    "accuracy_gain_vs_real_only": float(gain.mean()),
                }
            )
    correlation = None
    if config.cas_summary is not None:
        from clinalign.evaluation.preference import _method_cas

        cas = _method_cas(config.cas_summary)
        missing = [m for m in methods if m not in cas]
        if missing:
            raise DataError(f"{config.cas_summary}: no CAS for methods {missing} (it has {sorted(cas)}).")
        gains = {m: np.mean([r["accuracy_gain_vs_real_only"] for r in rows if r["method"] == m]) for m in methods}
        if len(methods) >= 3:
            correlation = correlations([cas[m] for m in methods], [gains[m] for m in methods])
    summary = {
        "definition": (
            f"linear head on frozen evaluator embeddings, {config.steps} Adam steps, batch {config.head_batch_size} "
            f"with {config.synthetic_fraction:.0%} synthetic rows; scored on the real test set"
        ),
        "classes": classes,
        "encoder": getattr(critic, "name", config.evaluator),
        "results": rows,
        "per_seed": per_seed,
        "cas_gain_correlation": correlation,
    }
    out = Path(config.out)
    result = write_result(CheckResult("downstream", rows, summary, out), config)
    fig = figure(5.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name in [REAL_ONLY, *methods]:
        mine = [r for r in rows if r["method"] == name]
        ax.errorbar(
            [r["n_real"] for r in mine],
            [r["accuracy_mean"] for r in mine],
            yerr=[r["accuracy_std"] or 0.0 for r in mine],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.set_xlabel("real training images")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=7)
    result.files["png"] = save_figure(fig, out / "downstream.png")
    return result
