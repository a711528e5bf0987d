"""``silhouette``: how well each method's images separate by class in an evaluator's embedding space.

Per method (seeds pooled) and for the real test set when given: the mean cosine silhouette of the
evaluator embeddings grouped by the label each image was generated for, and a 2-D projection per set
(one PCA fitted on all sets together, so the panels share axes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from clinalign.errors import DataError
from clinalign.evaluation.common import CheckResult, SetsConfig, figure, save_figure, write_result
from clinalign.evaluation.functional import silhouette
from clinalign.evaluation.inputs import embed_paths, load_evaluator, read_methods, read_real_images


class SilhouetteConfig(SetsConfig):
    """Settings of ``clinalign evaluate silhouette``."""

    evaluator: str = Field(description="Encoder (critic: hub id, local dir or open_clip:<name>).")


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-2 principal axes [2,D] of ``embeddings`` (SVD of the centred data)."""
    mean = embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:  # a single distinct direction: pad with zeros
        axes = np.concatenate([axes, np.zeros((2 - axes.shape[0], embeddings.shape[1]))])
    return mean, axes


def evaluate_silhouette(config: SilhouetteConfig, *, critic: Any = None, progress: bool = False) -> CheckResult:
    """Cosine silhouette by class per method (and real set); writes silhouette.csv/json/png."""
    methods = read_methods(config.methods)
    real = (
        read_real_images(config.real, split=config.real_split, image_root=config.image_root, require_labels=True)
        if config.real
        else None
    )
    if critic is None:
        critic = load_evaluator(config.evaluator, device=config.device, dtype=config.dtype)
    sets: dict[str, tuple[torch.Tensor, list[str]]] = {}
    if real is not None:
        sets["real"] = (embed_paths(critic, real.paths, batch_size=config.batch_size, progress=progress), real.labels)
    for name, group in methods.items():
        if name == "real" and real is not None:
            raise DataError("a method is named 'real', which is the real test set's name here; rename the method.")
        sets[name] = (embed_paths(critic, group.paths, batch_size=config.batch_size, progress=progress), group.labels)
    rows: list[dict[str, Any]] = []
    for name, (emb, labels) in sets.items():
        n_classes = len(set(labels))
        try:
            value = silhouette(emb, labels)
        except DataError as exc:
            raise DataError(f"set '{name}': {exc}") from None
        rows.append({"set": name, "n": len(labels), "n_classes": n_classes, "silhouette_cosine": value})
    summary = {
        "definition": "mean silhouette coefficient, cosine distance, evaluator embeddings grouped by label",
        "higher_is_better": True,
        "encoder": getattr(critic, "name", config.evaluator),
        "results": rows,
    }
    out = Path(config.out)
    result = write_result(CheckResult("silhouette", rows, summary, out), config)
    result.files["png"] = _plot(sets, {r["set"]: r["silhouette_cosine"] for r in rows}, out / "silhouette.png")
    return result


def _plot(sets: dict[str, tuple[torch.Tensor, list[str]]], values: dict[str, float], path: Path) -> Path:
    all_emb = np.concatenate([torch.nn.functional.normalize(e, dim=1).numpy() for e, _ in sets.values()])
    mean, axes = pca_2d(all_emb.astype(np.float64))
    classes = sorted({label for _, labels in sets.values() for label in labels})
    colours = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    n = len(sets)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = figure(3.2 * cols, 3.0 * rows + 0.4)
    for i, (name, (emb, labels)) in enumerate(sets.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        xy = (torch.nn.functional.normalize(emb, dim=1).numpy() - mean) @ axes.T
        for c in classes:
            mask = np.array([label == c for label in labels])
            if mask.any():
                ax.scatter(xy[mask, 0], xy[mask, 1], s=8, c=colours[c], label=c, alpha=0.7)
        ax.set_title(f"{name}: silhouette {values[name]:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.legend(fontsize=6, markerscale=1.5)
    fig.suptitle("evaluator embeddings, PCA fitted on all sets (colour = class)", fontsize=9)
    return save_figure(fig, path)
