"""PNG plots of CAS results: ECDFs with the low tail shaded, per-primitive distributions, worst images.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never changes the
backend or the state of a user's interactive session.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clinalign.scoring.scorer import CASScores


def figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no pyplot, so a user's backend is never changed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike[str]) -> Path:
    """Lay out ``fig`` and write it as a PNG, atomically; the one figure writer of scoring and evaluation."""
    from clinalign.utils.io import atomic_open

    path = Path(path)
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png")
    return path


def ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and their empirical CDF heights (i/n)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    return x, np.arange(1, x.size + 1) / x.size


def plot_ecdf(
    cas_by_method: Mapping[str, np.ndarray],
    real_cas: np.ndarray,
    tau: float,
    path: str | os.PathLike[str],
    *,
    q: float = 0.25,
) -> Path:
    """Empirical CDFs of per-image CAS per method and for the real images, region below τ shaded."""
    fig = figure(7.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    everything = np.concatenate([np.asarray(real_cas), *[np.asarray(v) for v in cas_by_method.values()]])
    lo = float(everything.min())
    span = max(float(everything.max()) - lo, 1e-6)
    ax.axvspan(lo - 0.05 * span, tau, color="tab:red", alpha=0.10, label=f"CAS < τ (real {q:g}-quantile)")
    ax.axvline(tau, color="tab:red", lw=1.0, ls=":")
    x, y = ecdf(real_cas)
    ax.step(x, y, where="post", color="black", lw=1.8, ls="--", label=f"real (n={x.size})")
    for method, values in cas_by_method.items():
        x, y = ecdf(values)
        below = float(np.mean(np.asarray(values) < tau))
        ax.step(x, y, where="post", lw=1.6, label=f"{method} (n={x.size}, {100 * below:.1f}% < τ)")
    ax.set_xlim(lo - 0.05 * span, float(everything.max()) + 0.05 * span)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("per-image CAS")
    ax.set_ylabel("fraction of images ≤ x")
    ax.set_title(f"Empirical CDF of CAS (τ = {tau:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_primitives(
    scores_by_method: Mapping[str, CASScores],
    path: str | os.PathLike[str],
    *,
    real: CASScores | None = None,
    kind: str = "violin",
) -> Path:
    """One panel per primitive (and CAS): distributions per method as violins (or ``kind="box"``)."""
    groups: dict[str, CASScores] = dict(scores_by_method)
    if real is not None:
        groups = {"real": real, **groups}
    first = next(iter(groups.values()))
    names = [*first.primitives, "cas"]
    fig = figure(2.6 * len(names), 3.6)
    labels = list(groups)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        data = [
            np.asarray(getattr(s, name)) if getattr(s, name) is not None else np.array([np.nan])
            for s in groups.values()
        ]
        if name == "dd" and first.dd_mode == "accuracy":
            # 0/1 values: a violin is meaningless, show the accuracy as bars
            ax.bar(range(1, len(data) + 1), [float(np.nanmean(d)) for d in data], color="tab:blue", alpha=0.7)
            ax.set_ylim(0, 1)
            ax.set_title("DD (accuracy)")
        elif kind == "box":
            ax.boxplot(data, showfliers=True)
            ax.set_title(name.upper())
        else:
            parts = ax.violinplot(
                [d[np.isfinite(d)] if np.isfinite(d).any() else [0.0] for d in data], showmedians=True
            )
            for body in parts["bodies"]:
                body.set_alpha(0.5)
            ax.set_title(name.upper())
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def plot_lowest(
    items_by_method: Mapping[str, Sequence[tuple[str | os.PathLike[str], float, str]]],
    path: str | os.PathLike[str],
    *,
    thumb: int = 96,
) -> Path:
    """A grid of the lowest-CAS images: one row per method, each ``(image path, CAS, label)``."""
    from clinalign.data.images import load_image

    columns = max((len(v) for v in items_by_method.values()), default=1)
    rows = max(len(items_by_method), 1)
    fig = figure(1.5 * columns + 1.2, 1.7 * rows)
    for r, (method, items) in enumerate(items_by_method.items()):
        for c in range(columns):
            ax = fig.add_subplot(rows, columns, r * columns + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(method, fontsize=8)
            if c >= len(items):
                ax.axis("off")
                continue
            image_path, cas, label = items[c]
            image = load_image(image_path)
            image.thumbnail((thumb, thumb))
            ax.imshow(np.asarray(image))
            ax.set_title(f"{label}\nCAS {cas:.3f}", fontsize=7)
    fig.suptitle("Lowest-CAS samples per method (the failure cases to look at)", fontsize=9)
    return save_figure(fig, path)
