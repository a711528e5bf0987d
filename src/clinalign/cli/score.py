"""``clinalign score-cas``: the Clinical Alignment Score of generated sets against the real test set."""

from __future__ import annotations

from pathlib import Path

import typer

from clinalign.cli._choices import DDMode, Dtype
from clinalign.cli._options import BatchSize, Device, Generated, ImageRoot, Methods, Out, Progress, RealSplit
from clinalign.data.images import DEFAULT_MAX_IMAGE_PIXELS


def score_cas(
    generated: Generated = None,
    method: Methods = None,
    real: Path = typer.Option(..., "--real", help="Real test manifest with t_ep (enriched JSONL or CSV/JSONL)."),
    evaluator: str = typer.Option(
        ..., "--evaluator", help="Evaluator critic: hub id, local dir or open_clip:<name>; not the training critic."
    ),
    probe: Path = typer.Option(..., "--probe", help="Probe directory trained on the evaluator's embeddings."),
    out: Out = ...,
    checklists: Path | None = typer.Option(None, "--checklists", help="JSON/YAML: class name -> checklist t_c."),
    dd_mode: DDMode = typer.Option(
        DDMode.accuracy, "--dd-mode", help="Per-image DD: accuracy (1/0 probe correct) or probability."
    ),
    tau_quantile: float = typer.Option(0.25, "--tau-quantile", help="τ = this quantile of the real CAS."),
    real_split: RealSplit = None,
    image_root: ImageRoot = None,
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for confidence intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: BatchSize = 32,
    chunk_rows: int = typer.Option(
        4096,
        "--chunk-rows",
        help="Generated rows read, embedded and scored at a time (a multiple of --batch-size); bounds memory.",
    ),
    n_lowest: int = typer.Option(8, "--n-lowest", help="Lowest-CAS images per method in lowest_cas.png (0: none)."),
    device: Device = None,
    dtype: Dtype = typer.Option(Dtype.fp32, "--dtype", help="Evaluator weights dtype."),
    cache: bool = typer.Option(
        True, "--cache/--no-cache", help="Reuse image embeddings in OUT/cache from an earlier (interrupted) run."
    ),
    embedding_cache: Path | None = typer.Option(
        None,
        "--embedding-cache",
        help="Embedding store shared with other runs (probe train, evaluate, quickstart); default OUT/cache.",
    ),
    progress: Progress = True,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Empty --out first (a folder holding finished scores is refused without it)."
    ),
    max_image_pixels: int = typer.Option(
        DEFAULT_MAX_IMAGE_PIXELS,
        "--max-image-pixels",
        help="Refuse images with more pixels (decompression bombs); 0: no limit.",
    ),
    protocol: str | None = typer.Option(
        None, "--protocol", help="craft-paper: test split of split.json, DD accuracy, τ = 25th percentile."
    ),
) -> None:
    """Score generated images with CAS in an evaluator's space; write per_image.csv, summary.json,
    tables.md and ecdf.png.

    Examples:

        clinalign score-cas --generated runs/craft/gen --real data/test_enriched.jsonl \\
          --evaluator google/siglip-base-patch16-224 --probe probes/siglip --out runs/cas

        clinalign score-cas --method craft=runs/craft_s0/gen --method craft=runs/craft_s1/gen \\
          --method lora=runs/lora_s0/gen --real data/test_enriched.jsonl --checklists checklists.yaml \\
          --evaluator google/siglip-base-patch16-224 --probe probes/siglip --out runs/cas_compare

    Several processes (GPUs or nodes): `accelerate launch --num_processes 4 -m clinalign score-cas ...`
    embeds the images in batches dealt to the ranks and writes the same files as one process.
    """
    import warnings

    from pydantic import ValidationError

    from clinalign.cli._output import claim, pixel_limit
    from clinalign.errors import ConfigError
    from clinalign.scoring.report import CONFIG_NAME, ScoreCASConfig, evaluate_cas
    from clinalign.scoring.sets import EvaluationLeakageWarning, parse_method_specs
    from clinalign.utils.distributed import process_group
    from clinalign.utils.outdir import check_output_path, existing_entries

    ranks = process_group()
    if protocol is not None:
        from clinalign.protocols.commands import scoring_settings

        settings = scoring_settings(
            protocol, real, real_split=real_split, dd_mode=dd_mode.value, tau_quantile=tau_quantile
        )
        real_split, tau_quantile = settings["real_split"], settings["tau_quantile"]
        dd_mode = DDMode(settings["dd_mode"])
    try:
        config = ScoreCASConfig(
            methods=parse_method_specs(generated, method, action="score"),
            real=str(real),
            real_split=real_split,
            image_root=None if image_root is None else str(image_root),
            checklists=None if checklists is None else str(checklists),
            evaluator=evaluator,
            probe=str(probe),
            device=device if device is not None or not ranks.distributed else ranks.device,
            dtype=dtype.value,
            batch_size=batch_size,
            chunk_rows=chunk_rows,
            dd_mode=dd_mode.value,  # type: ignore[arg-type]
            tau_quantile=tau_quantile,
            n_boot=n_boot,
            seed=seed,
            n_lowest=n_lowest,
            cache=cache,
            embedding_cache=None if embedding_cache is None else str(embedding_cache),
            out=str(out),
        )
    except ValidationError as exc:
        from clinalign.utils.validation import validation_problems

        problems = validation_problems(exc, as_flags=True).rstrip(".")
        raise ConfigError(f"invalid score-cas options: {problems}.") from None
    check_output_path(out)
    pixel_limit(max_image_pixels)

    def claim_out() -> None:  # main process only: it holds the lock, a refusal stops every rank
        # an interrupted run left its embedding cache (and config): continuing reuses it; finished scores are
        # kept. OUT/evaluation/ holds `clinalign evaluate` checks written there for this report to include.
        resumable = {"evaluation"} | ({"cache", CONFIG_NAME} if cache else set())
        claim(
            out,
            command="score-cas",
            overwrite=overwrite,
            resume=set(existing_entries(out)) <= resumable,
            inputs=("evaluation",),  # never emptied by --overwrite
        )

    ranks.run_on_main(claim_out)

    show_warning = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EvaluationLeakageWarning):
            bar = "!" * 78
            typer.secho(f"{bar}\n{message}\n{bar}", err=True, fg=typer.colors.RED, bold=True)
        else:
            show_warning(message, category, filename, lineno, file, line)

    # print the leakage banner as soon as it is known (before the long scoring), not at the end
    with warnings.catch_warnings():
        # warn once, not once per rank
        warnings.simplefilter("always" if ranks.is_main else "ignore", EvaluationLeakageWarning)
        warnings.showwarning = _show
        report = evaluate_cas(config, progress=progress and ranks.is_main, ranks=ranks)
    if ranks.is_main:
        typer.echo(report.console_table())
        typer.echo(f"wrote {len(report.files)} files to {report.out_dir}")


def register(app: typer.Typer) -> None:
    app.command("score-cas")(score_cas)
