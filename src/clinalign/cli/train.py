"""``clinalign train`` and ``clinalign generate``: thin wrappers over clinalign.training / clinalign.diffusion."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from clinalign.cli._choices import Dtype as DType
from clinalign.errors import ConfigError

_TRAIN_HELP = """Train an adapter of a Stable Diffusion model: CRAFT (DRaFT-K), LoRA, TI, TI+LoRA or Diffusion-DPO.

The config's `method` (craft | lora | ti | ti_lora | dpo; default craft) picks the trainer. \
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

_GENERATE_HELP = """Generate PNGs from prompts with a base model, optionally a trained LoRA and/or learnt TI tokens.

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
  clinalign generate --model ./sd --textual-inversion runs/ti/textual_inversion --prompts p.txt --out gen/
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
    from clinalign.training import TrainingInterrupted, load_train_config, train_from_config
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
    cfg = load_train_config(config, set_items=list(set_ or []), **flags)
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
    what = "LoRA" if result.lora_dir is not None else "artifact"
    typer.echo(f"trained {result.global_step} steps; {what} written to {result.artifact_dir}")


def generate(
    model: str = typer.Option(..., "--model", help="Base model: hub id or local diffusers directory."),
    prompts: Path = typer.Option(..., "--prompts", help=".jsonl (prompt or t_ep, label, id) or .txt file."),
    out: Path = typer.Option(..., "--out", help="Output directory (PNGs + manifest.jsonl)."),
    lora: str | None = typer.Option(None, "--lora", help="LoRA directory written by `clinalign train`."),
    textual_inversion: str | None = typer.Option(
        None,
        "--textual-inversion",
        help="Textual-inversion folder (`method: ti` output) or diffusers TI file; a TI+LoRA folder given to "
        "--lora brings its own tokens.",
    ),
    ti_prompt_template: str | None = typer.Option(
        None,
        "--ti-prompt-template",
        help="With TI tokens: the prompt the model sees per row, from {token} (the row's class token), {label} "
        "and {prompt}; default: the template the artifact was trained with.",
    ),
    raw_prompts: bool = typer.Option(
        False, "--raw-prompts", help="With TI tokens: use the prompts as they are (write the tokens yourself)."
    ),
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
    from clinalign.artifacts import load_artifact_meta
    from clinalign.training.trainer import TI_SUBFOLDER

    diffusion = load_diffusion_model(model, device=device or ranks.device, dtype=dtype.value)
    bundled = Path(lora) / TI_SUBFOLDER if lora is not None else None
    if textual_inversion is None and bundled is not None and bundled.is_dir():
        textual_inversion = str(bundled)  # a TI+LoRA artifact: the LoRA was trained on prompts with these tokens
    if textual_inversion is not None:
        diffusion.load_textual_inversion(textual_inversion)
    if lora is not None:
        diffusion.load_lora(lora)
    meta = load_artifact_meta(textual_inversion, lora)
    prompt_rule = None
    if textual_inversion is not None and not raw_prompts:
        prompt_rule = _class_prompt_rule(textual_inversion, lora, ti_prompt_template)
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
        extra={"lora": lora, "textual_inversion": textual_inversion, "prompts": str(prompts)},
        ranks=ranks,
        prompt_rule=prompt_rule,
    )
    if ranks.is_main:
        # the images carry what trained their generator (training critics and their fingerprints), so scoring
        # can detect evaluation leakage even after the LoRA folder moves
        if meta is not None:
            meta.save(out)
        for t in result.throughput:
            typer.echo(f"rank {t.rank}: {t.images} images in {t.seconds:.1f} s ({t.images_per_second:.2f} images/s)")
        typer.echo(
            f"wrote {result.generated} images ({result.skipped} already there, {result.total} in the set); "
            f"manifest: {result.manifest}"
        )


def _class_prompt_rule(textual_inversion: str, lora: str | None, template: str | None):
    """The class-token prompt rule of the loaded TI tokens: the artifact's, ``template`` overriding its template."""
    from clinalign.artifacts import ClassPromptRule, class_prompt_rule_for

    rule = class_prompt_rule_for(textual_inversion, lora)
    if rule is None:
        if template is not None:
            raise ConfigError(
                f"{textual_inversion}: no clinalign_meta.json with the class -> token map, so --ti-prompt-template "
                "cannot be applied; write the tokens into the prompts (they are used as they are)."
            )
        return None  # plain diffusers TI files: the prompts carry the tokens themselves
    if template is not None:
        if "{token}" not in template:
            raise ConfigError(f"--ti-prompt-template {template!r} has no '{{token}}'; e.g. '{{token}}, {{prompt}}'.")
        rule = ClassPromptRule(tokens=rule.tokens, template=template)
    return rule


_PAIRS_HELP = """Make Diffusion-DPO preference pairs: N seed-varied samples per prompt, best vs worst under a judge.

Writes OUT/samples (generate's layout; a rerun resumes) and OUT/pairs.jsonl (prompt, chosen, rejected, \
label, judge), the `train_data` of a `method: dpo` config. The judge is a reward on a critic \
(`--judge reward:ccs`, or vdc, dd with --probe), or a multimodal LLM that ranks each prompt's samples \
(`--judge mllm:<model>`, through the client and endpoint flags of `clinalign evaluate judge`: strict JSON \
ranking, repair turns, retries, cost estimate; answers kept in OUT/judge_rank.jsonl, so a rerun resumes).

\b
Examples:
  clinalign pairs --model stabilityai/stable-diffusion-2-1-base --prompts data/train_enriched.jsonl \\
      --checklists data/checklists.yaml --judge reward:ccs --critic google/medsiglip-448 --n-per-prompt 4 --out pairs/
  clinalign pairs --model stabilityai/stable-diffusion-2-1-base --prompts data/train_enriched.jsonl \\
      --judge mllm:google/medgemma-4b-it --base-url http://localhost:8000/v1 --n-per-prompt 4 --out pairs/
"""


