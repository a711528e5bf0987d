"""``clinalign score-cas``: the Clinical Alignment Score of generated sets against the real test set."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_methods(generated: list[str], method: list[str]) -> dict[str, list[str]]:
    from clinalign.errors import ConfigError

    methods: dict[str, list[str]] = {}
    for path in generated:
        folder = Path(path)
        name = (folder.parent.name if folder.suffix == ".jsonl" else folder.name) or "generated"
        methods.setdefault(name, []).append(path)
    for spec in method:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(
                f"--method expects NAME=DIR (e.g. --method craft=runs/craft/gen), got {spec!r}. "
                "Repeat a NAME to add seeds of the same method."
            )
        methods.setdefault(name.strip(), []).append(path.strip())
    if not methods:
        raise ConfigError("nothing to score: pass --generated DIR_OR_MANIFEST and/or --method NAME=DIR.")
    return methods


def score_cas(
    generated: list[str] = typer.Option(
        [], "--generated", help="A generated set: the directory `clinalign generate` wrote, or its manifest.jsonl."
    ),
    method: list[str] = typer.Option(
        [], "--method", help="NAME=DIR, repeatable; the same NAME several times adds seeds of one method."
    ),
    real: Path = typer.Option(..., "--real", help="Real test manifest with t_ep (enriched JSONL or CSV/JSONL)."),
    evaluator: str = typer.Option(
        ..., "--evaluator", help="Evaluator critic: hub id, local dir or open_clip:<name>; not the training critic."
    ),
    probe: Path = typer.Option(..., "--probe", help="Probe directory trained on the evaluator's embeddings."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    checklists: Path | None = typer.Option(None, "--checklists", help="JSON/YAML: class name -> checklist t_c."),
    dd_mode: str = typer.Option("accuracy", "--dd-mode", help="accuracy (1/0 probe correct) or probability."),
    tau_quantile: float = typer.Option(0.25, "--tau-quantile", help="τ = this quantile of the real CAS."),
    real_split: str | None = typer.Option(None, "--real-split", help="Only use real rows with this split."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Folder relative real image paths use."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for confidence intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per evaluator forward pass."),
    n_lowest: int = typer.Option(8, "--n-lowest", help="Lowest-CAS images per method in lowest_cas.png (0: none)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda when available)."),
    dtype: str = typer.Option("fp32", "--dtype", help="Evaluator weights dtype: fp32, bf16, fp16."),
    cache: bool = typer.Option(
        True, "--cache/--no-cache", help="Reuse image embeddings in OUT/cache from an earlier (interrupted) run."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
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
    """
    import warnings

    from pydantic import ValidationError

    from clinalign.errors import ConfigError
    from clinalign.scoring.report import ScoreCASConfig, evaluate_cas
    from clinalign.scoring.sets import EvaluationLeakageWarning

    if protocol is not None:
        from clinalign.protocols.commands import scoring_settings

        settings = scoring_settings(protocol, real, real_split=real_split, dd_mode=dd_mode, tau_quantile=tau_quantile)
        real_split, dd_mode, tau_quantile = settings["real_split"], settings["dd_mode"], settings["tau_quantile"]
    try:
        config = ScoreCASConfig(
            methods=_parse_methods(generated, method),
            real=str(real),
            real_split=real_split,
            image_root=None if image_root is None else str(image_root),
            checklists=None if checklists is None else str(checklists),
            evaluator=evaluator,
            probe=str(probe),
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            dd_mode=dd_mode,  # type: ignore[arg-type]
            tau_quantile=tau_quantile,
            n_boot=n_boot,
            seed=seed,
            n_lowest=n_lowest,
            cache=cache,
            out=str(out),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid score-cas options: {problems}.") from None

    show_warning = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EvaluationLeakageWarning):
            bar = "!" * 78
            typer.secho(f"{bar}\n{message}\n{bar}", err=True, fg=typer.colors.RED, bold=True)
        else:
            show_warning(message, category, filename, lineno, file, line)

    # print the leakage banner as soon as it is known (before the long scoring), not at the end
    with warnings.catch_warnings():
        warnings.simplefilter("always", EvaluationLeakageWarning)
        warnings.showwarning = _show
        report = evaluate_cas(config, progress=progress)
    typer.echo(report.console_table())
    typer.echo(f"wrote {len(report.files)} files to {report.out_dir}")


def register(app: typer.Typer) -> None:
    app.command("score-cas")(score_cas)
