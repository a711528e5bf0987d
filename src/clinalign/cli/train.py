"""``clinalign train`` and ``clinalign generate``: thin wrappers over clinalign.training / clinalign.diffusion."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from clinalign.cli._choices import Dtype as DType
from clinalign.errors import ConfigError

_TRAIN_HELP = """Finetune LoRA weights of a Stable Diffusion model with DRaFT-K on clinical rewards (CRAFT).

All options live in the YAML/JSON config (see examples/craft_chexpert.yaml and docs/training.md); \
flags and `--set key=value` override them. SIGINT/SIGTERM save a checkpoint after the current step \
and exit 130/143; `--resume latest` continues exactly. \
Multi-GPU: `accelerate launch -m clinalign train --config craft.yaml`.

\b
Examples:
  clinalign train --config examples/craft_tiny.yaml
  clinalign train --config craft.yaml --resume latest
  clinalign train --config craft.yaml --out runs/lr5e-5 --set learning_rate=5e-5 --seed 1
"""

_GENERATE_HELP = """Generate PNGs from prompts with a base model and optionally a trained LoRA.

Writes OUT/images/*.png and OUT/manifest.jsonl (file, prompt, label, seed, sample_index, ref_id, \
checklist). Each image has its own seed derived from --seed, so output does not depend on \
--batch-size or on the number of processes; rerunning skips images already written and verified \
(also after a crash of any rank). Several processes: `accelerate launch --num_processes N -m \
clinalign generate ...` shards the prompts over ranks and merges one manifest in prompt order.

\b
Examples:
  clinalign generate --model stabilityai/stable-diffusion-2-1-base --lora runs/craft/lora \\
      --prompts data/test_enriched.jsonl --n-per-prompt 4 --out gen/ --seed 0
  accelerate launch --num_processes 4 -m clinalign generate --model ./sd --prompts test.jsonl --out gen/
  clinalign generate --model ./tiny-sd --prompts prompts.txt --n-per-prompt 2 --out gen/ --resolution 32
"""


class MixedPrecision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class Tracker(str, Enum):
    tensorboard = "tensorboard"
    wandb = "wandb"
    none = "none"


def train(
    config: Path = typer.Option(..., "--config", "-c", help="Training config (YAML or JSON)."),
    resume: str | None = typer.Option(None, "--resume", help="'latest' or a checkpoint directory."),
    out: str | None = typer.Option(None, "--out", "--output-dir", help="Override `output_dir`."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override `max_steps`."),
    seed: int | None = typer.Option(None, "--seed", help="Override `seed`."),
    mixed_precision: MixedPrecision | None = typer.Option(
        None, "--mixed-precision", help="Override `mixed_precision`."
    ),
    log_with: Tracker | None = typer.Option(None, "--log-with", help="Override `log_with` (experiment tracker)."),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Override any config option; VALUE is read as YAML (e.g. --set learning_rate=5e-5 "
        "--set eval_critic=null). Repeatable.",
    ),
    allow_config_change: bool = typer.Option(
        False,
        "--allow-config-change",
        help="With --resume: continue even though options that change the trajectory differ from the "
        "checkpoint's; the change is recorded in the run's metadata.",
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Empty the output folder first (fresh run)."),
) -> None:
    from clinalign.cli._output import claim
    from clinalign.training import TrainConfig, TrainingInterrupted, train_from_config
    from clinalign.training.config import parse_overrides
    from clinalign.utils.distributed import launched_rank

    flags = {
        "resume_from": resume,
        "output_dir": out,
        "max_steps": max_steps,
        "seed": seed,
        "mixed_precision": mixed_precision.value if mixed_precision else None,
        "log_with": log_with.value if log_with else None,
        "allow_config_change": True if allow_config_change else None,
        "progress_bar": False if no_progress else None,
    }
    cfg = TrainConfig.from_file(config, set_values=parse_overrides(set_ or []), **flags)
    if cfg.train_data is None:
        raise ConfigError(f"{config}: `train_data` is not set; point it at an enriched JSONL or a manifest.")
    if launched_rank() == 0:
        # under `accelerate launch` only the main process holds the folder (another rank taking the same lock
        # would be refused as a second writer); if it is refused, it exits 2 and the launcher stops the others
        hint = "pass --resume latest to continue it"
        claim(cfg.output_dir, command="train", overwrite=overwrite, resume=resume is not None, resume_hint=hint)
    try:
        result = train_from_config(cfg)
    except TrainingInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        raise typer.Exit(stopped.exit_code) from None
    typer.echo(f"trained {result.global_step} steps; LoRA written to {result.lora_dir}")


def generate(
    model: str = typer.Option(..., "--model", help="Base model: hub id or local diffusers directory."),
    prompts: Path = typer.Option(..., "--prompts", help=".jsonl (prompt or t_ep, label, id) or .txt file."),
    out: Path = typer.Option(..., "--out", help="Output directory (PNGs + manifest.jsonl)."),
    lora: str | None = typer.Option(None, "--lora", help="LoRA directory written by `clinalign train`."),
    n_per_prompt: int = typer.Option(1, "--n-per-prompt", min=1, help="Images per prompt."),
    seed: int = typer.Option(0, "--seed", help="Base seed; each image gets a seed derived from it."),
    resolution: int = typer.Option(512, "--resolution", min=8, help="Square image size in pixels."),
    steps: int = typer.Option(50, "--steps", min=1, help="Denoising steps."),
    guidance_scale: float = typer.Option(7.5, "--guidance-scale", help="Classifier-free guidance scale."),
    eta: float = typer.Option(0.0, "--eta", min=0.0, help="DDIM eta (0 deterministic, 1 DDPM-like)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    dtype: DType = typer.Option(DType.fp32, "--dtype", help="Weights dtype."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Empty --out first (a rerun otherwise resumes)."),
) -> None:
    from clinalign.cli._output import claim
    from clinalign.diffusion import generate_images, load_diffusion_model, read_prompts
    from clinalign.utils.distributed import process_group
    from clinalign.utils.outdir import existing_entries

    rows = read_prompts(prompts)
    ranks = process_group()

    def claim_out() -> None:  # main process only; the other ranks learn its outcome
        own = bool({"manifest.jsonl", "generate_config.json", "parts"} & set(existing_entries(out)))
        claim(out, command="generate", overwrite=overwrite, resume=own)  # its own run resumes

    # the lock is held by the main process for the whole command; a refusal stops every rank
    ranks.run_on_main(claim_out)
    diffusion = load_diffusion_model(model, device=device or ranks.device, dtype=dtype.value)
    if lora is not None:
        diffusion.load_lora(lora)
    result = generate_images(
        diffusion,
        rows,
        out,
        n_per_prompt=n_per_prompt,
        seed=seed,
        resolution=resolution,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        eta=eta,
        batch_size=batch_size,
        progress_bar=not no_progress,
        extra={"lora": lora, "prompts": str(prompts)},
        ranks=ranks,
    )
    if ranks.is_main:
        for t in result.throughput:
            typer.echo(f"rank {t.rank}: {t.images} images in {t.seconds:.1f} s ({t.images_per_second:.2f} images/s)")
        typer.echo(
            f"wrote {result.generated} images ({result.skipped} already there, {result.total} in the set); "
            f"manifest: {result.manifest}"
        )


def register(app: typer.Typer) -> None:
    app.command("train", help=_TRAIN_HELP)(train)
    app.command("generate", help=_GENERATE_HELP)(generate)
