"""``clinalign evaluate <check>``: the evaluation suite beyond CAS, on the sets ``clinalign generate`` wrote.

Every check reads the same generated-set directories as ``score-cas`` (``--generated DIR`` or
``--method NAME=DIR``, repeatable) and writes ``<check>.csv``, ``<check>.json`` and ``<check>.png`` to
``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clinalign.cli._options import (
    BatchSize,
    Device,
    DtypeName,
    Generated,
    ImageRoot,
    Methods,
    Out,
    Progress,
    RealSplit,
)

evaluate_app = typer.Typer(
    name="evaluate",
    help=(
        "Evaluation checks beyond CAS: fd, kid, silhouette, memorization, diversity, preference, judge, downstream. "
        "Each reads the generated sets `clinalign generate` wrote and writes CSV + JSON + PNG to --out."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
preference_app = typer.Typer(
    name="preference",
    help="Blinded preference study: `export` a ranking kit, `import` the filled rankings.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

InceptionWeights = Annotated[
    Path | None,
    typer.Option(
        "--inception-weights",
        help="FID Inception weights file (pt_inception-2015-12-05-6726825d.pth) for --evaluator inception "
        "(default: the torch hub cache). Needs pip install 'clinalign[eval]'.",
    ),
]


def _config(cls: Any, **values: Any) -> Any:
    """Build a check's config; invalid values become a ConfigError naming the flag."""
    from pydantic import ValidationError

    from clinalign.errors import ConfigError

    try:
        return cls(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid options: {problems}.") from None


def _methods(generated: list[str] | None, method: list[str] | None) -> dict[str, list[str]]:
    from clinalign.scoring.sets import parse_method_specs

    return parse_method_specs(generated, method, action="evaluate")


def _shared(values: dict[str, Any]) -> dict[str, Any]:
    """The config values every check takes the same way, from a command's parameters (its ``locals()``):
    the methods from --generated/--method, --out, and whichever of --real, --real-split, --image-root,
    --device, --dtype and --batch-size the command has."""
    shared: dict[str, Any] = {"methods": _methods(values["generated"], values["method"]), "out": str(values["out"])}
    for key in ("real", "image_root"):
        if key in values:
            shared[key] = _str(values[key])
    for key in ("real_split", "device", "dtype", "batch_size"):
        if key in values:
            shared[key] = values[key]
    return shared


def _report(result: Any) -> None:
    typer.echo(result.console_table())
    typer.echo(f"wrote {', '.join(sorted(p.name for p in result.files.values()))} to {result.out_dir}")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _distribution(metric: str, **kw: Any) -> None:
    from clinalign.evaluation.distribution import DistributionConfig, evaluate_fd, evaluate_kid

    progress = kw.pop("progress")
    config = _config(DistributionConfig, **kw)
    _report((evaluate_fd if metric == "fd" else evaluate_kid)(config, progress=progress))


@evaluate_app.command("fd")
def fd(
    generated: Generated = None,
    method: Methods = None,
    real: Path = typer.Option(..., "--real", help="Real test manifest (CSV/TSV/JSONL with an image column)."),
    evaluator: list[str] = typer.Option(
        ...,
        "--evaluator",
        help="Encoder (critic hub id, local dir or open_clip:<name>; 'inception' for FID's Inception-v3); repeatable.",
    ),
    out: Out = ...,
    inception_weights: InceptionWeights = None,
    real_split: RealSplit = None,
    image_root: ImageRoot = None,
    device: Device = None,
    dtype: DtypeName = "fp32",
    batch_size: BatchSize = 32,
    progress: Progress = True,
) -> None:
    """Fréchet distance of each method's images to the real test images in each encoder's space
    ("PLIP-FID" with PLIP); also the paired image-image (SFS) and prompt-image (VDC) cosines.

    Example:

        clinalign evaluate fd --method craft=runs/craft/gen --method lora=runs/lora/gen \\
          --real data/test.jsonl --evaluator google/siglip-base-patch16-224 --out runs/eval/fd
    """
    _distribution(
        "fd",
        **_shared(locals()),
        evaluators=evaluator,
        inception_weights=_str(inception_weights),
        progress=progress,
    )


@evaluate_app.command("kid")
def kid(
    generated: Generated = None,
    method: Methods = None,
    real: Path = typer.Option(..., "--real", help="Real test manifest (CSV/TSV/JSONL with an image column)."),
    evaluator: list[str] = typer.Option(
        ..., "--evaluator", help="Encoder (critic; 'inception' for KID's Inception-v3); repeat for several."
    ),
    out: Out = ...,
    inception_weights: InceptionWeights = None,
    subsets: int = typer.Option(100, "--subsets", help="Random subsets averaged."),
    subset_size: int = typer.Option(1000, "--subset-size", help="Rows per subset (capped at the smaller set)."),
    degree: int = typer.Option(3, "--degree", help="Polynomial kernel degree."),
    seed: int = typer.Option(0, "--seed", help="Subset sampling seed."),
    real_split: RealSplit = None,
    image_root: ImageRoot = None,
    device: Device = None,
    dtype: DtypeName = "fp32",
    batch_size: BatchSize = 32,
    progress: Progress = True,
) -> None:
    """Kernel distance (KID: unbiased MMD², kernel (x·y/D + 1)^3) of each method's images to the real test
    images, mean ± std over random subsets.

    Example:

        clinalign evaluate kid --generated runs/craft/gen --real data/test.jsonl \\
          --evaluator google/siglip-base-patch16-224 --out runs/eval/kid
    """
    _distribution(
        "kid",
        **_shared(locals()),
        evaluators=evaluator,
        inception_weights=_str(inception_weights),
        subsets=subsets,
        subset_size=subset_size,
        degree=degree,
        seed=seed,
        progress=progress,
    )


@evaluate_app.command("silhouette")
def silhouette(
    generated: Generated = None,
    method: Methods = None,
    evaluator: str = typer.Option(..., "--evaluator", help="Encoder (critic hub id, local dir or open_clip:<name>)."),
    out: Out = ...,
    real: Path | None = typer.Option(None, "--real", help="Real test manifest with labels (adds a 'real' row)."),
    real_split: RealSplit = None,
    image_root: ImageRoot = None,
    device: Device = None,
    dtype: DtypeName = "fp32",
    batch_size: BatchSize = 32,
    progress: Progress = True,
) -> None:
    """Cosine silhouette of each method's evaluator embeddings by class, with a 2-D projection per method.

    Example:

        clinalign evaluate silhouette --method craft=runs/craft/gen --real data/test.jsonl \\
          --evaluator google/siglip-base-patch16-224 --out runs/eval/silhouette
    """
    from clinalign.evaluation.separability import SilhouetteConfig, evaluate_silhouette

    config = _config(
        SilhouetteConfig,
        **_shared(locals()),
        evaluator=evaluator,
    )
    _report(evaluate_silhouette(config, progress=progress))


@evaluate_app.command("memorization")
def memorization(
    generated: Generated = None,
    method: Methods = None,
    train: Path = typer.Option(..., "--train", help="Training image manifest (CSV/TSV/JSONL with an image column)."),
    out: Out = ...,
    real: Path | None = typer.Option(None, "--real", help="Held-out test manifest (for d_train vs d_test)."),
    encoder: str | None = typer.Option(
        None,
        "--encoder",
        help="Independent encoder for d_train vs d_test (runs with --real): DINOv2 hub id or folder (default "
        "facebook/dinov2-small), another vision backbone, any critic, or 'none' to skip.",
    ),
    mode: str = typer.Option("prefilter", "--mode", help="prefilter (exact SSIM on top-k candidates) or exact."),
    top_k: int = typer.Option(16, "--top-k", help="Prefilter candidates per criterion."),
    ssim_threshold: float = typer.Option(0.95, "--ssim-threshold", help="Flag when nearest SSIM is above this."),
    hamming_threshold: int = typer.Option(5, "--hamming-threshold", help="Flag when nearest pHash is within this."),
    ssim_size: int | None = typer.Option(None, "--ssim-size", help="SSIM resolution (default: generated size)."),
    match_sizes: bool = typer.Option(
        True, "--match-sizes/--no-match-sizes", help="d_train on a train subset the size of the test set."
    ),
    train_split: str | None = typer.Option(None, "--train-split", help="Only use training rows with this split."),
    train_image_root: Path | None = typer.Option(None, "--train-image-root", help="Root of relative train paths."),
    real_split: RealSplit = None,
    image_root: ImageRoot = None,
    device: Device = None,
    dtype: DtypeName = "fp32",
    batch_size: BatchSize = 32,
    progress: Progress = True,
) -> None:
    """Nearest training image per generated image by SSIM and pHash (flags SSIM > 0.95 or Hamming <= 5),
    and encoder nearest-neighbour distance to train vs held-out test (DINOv2 by default).

    Example:

        clinalign evaluate memorization --method craft=runs/craft/gen --train data/train.csv \\
          --real data/test.jsonl --encoder facebook/dinov2-small --out runs/eval/memorization
    """
    from clinalign.evaluation.memorization import MemorizationConfig, evaluate_memorization

    config = _config(
        MemorizationConfig,
        **_shared(locals()),
        train=str(train),
        train_split=train_split,
        train_image_root=_str(train_image_root),
        **({} if encoder is None else {"encoder": encoder}),  # unset: the config's default (DINOv2)
        mode=mode,
        top_k=top_k,
        ssim_threshold=ssim_threshold,
        hamming_threshold=hamming_threshold,
        ssim_size=ssim_size,
        match_sizes=match_sizes,
    )
    _report(evaluate_memorization(config, progress=progress))


@evaluate_app.command("diversity")
def diversity(
    generated: Generated = None,
    method: Methods = None,
    out: Out = ...,
    evaluator: str | None = typer.Option(None, "--evaluator", help="Encoder for the embedding-space distance."),
    lpips_weights: Path | None = typer.Option(
        None,
        "--lpips-weights",
        help="torchvision's AlexNet checkpoint file (alexnet-owt-7be5be79.pth): use LPIPS (torchmetrics).",
    ),
    lpips_torch_home: Path | None = typer.Option(
        None, "--lpips-torch-home", help="Or a local torch hub folder holding that checkpoint."
    ),
    min_samples: int = typer.Option(2, "--min-samples", help="Skip prompts with fewer samples."),
    device: Device = None,
    dtype: DtypeName = "fp32",
    batch_size: BatchSize = 32,
    progress: Progress = True,
) -> None:
    """Prompt-level diversity: mean pairwise distance among each prompt's samples (LPIPS with local
    weights, else embedding cosine distance, labelled as such).

    Example:

        clinalign evaluate diversity --method craft=runs/craft/gen4 \\
          --evaluator google/siglip-base-patch16-224 --out runs/eval/diversity
    """
    from clinalign.evaluation.diversity import DiversityConfig, evaluate_diversity

    config = _config(
        DiversityConfig,
        **_shared(locals()),
        evaluator=evaluator,
        lpips_weights=_str(lpips_weights),
        lpips_torch_home=_str(lpips_torch_home),
        min_samples=min_samples,
    )
    _report(evaluate_diversity(config, progress=progress))


@evaluate_app.command("downstream")
def downstream(
    generated: Generated = None,
    method: Methods = None,
    train: Path = typer.Option(..., "--train", help="Real training manifest (image and label columns)."),
    real: Path = typer.Option(..., "--real", help="Real test manifest (image and label columns)."),
    evaluator: str | None = typer.Option(
        None, "--evaluator", help="Frozen encoder whose embeddings the linear head reads (--backbone linear)."
    ),
    out: Out = ...,
    backbone: str = typer.Option(
        "linear",
        "--backbone",
        help="linear (head on frozen evaluator embeddings, fast), cnn (small CNN) or resnet18, both trained on "
        "the pixels from scratch (GPU when available).",
    ),
    image_size: int = typer.Option(64, "--image-size", help="Image side for --backbone cnn/resnet18."),
    learning_rate: float = typer.Option(1e-2, "--learning-rate", help="Adam learning rate."),
    synthetic_fraction: float = typer.Option(0.2, "--synthetic-fraction", help="Synthetic share of every batch."),
    scale: list[float] = typer.Option([0.25, 0.5, 1.0], "--scale", help="Fraction of real train data; repeatable."),
    seed: list[int] = typer.Option([0, 1, 2], "--seed", help="Training seed; repeatable."),
    steps: int = typer.Option(300, "--steps", help="Optimiser steps of the classifier."),
    cas_summary: Path | None = typer.Option(None, "--cas-summary", help="score-cas summary.json for the correlation."),
    train_split: str | None = typer.Option(None, "--train-split", help="Only use training rows with this split."),
    real_split: RealSplit = None,
    image_root: ImageRoot = None,
    device: Device = None,
    dtype: DtypeName = "fp32",
    batch_size: BatchSize = 32,
    progress: Progress = True,
) -> None:
    """Downstream utility: a linear head on frozen evaluator embeddings (or, with --backbone cnn/resnet18, an
    image classifier) trained on real images plus a fixed synthetic fraction per batch, at several real-data
    scales and seeds; accuracy and macro-F1 on the real test set, and their correlation with method CAS.

    Example:

        clinalign evaluate downstream --method craft=runs/craft/gen --method lora=runs/lora/gen \\
          --train data/train.csv --real data/test.jsonl --evaluator google/siglip-base-patch16-224 \\
          --cas-summary runs/cas/summary.json --out runs/eval/downstream
    """
    from clinalign.evaluation.downstream import DownstreamConfig, evaluate_downstream

    config = _config(
        DownstreamConfig,
        **_shared(locals()),
        train=str(train),
        train_split=train_split,
        evaluator=evaluator,
        backbone=backbone,
        image_size=image_size,
        learning_rate=learning_rate,
        synthetic_fraction=synthetic_fraction,
        scales=scale,
        seeds=seed,
        steps=steps,
        cas_summary=_str(cas_summary),
    )
    _report(evaluate_downstream(config, progress=progress))


@evaluate_app.command("judge")
def judge(
    generated: Generated = None,
    method: Methods = None,
    out: Out = ...,
    model: str = typer.Option(..., "--model", help="Multimodal model name at the endpoint."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (vLLM, Ollama, ...)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable with the API key."),
    task: str = typer.Option("both", "--task", help="audit (checklist pass/fail), rank, or both."),
    checklists: Path | None = typer.Option(None, "--checklists", help="Checklists file (class -> attributes)."),
    n_cases: int | None = typer.Option(None, "--n-cases", help="Rank: cases to sample (default: all shared)."),
    max_images: int | None = typer.Option(None, "--max-images", help="Audit: at most N images per method."),
    seed: int = typer.Option(0, "--seed", help="Seed of the case sample and candidate order."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples over cases (rank)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request."),
    max_retries: int = typer.Option(5, "--max-retries", help="Retries on 429/5xx/timeouts."),
    max_repairs: int = typer.Option(2, "--max-repairs", help="Repair turns after an invalid reply."),
    response_format: str = typer.Option("json_schema", "--response-format", help="json_schema, json_object or text."),
    max_tokens: int = typer.Option(800, "--max-tokens", help="Completion token limit per request."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature."),
    price_input: float | None = typer.Option(None, "--price-input", help="USD per 1M prompt tokens (cost estimate)."),
    price_output: float | None = typer.Option(None, "--price-output", help="USD per 1M completion tokens."),
) -> None:
    """An MLLM judge through the enrichment client: (a) checklist audit, pass/fail with a reason per image
    and attribute -> pass rates per method, class and attribute; (b) blinded ranking of each case's
    candidates -> top-1 rates and Bradley–Terry scores. Finished requests are kept: a rerun resumes.

    Example:

        clinalign evaluate judge --method craft=runs/craft/gen --method lora=runs/lora/gen \\
          --checklists checklists.json --model gpt-4o-mini --out runs/eval/judge
    """
    from clinalign.enrich.config import EnrichConfig
    from clinalign.evaluation.judge import JudgeConfig, evaluate_judge

    endpoint = _config(
        EnrichConfig,
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=concurrency,
        request_timeout=timeout,
        max_retries=max_retries,
        max_repairs=max_repairs,
        response_format=response_format,
        max_tokens=max_tokens,
        temperature=temperature,
        price_input_per_mtok=price_input,
        price_output_per_mtok=price_output,
        progress=False,
    )
    config = _config(
        JudgeConfig,
        **_shared(locals()),
        checklists=_str(checklists),
        task=task,
        n_cases=n_cases,
        max_images=max_images,
        seed=seed,
        n_boot=n_boot,
        endpoint=endpoint,
    )
    result = evaluate_judge(config)
    _report(result)
    typer.echo(result.summary["cost"])
    for failure in result.summary["failures"]:
        typer.echo(f"failed: {failure}", err=True)


@preference_app.command("export")
def preference_export(
    generated: Generated = None,
    method: Methods = None,
    out: Out = ...,
    n_cases: int | None = typer.Option(None, "--n-cases", help="Cases to sample (default: all shared cases)."),
    rater: list[str] = typer.Option(["rater1"], "--rater", help="Rater id pre-filled in the sheet; repeatable."),
    seed: int = typer.Option(0, "--seed", help="Seed of the case sample and letter shuffles."),
    tile: int = typer.Option(256, "--tile", help="Image side in the grids, in pixels."),
) -> None:
    """Write a blinded ranking kit: one grid per case (letters A..E), rankings.csv to fill, and a sealed
    answer key in OUT/sealed/ (do not hand that folder to raters).

    Example:

        clinalign evaluate preference export --method craft=runs/craft/gen --method lora=runs/lora/gen \\
          --method zero_shot=runs/zs/gen --rater r1 --rater r2 --n-cases 50 --out study
    """
    from clinalign.evaluation.preference import PreferenceExportConfig, export_preference_kit

    config = _config(
        PreferenceExportConfig,
        **_shared(locals()),
        n_cases=n_cases,
        raters=rater,
        seed=seed,
        tile=tile,
    )
    result = export_preference_kit(config)
    typer.echo(f"wrote {result.summary['n_cases']} cases to {result.out_dir}; answer key: {result.files['key']}")


@preference_app.command("import")
def preference_import(
    rankings: Path = typer.Argument(..., help="The filled rankings.csv (rater, case, ranking like 'C>A>B')."),
    key: Path = typer.Option(..., "--key", help="The sealed answer_key.json written by export."),
    out: Out = ...,
    cas_summary: Path | None = typer.Option(
        None, "--cas-summary", help="A score-cas summary.json: report the CAS–BT correlation."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples over cases."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Top-1 rates and Bradley–Terry scores per method with 95% bootstrap CIs over cases, and the
    correlation of BT scores with method CAS. Ties, missing letters and unknown cases exit 2 naming the row.

    Example:

        clinalign evaluate preference import study/rankings.csv --key study/sealed/answer_key.json \\
          --cas-summary runs/cas/summary.json --out study/results
    """
    from clinalign.evaluation.preference import PreferenceImportConfig, import_preference

    config = _config(
        PreferenceImportConfig,
        rankings=str(rankings),
        key=str(key),
        cas_summary=_str(cas_summary),
        n_boot=n_boot,
        seed=seed,
        out=str(out),
    )
    result = import_preference(config)
    _report(result)
    correlation = result.summary.get("cas_bt_correlation")
    if correlation:
        typer.echo(
            f"CAS vs BT: Pearson r = {correlation['pearson_r']:.3f} (p = {correlation['pearson_p']:.3g}), "
            f"Spearman ρ = {correlation['spearman_rho']:.3f} (p = {correlation['spearman_p']:.3g})"
        )


evaluate_app.add_typer(preference_app, name="preference")


def register(app: typer.Typer) -> None:
    app.add_typer(evaluate_app, name="evaluate")
