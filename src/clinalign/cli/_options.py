"""Options several commands share (``score-cas`` and the ``evaluate`` checks), as ``Annotated`` types so each
command declares them in one line with the same flag, help text and meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Generated = Annotated[
    list[str] | None,
    typer.Option(
        "--generated",
        metavar="DIR",
        help="A generated set: the directory `clinalign generate` wrote, or its manifest.jsonl.",
    ),
]
Methods = Annotated[
    list[str] | None,
    typer.Option(
        "--method", metavar="NAME=DIR", help="Repeatable; the same NAME several times adds seeds of one method."
    ),
]
Out = Annotated[Path, typer.Option("--out", help="Output directory.")]
RealSplit = Annotated[str | None, typer.Option("--real-split", help="Only use real rows with this split.")]
ImageRoot = Annotated[
    Path | None, typer.Option("--image-root", help="Folder relative real image paths resolve against.")
]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: cuda when available).")]
DtypeName = Annotated[str, typer.Option("--dtype", help="Encoder weights dtype: fp32, bf16, fp16.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per encoder forward pass.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
