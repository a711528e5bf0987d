"""Comparison tables of CAS results: methods x primitives, low tail, per class.

A :class:`Table` holds typed cells (plain values, mean ± std over seeds, estimates with a confidence
interval) and renders them as Markdown, CSV, JSON-ready records or LaTeX, so every format shows the
same numbers.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clinalign.scoring.scorer import CASScores
from clinalign.scoring.tail import TailAnalysis

SCORE_COLUMNS: tuple[str, ...] = ("vdc", "ccs", "dd", "sfs", "cas")


@dataclass(frozen=True)
class MeanStd:
    """A mean over seeds with its standard deviation (``None`` with a single seed)."""

    mean: float
    std: float | None = None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval."""

    value: float
    lo: float
    hi: float


Cell = str | int | float | MeanStd | Estimate | None


@dataclass
class Table:
    """A titled table of typed cells. ``columns`` are display names; ``keys`` the machine names."""

    title: str
    columns: list[str]
    keys: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str = ""
    digits: int = 3

    # ------------------------------------------------------------------ formatting
    def _fmt(self, cell: Cell, *, latex: bool = False) -> str:
        d = self.digits
        pm = r"$\pm$" if latex else "±"
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            return "–" if not latex else "--"
        if isinstance(cell, MeanStd):
            return f"{cell.mean:.{d}f}" if cell.std is None else f"{cell.mean:.{d}f} {pm} {cell.std:.{d}f}"
        if isinstance(cell, Estimate):
            return f"{cell.value:.{d}f} [{cell.lo:.{d}f}, {cell.hi:.{d}f}]"
        if isinstance(cell, float):
            return f"{cell:.{d}f}"
        text = str(cell)
        return _latex_escape(text) if latex else text.replace("|", r"\|")

    # ------------------------------------------------------------------ renderers
    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.caption:
            lines += [self.caption, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(self._fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per row: ``X`` for values, ``X_std`` for spreads, ``X_lo``/``X_hi`` for intervals."""
        out = []
        for row in self.rows:
            record: dict[str, Any] = {}
            for key, cell in zip(self.keys, row, strict=True):
                if isinstance(cell, MeanStd):
                    record[key], record[f"{key}_std"] = cell.mean, cell.std
                elif isinstance(cell, Estimate):
                    record[key], record[f"{key}_lo"], record[f"{key}_hi"] = cell.value, cell.lo, cell.hi
                else:
                    record[key] = cell
            out.append(record)
        return out

    def to_csv(self) -> str:
        records = self.records()
        columns: list[str] = []
        for record in records:
            columns += [k for k in record if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns or self.keys, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return buffer.getvalue()

    def to_latex(self) -> str:
        spec = "l" * sum(1 for c in self.rows[0] if isinstance(c, str)) if self.rows else "l"
        spec = spec + "r" * (len(self.columns) - len(spec))
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{_latex_escape(self.title)}{'. ' + _latex_escape(self.caption) if self.caption else ''}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(_latex_escape(c) for c in self.columns) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(self._fmt(c, latex=True) for c in row) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "caption": self.caption, "rows": self.records()}


def _latex_escape(text: str) -> str:
    replacements = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "τ": r"$\tau$",
        "±": r"$\pm$",
        "<": r"$<$",
    }
    return "".join(replacements.get(ch, ch) for ch in text)


def _mean_std(values: Sequence[float]) -> MeanStd | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return MeanStd(float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None)


def _score_cells(runs: Sequence[CASScores]) -> list[Cell]:
    means = [run.means() for run in runs]
    cells: list[Cell] = []
    for key in SCORE_COLUMNS:
        values = [m[key] for m in means]
        cells.append(None if any(v is None for v in values) else _mean_std(values))  # type: ignore[arg-type]
    return cells


_SCORE_HEADERS = ["VDC", "CCS", "DD", "SFS", "CAS"]


def comparison_table(results: Mapping[str, Sequence[CASScores]], *, title: str = "CAS by method") -> Table:
    """Mean of each primitive and CAS per method; mean ± std over runs (seeds) when a method has several."""
    table = Table(
        title=title,
        columns=["Method", "Seeds", "Images", *_SCORE_HEADERS],
        keys=["method", "n_seeds", "n_images", *SCORE_COLUMNS],
        caption="Per-method means of the per-image scores; ± is the standard deviation over seeds.",
    )
    for method, runs in results.items():
        table.rows.append([method, len(runs), sum(len(r) for r in runs), *_score_cells(runs)])
    return table


def tail_table(
    tails: Mapping[str, TailAnalysis], *, real: TailAnalysis | None = None, title: str = "Low tail of CAS"
) -> Table:
    """τ, n, mean, fraction below τ and P10 per method, with bootstrap intervals."""
    any_tail = real or next(iter(tails.values()), None)
    level = f"{round(100 * any_tail.ci_level)}%" if any_tail else "95%"
    q = any_tail.q if any_tail else 0.25
    table = Table(
        title=title,
        columns=["Method", "τ", "n", f"Mean [{level} CI]", f"Frac < τ [{level} CI]", f"P10 [{level} CI]"],
        keys=["method", "tau", "n", "mean", "frac_below_tau", "p10"],
        caption=(
            f"τ = {q:g}-quantile of the real test images' CAS; fraction of images with CAS < τ "
            "(real images: q by construction); percentile-bootstrap intervals."
        ),
    )
    rows = ([("real (reference)", real)] if real is not None else []) + list(tails.items())
    for method, tail in rows:
        table.rows.append(
            [
                method,
                tail.tau,
                tail.n,
                Estimate(tail.mean, *tail.mean_ci),
                Estimate(tail.frac_below, *tail.frac_below_ci),
                Estimate(tail.p10, *tail.p10_ci),
            ]
        )
    return table


def per_class_table(results: Mapping[str, Sequence[CASScores]], *, title: str = "CAS by method and class") -> Table:
    """The comparison table broken down by class (means per run and class, mean ± std over runs)."""
    table = Table(
        title=title,
        columns=["Method", "Class", "Images", *_SCORE_HEADERS],
        keys=["method", "class", "n_images", *SCORE_COLUMNS],
        caption="Per-class means; ± is the standard deviation over seeds.",
    )
    for method, runs in results.items():
        classes = sorted({label for run in runs for label in run.labels})
        for label in classes:
            subsets = [run.select(np.asarray(run.labels) == label) for run in runs]
            subsets = [s for s in subsets if len(s)]
            table.rows.append([method, label, sum(len(s) for s in subsets), *_score_cells(subsets)])
    return table
