"""Shared parts of the evaluation checks: the settings every check has, and how results are written
(``<check>.csv`` + ``<check>.json`` + ``<check>.png`` under ``--out``, all atomic)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clinalign import __version__

# the figure helpers of every check are the scoring plots' (re-exported here for the checks)
from clinalign.scoring.plots import figure as figure
from clinalign.scoring.plots import save_figure as save_figure
from clinalign.scoring.sets import check_methods
from clinalign.utils.io import atomic_open, write_json


class SetsConfig(BaseModel):
    """Generated sets, the real reference set, the encoder and where to write: common to the checks."""

    model_config = ConfigDict(extra="forbid")

    # --- data
    methods: dict[str, list[str]] = Field(
        description="Method name -> generated sets (directories written by `clinalign generate`, or their "
        "manifest.jsonl); several sets under one name are seeds of the method and are pooled."
    )
    real: str | None = Field(None, description="Real test manifest (CSV/TSV/JSONL with an image column).")
    real_split: str | None = Field(None, description="Only use real rows with this split.")
    image_root: str | None = Field(None, description="Folder relative real image paths resolve against.")
    # --- models
    device: str | None = Field(None, description="cpu, cuda, cuda:N (default: cuda when available).")
    dtype: str = Field("fp32", description="Encoder weights dtype: fp32, bf16, fp16.")
    batch_size: int = Field(32, ge=1, description="Images per encoder forward pass.")
    # --- outputs
    out: str = Field(description="Output directory.")

    @field_validator("methods")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_methods(value)


@dataclass
class CheckResult:
    """What one check computed (``rows``: the CSV table; ``summary``: the JSON) and the files it wrote."""

    check: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def console_table(self) -> str:
        """The CSV table as fixed-width text for the terminal."""
        if not self.rows:
            return "(no rows)"
        columns = list(self.rows[0])
        cells = [[_cell(row.get(c)) for c in columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_rows(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> Path:
    """Write dict rows as CSV (columns in first-seen order), atomically."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def write_result(result: CheckResult, config: BaseModel | None = None) -> CheckResult:
    """Write ``<check>.csv`` and ``<check>.json`` (with the config that produced them) into the out dir."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    result.files["csv"] = write_rows(out / f"{result.check}.csv", result.rows)
    payload = {"_check": result.check, "_clinalign_version": __version__, **result.summary}
    if config is not None:
        payload["config"] = config.model_dump()
    result.files["json"] = out / f"{result.check}.json"
    write_json(result.files["json"], payload)
    return result