def pairs(
    model: str = typer.Option(..., "--model", help="Base model: hub id or local diffusers directory."),
    prompts: Path = typer.Option(..., "--prompts", help=".jsonl (prompt or t_ep, label, checklist) or .txt file."),
    out: Path = typer.Option(..., "--out", help="Output directory (samples/ + pairs.jsonl)."),
    judge: str = typer.Option(
        "reward:ccs", "--judge", help="reward:<name> (vdc, ccs, dd, or a registered reward) or mllm:<model>."
    ),
    critic: str | None = typer.Option(None, "--critic", help="Critic the judging reward runs on (reward judges)."),
    probe: str | None = typer.Option(None, "--probe", help="LinearProbe directory (for reward:dd)."),
    checklists: Path | None = typer.Option(None, "--checklists", help="class -> checklist file (for reward:ccs)."),
    lora: str | None = typer.Option(None, "--lora", help="LoRA directory to sample with."),
    n_per_prompt: int = typer.Option(4, "--n-per-prompt", min=2, help="Samples per prompt."),
    seed: int = typer.Option(0, "--seed", help="Base seed."),
    resolution: int = typer.Option(512, "--resolution", min=8, help="Square image size in pixels."),
    steps: int = typer.Option(50, "--steps", min=1, help="Denoising steps."),
    guidance_scale: float = typer.Option(7.5, "--guidance-scale", help="Classifier-free guidance scale."),
    eta: float = typer.Option(0.0, "--eta", min=0.0, help="DDIM eta."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    base_url: str | None = typer.Option(None, "--base-url", help="MLLM judge: OpenAI-compatible endpoint."),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="MLLM judge: environment variable with the API key."
    ),
    concurrency: int = typer.Option(8, "--concurrency", help="MLLM judge: requests in flight."),
    timeout: float = typer.Option(60.0, "--timeout", help="MLLM judge: seconds per request."),
    max_retries: int = typer.Option(5, "--max-retries", help="MLLM judge: retries on 429/5xx/timeouts."),
    max_repairs: int = typer.Option(2, "--max-repairs", help="MLLM judge: repair turns after an invalid reply."),
    response_format: str = typer.Option(
        "json_schema", "--response-format", help="MLLM judge: json_schema, json_object or text."
    ),
    max_tokens: int = typer.Option(800, "--max-tokens", help="MLLM judge: completion token limit per request."),
    temperature: float = typer.Option(0.0, "--temperature", help="MLLM judge: sampling temperature."),
    price_input: float | None = typer.Option(None, "--price-input", help="MLLM judge: USD per 1M prompt tokens."),
    price_output: float | None = typer.Option(None, "--price-output", help="MLLM judge: USD per 1M completion tokens."),
) -> None:
    from dataclasses import replace

    from clinalign.diffusion import load_diffusion_model, read_prompts
    from clinalign.rewards.registry import build_rewards
    from clinalign.training.data import load_checklists
    from clinalign.training.pairs import MLLMJudge, make_preference_pairs

    kind, _, name = judge.partition(":")
    if kind not in ("reward", "mllm") or not name:
        raise ConfigError(
            f"--judge {judge!r}: use reward:<name> (e.g. reward:ccs) or mllm:<model> (e.g. mllm:gpt-4o-mini)."
        )
    rows = read_prompts(prompts)
    table = load_checklists(checklists) if checklists is not None else {}
    rows = [r if r.checklist or r.label is None else replace(r, checklist=table.get(r.label)) for r in rows]
    classes = None
    if kind == "reward":
        if critic is None:
            raise ConfigError(f"--judge {judge} scores with a reward on a critic: pass --critic (hub id or directory).")
        (scorer,) = build_rewards([name], critic=critic, probe=probe, device=device)
        classes = list(getattr(getattr(scorer, "probe", None), "class_names", None) or []) or None
    else:
        from clinalign.cli.enrich import _config as endpoint_config

        endpoint = endpoint_config(
            model=name, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, request_timeout=timeout,
            max_retries=max_retries, max_repairs=max_repairs, response_format=response_format, max_tokens=max_tokens,
            temperature=temperature, price_input_per_mtok=price_input, price_output_per_mtok=price_output,
            progress=False,
        )  # fmt: skip
        scorer = MLLMJudge(endpoint, seed=seed)
    diffusion = load_diffusion_model(model, device=device)
    if lora is not None:
        diffusion.load_lora(lora)
    path = make_preference_pairs(
        diffusion, rows, out, judge=scorer, n_per_prompt=n_per_prompt, seed=seed, resolution=resolution,
        num_inference_steps=steps, guidance_scale=guidance_scale, eta=eta, batch_size=batch_size,
        class_names=classes, progress_bar=not no_progress,
    )  # fmt: skip
    typer.echo(f"wrote {sum(1 for _ in path.open())} pairs to {path}")
    if isinstance(scorer, MLLMJudge):
        typer.echo(scorer.cost())
        for failure in scorer.failures:
            typer.echo(f"failed (a rerun retries it): {failure}", err=True)


def register(app: typer.Typer) -> None:
    app.command("train", help=_TRAIN_HELP)(train)
    app.command("generate", help=_GENERATE_HELP)(generate)
    app.command("pairs", help=_PAIRS_HELP)(pairs)
