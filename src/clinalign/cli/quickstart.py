"""``clinalign quickstart``: the whole method on the toy clinical world, offline, on a CPU."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class QuickstartBaselines(str, Enum):
    """Which baselines the quickstart trains besides CRAFT."""

    default = "default"
    all = "all"


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output directory (reruns resume)."),
    fast: bool = typer.Option(
        False, "--fast", help="Smaller data, fewer held-out prompts, one CRAFT seed (about 4 minutes)."
    ),
    seed: int = typer.Option(0, help="Seed of the data, generation and the first CRAFT run."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: cuda when available)."),
    baselines: QuickstartBaselines = typer.Option(
        QuickstartBaselines.default,
        "--baselines",
        help="default: zero-shot and the LoRA baseline; all: also textual inversion, TI+LoRA and Diffusion-DPO "
        "(the CRAFT paper's Table 1; about twice as long).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Empty --out first and start over (a rerun otherwise resumes)."
    ),
) -> None:
    """Generate ToyDerm, enrich it, fit probes, train the LoRA baseline and CRAFT, score CAS, write a report.

    Example:

        clinalign quickstart --out runs/quickstart          # full run: 2 CRAFT seeds
        clinalign quickstart --fast --out runs/qs_fast      # the quick version the tests run
        clinalign quickstart --baselines all                # + textual inversion, TI+LoRA, Diffusion-DPO
    """
    from clinalign.cli._output import claim
    from clinalign.utils.outdir import check_output_path, existing_entries

    check_output_path(out)
    # a quickstart folder resumes (finished steps are skipped); a folder holding anything else is refused
    claim(out, command="quickstart", overwrite=overwrite, resume="quickstart_config.json" in existing_entries(out))

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from clinalign.toy.quickstart import QuickstartConfig, run_quickstart
    from clinalign.toy.report import format_summary

    # the libraries' own weight-loading bars would drown the step log; ours stay
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()

    config = QuickstartConfig(
        out_dir=str(out), fast=fast, seed=seed, device=device, progress=progress, baselines=baselines.value
    )
    result = run_quickstart(config, log=typer.echo)
    typer.echo("")
    typer.echo(format_summary(result.summary))
    typer.echo(f"\nreport:  {result.report}")
    typer.echo(f"summary: {result.out_dir / 'summary.json'}  ({result.seconds:.0f} s in all)")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
