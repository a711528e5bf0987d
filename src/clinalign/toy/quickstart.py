"""``clinalign quickstart``: the whole CRAFT method on the toy clinical world, on a CPU, offline.

Steps (each writes under ``out_dir`` and is skipped on a rerun when its outputs are complete):

1. generate ToyDerm train/test images (:func:`clinalign.toy.write_toyderm`);
2. enrich them with the ``toyderm`` preset: attribute JSON validated by the preset schema and
   rendered to ``t_ep`` by the same code as MLLM enrichment (no network);
3. fit DD probes for the training critic and for the evaluator on real training images;
4. zero-shot baseline: the base model generates for the held-out test prompts;
5. LoRA-finetuning baseline (λ_reward = 0, its own learning rate);
6. CRAFT: DRaFT-K with VDC + CCS + DD + SFS from the training critic (one or more seeds);
   with ``baselines="all"`` also the CRAFT paper's other Table-1 rows: textual inversion (one token per
   class), TI+LoRA (LoRA on prompts with the learnt tokens) and Diffusion-DPO (pairs of base-model samples
   judged offline by the training critic's VDC + CCS + DD);
7. evaluation beyond CAS with the evaluator: FD to the real test images, prompt-level diversity (a few
   prompts sampled several times per method), memorization against the training images, class silhouette;
8. score every method with the *evaluator* (CAS, tail analysis with τ from the real test images);
9. write ``report.html`` and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clinalign.errors import ConfigError, DataError
from clinalign.utils.io import read_json, write_json

METHODS = ("zero_shot", "lora", "craft")
#: the extra Table-1 baselines ``baselines="all"`` adds
EXTRA_BASELINES = ("ti", "ti_lora", "dpo")


class QuickstartConfig(BaseModel):
    """Settings of the toy end-to-end run; ``fast`` picks smaller defaults for every ``None`` field."""

    model_config = ConfigDict(extra="forbid")

    # --- run
    out_dir: str = Field("runs/quickstart", description="Where everything is written.")
    fast: bool = Field(False, description="A smaller, quicker run (used by the tests).")
    seed: int = Field(0, description="Seed of the toy data, generation and the first CRAFT run.")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available).")
    progress: bool = Field(True, description="Show progress bars.")
    # --- data
    n_train: int | None = Field(None, ge=16, description="Training images (default 2000; fast 800).")
    n_test: int | None = Field(None, ge=8, description="Held-out test images/prompts (default 400; fast 120).")
    # --- models (default: the shipped toy assets)
    base_model: str | None = Field(None, description="Base text-to-image model directory.")
    training_critic: str | None = Field(None, description="Critic whose rewards train CRAFT.")
    evaluator: str | None = Field(None, description="Critic that scores CAS; never used for training.")
    # --- sampling
    resolution: int = Field(32, description="Image side in pixels.")
    train_inference_steps: int = Field(10, ge=1, description="T of the DRaFT-K trajectories.")
    k: int = Field(
        10,
        ge=1,
        description="K: final trajectory steps that keep gradients (here all T=10). On the toy a wrong class is "
        "decided early in the trajectory; with K=1-3 the reward can only repaint the last steps, which the tiny "
        "critics rewarded as colour soup (reward hacking), while K=T changes what is drawn.",
    )
    eval_inference_steps: int = Field(20, ge=1, description="Denoising steps when generating for evaluation.")
    guidance_scale: float = Field(3.0, ge=0, description="Classifier-free guidance at training and generation.")
    # --- training
    craft_steps: int = Field(
        120,
        ge=1,
        description="CRAFT optimiser steps per seed, also with fast (which trains like one seed of the full run, on "
        "less data).",
    )
    lora_steps: int | None = Field(None, ge=1, description="LoRA-baseline steps (default: as CRAFT).")
    craft_learning_rate: float = Field(3e-3, gt=0, description="CRAFT learning rate.")
    craft_lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="CRAFT's learning-rate schedule; linear and cosine warm up over a tenth of the steps first "
        "(the LoRA baseline keeps a constant rate).",
    )
    lora_learning_rate: float = Field(3e-3, gt=0, description="LoRA-baseline learning rate (tuned separately).")
    batch_size: int = Field(8, ge=1, description="Prompts per step.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank.")
    craft_seeds: list[int] | None = Field(None, description="CRAFT training seeds (default [0, 1]; fast [0]).")
    # --- the other Table-1 baselines (baselines="all")
    baselines: Literal["default", "all"] = Field(
        "default",
        description="default: zero-shot and the LoRA baseline; all: also textual inversion, TI+LoRA and Diffusion-DPO.",
    )
    ti_steps: int | None = Field(None, ge=1, description="Textual-inversion steps (default: as CRAFT).")
    ti_learning_rate: float = Field(5e-2, gt=0, description="Textual-inversion learning rate (token rows).")
    ti_initializer: str = Field("lesion", description="The word whose embedding starts every class token.")
    dpo_steps: int | None = Field(None, ge=1, description="Diffusion-DPO steps (default: as CRAFT).")
    dpo_learning_rate: float = Field(3e-3, gt=0, description="Diffusion-DPO learning rate.")
    dpo_beta: float = Field(5000.0, gt=0, description="Diffusion-DPO beta (the Diffusion-DPO paper's SD setting).")
    dpo_prompts: int | None = Field(
        None, ge=1, description="Training prompts sampled for preference pairs (default 256; fast 64)."
    )
    dpo_samples: int = Field(4, ge=2, description="Base-model samples per prompt; best vs worst is one pair.")
    # --- scoring
    n_boot: int | None = Field(None, ge=2, description="Bootstrap resamples (default 1000; fast 200).")
    # --- evaluation beyond CAS
    evaluation: bool = Field(True, description="Run the fd, diversity, memorization and silhouette checks.")
    diversity_prompts: int | None = Field(
        None, ge=1, description="Held-out prompts sampled several times for diversity (default 16; fast 8)."
    )
    diversity_samples: int = Field(4, ge=2, description="Samples per prompt for diversity (paper: 4).")

    def resolved(self) -> QuickstartConfig:
        """A copy with every ``None`` default filled in for the chosen mode."""
        from clinalign.toy import paths

        fast = self.fast
        values = self.model_dump()
        defaults: dict[str, Callable[[], Any]] = {
            "n_train": lambda: 800 if fast else 2000,
            "n_test": lambda: 120 if fast else 400,
            "craft_seeds": lambda: [self.seed] if fast else [self.seed, self.seed + 1],
            "n_boot": lambda: 200 if fast else 1000,
            "diversity_prompts": lambda: 4 if fast else 8,
            "dpo_prompts": lambda: 64 if fast else 256,
            # shipped assets are looked up only when no model is given
            "base_model": lambda: str(paths.base_model_dir()),
            "training_critic": lambda: str(paths.training_critic_dir()),
            "evaluator": lambda: str(paths.evaluator_critic_dir()),
        }
        for key, default in defaults.items():
            if values.get(key) is None:
                values[key] = default()
        for key in ("lora_steps", "ti_steps", "dpo_steps"):
            if values[key] is None:
                values[key] = values["craft_steps"]
        resolved = QuickstartConfig(**values)
        if resolved.training_critic == resolved.evaluator:
            raise ConfigError(
                "the training critic and the evaluator are the same model; CAS must be scored by a critic "
                "that did not train the generator. Pass a different --evaluator."
            )
        return resolved


@dataclass
class QuickstartResult:
    """What :func:`run_quickstart` produced: the summary (also in ``summary.json``) and file locations."""

    summary: dict[str, Any]
    out_dir: Path
    report: Path
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


class _Steps:
    """Runs the numbered steps with timing and a one-line log each."""

    def __init__(self, log: Callable[[str], None], total: int) -> None:
        self.log = log
        self.total = total
        self.timings: dict[str, float] = {}

    def run(self, name: str, title: str, fn: Callable[[], Any]) -> Any:
        self.log(f"[{len(self.timings) + 1}/{self.total}] {title} ...")
        started = time.perf_counter()
        out = fn()
        self.timings[name] = round(time.perf_counter() - started, 2)
        self.log(f"      done in {self.timings[name]:.1f} s")
        return out


def _train_rows(enriched: Path, split: str) -> list[dict[str, Any]]:
    from clinalign.utils.io import read_jsonl

    root = enriched.parent
    rows = []
    for row in read_jsonl(enriched):
        if row.get("split") != split:
            continue
        rows.append(
            {
                "id": row["id"],
                "image": str(root / row["image"]),
                "prompt": row["t_ep"],
                "checklist": row["t_c"],
                "label": row["label"],
            }
        )
    return rows


def _records(enriched: Path, split: str):
    from clinalign.data.records import Record

    return [
        Record(id=r["id"], image=Path(r["image"]), label=r["label"], split=split) for r in _train_rows(enriched, split)
    ]


def _train_lora(
    cfg: QuickstartConfig,
    *,
    name: str,
    seed: int,
    rewards: list[Any] | None,
    train_rows: list[dict[str, Any]],
    out: Path,
    textual_inversion: Path | None = None,
) -> Path:
    """Train one LoRA (CRAFT when ``rewards``, else the plain LoRA baseline, or TI+LoRA on the prompts with
    the learnt tokens of ``textual_inversion``); returns the LoRA dir."""
    from clinalign.training import DraftKTrainer, TrainConfig

    lora_dir = out / "lora"
    if (lora_dir / "clinalign_meta.json").is_file():
        return lora_dir
    craft = rewards is not None
    config = TrainConfig(
        model=str(cfg.base_model),
        resolution=cfg.resolution,
        num_inference_steps=cfg.train_inference_steps,
        k=cfg.k,
        eta=1.0,
        guidance_scale=cfg.guidance_scale,
        repeats=1,
        lambda_diff=0.2 if craft else 1.0,
        lambda_reward=0.8 if craft else 0.0,
        lora_rank=cfg.lora_rank,
        learning_rate=cfg.craft_learning_rate if craft else cfg.lora_learning_rate,
        lr_scheduler=cfg.craft_lr_scheduler if craft else "constant",
        lr_warmup_steps=max(1, cfg.craft_steps // 10) if craft and cfg.craft_lr_scheduler != "constant" else 0,
        weight_decay=0.0,
        batch_size=cfg.batch_size,
        max_steps=cfg.craft_steps if craft else cfg.lora_steps,
        seed=seed,
        output_dir=str(out),
        log_with="none",
        progress_bar=cfg.progress,
        checkpoint_every=0,
        gradient_checkpointing=False,
        **({"method": "ti_lora", "textual_inversion": str(textual_inversion)} if textual_inversion else {}),
    )
    trainer = DraftKTrainer(model=str(cfg.base_model), rewards=rewards, config=config, train_data=train_rows)
    trainer.train()
    trainer.save_lora(lora_dir)
    return lora_dir


def _class_token(label: str) -> str:
    return "<" + label.replace(" ", "-") + ">"


def _train_ti(cfg: QuickstartConfig, train_rows: list[dict[str, Any]], out: Path) -> Path:
    """Textual inversion: one new token per class, learnt on the real training images; returns its folder."""
    from clinalign.training import TextualInversionTrainer, TIConfig

    ti_dir = out / "textual_inversion"
    if (ti_dir / "clinalign_meta.json").is_file():
        return ti_dir
    config = TIConfig(
        model=str(cfg.base_model),
        placeholder_tokens={label: _class_token(label) for label in sorted({r["label"] for r in train_rows})},
        initializer_token=cfg.ti_initializer,
        ti_prompt_template="{token}, {prompt}",
        resolution=cfg.resolution,
        learning_rate=cfg.ti_learning_rate,
        batch_size=cfg.batch_size,
        max_steps=cfg.ti_steps,
        seed=cfg.seed,
        output_dir=str(out),
        log_with="none",
        progress_bar=cfg.progress,
        checkpoint_every=0,
        gradient_checkpointing=False,
    )
    trainer = TextualInversionTrainer(model=str(cfg.base_model), config=config, train_data=train_rows)
    trainer.train()
    return ti_dir


def _train_dpo(
    cfg: QuickstartConfig, train_rows: list[dict[str, Any]], judge: Any, class_names: list[str], out: Path
) -> Path:
    """Diffusion-DPO: base-model samples of training prompts, best vs worst under ``judge``; returns the LoRA dir."""
    from clinalign.diffusion import PromptRow, load_diffusion_model
    from clinalign.training import DiffusionDPOTrainer, DPOConfig
    from clinalign.training.pairs import make_preference_pairs

    lora_dir = out / "lora"
    if (lora_dir / "clinalign_meta.json").is_file():
        return lora_dir
    # an even spread of the training prompts (the rows alternate between classes in no fixed order)
    step = max(1, len(train_rows) // (cfg.dpo_prompts or 1))
    chosen = train_rows[::step][: cfg.dpo_prompts]
    prompts = [
        PromptRow(prompt=r["prompt"], label=r["label"], ref_id=r["id"], checklist=r["checklist"]) for r in chosen
    ]
    model = load_diffusion_model(str(cfg.base_model), device=cfg.device)
    pairs = make_preference_pairs(
        model, prompts, out / "pairs", judge=judge, n_per_prompt=cfg.dpo_samples, seed=cfg.seed,
        resolution=cfg.resolution, num_inference_steps=cfg.eval_inference_steps, guidance_scale=cfg.guidance_scale,
        batch_size=64, class_names=class_names, progress_bar=cfg.progress,
    )  # fmt: skip
    del model
    n_pairs = sum(1 for line in pairs.read_text(encoding="utf-8").splitlines() if line.strip())
    if n_pairs == 0:
        raise DataError(
            f"{pairs}: the judge scored every sample of each prompt alike, so there are no preference pairs; "
            "raise dpo_samples or dpo_prompts."
        )
    config = DPOConfig(
        model=str(cfg.base_model),
        train_data=str(pairs),
        beta=cfg.dpo_beta,
        resolution=cfg.resolution,
        lora_rank=cfg.lora_rank,
        learning_rate=cfg.dpo_learning_rate,
        weight_decay=0.0,
        batch_size=min(cfg.batch_size, n_pairs),
        max_steps=cfg.dpo_steps,
        seed=cfg.seed,
        output_dir=str(out),
        log_with="none",
        progress_bar=cfg.progress,
        checkpoint_every=0,
        gradient_checkpointing=False,
    )
    trainer = DiffusionDPOTrainer(model=str(cfg.base_model), config=config)
    trainer.train()
    trainer.save_lora(lora_dir)
    return lora_dir


def _generate(
    cfg: QuickstartConfig,
    *,
    lora: Path | None,
    prompts_file: Path,
    out: Path,
    seed: int | None = None,
    n_per_prompt: int = 1,
    textual_inversion: Path | None = None,
) -> Path:
    from clinalign.diffusion import generate_to_dir, load_diffusion_model, read_prompts

    rows = read_prompts(prompts_file)
    manifest = out / "manifest.jsonl"
    if manifest.is_file():
        from clinalign.utils.io import read_jsonl

        if len(read_jsonl(manifest)) >= len(rows) * n_per_prompt:
            return out
    from clinalign.artifacts import class_prompt_rule_for

    model = load_diffusion_model(str(cfg.base_model), device=cfg.device)
    if textual_inversion is not None:
        model.load_textual_inversion(textual_inversion)
    if lora is not None:
        model.load_lora(lora)
    extra = {"lora": str(lora)} if lora is not None else None
    generate_to_dir(
        model,
        rows,
        out,
        n_per_prompt=n_per_prompt,
        seed=cfg.seed if seed is None else seed,
        resolution=cfg.resolution,
        num_inference_steps=cfg.eval_inference_steps,
        guidance_scale=cfg.guidance_scale,
        eta=0.0,
        batch_size=64,
        progress_bar=cfg.progress,
        extra=extra,
        prompt_rule=class_prompt_rule_for(textual_inversion, lora),
    )
    return out


def _evaluation(
    cfg: QuickstartConfig,
    out: Path,
    gen_dirs: dict[str, list[Path]],
    evaluator: Any,
    enriched: Path,
    test_file: Path,
    generators: dict[str, tuple[Path | None, Path | None]],
) -> dict[str, Any]:
    """fd, diversity, memorization and silhouette on the toy methods, written to ``cas/evaluation/<check>``.

    All four share one embedding cache, seeded with the real-image embeddings the probe step computed, so
    each image goes through the evaluator once; diversity samples ``diversity_samples`` images for each of
    the first ``diversity_prompts`` held-out prompts per method (the only extra generation).
    """
    from clinalign.critics.cache import EmbeddingStore
    from clinalign.evaluation import (
        DistributionConfig,
        DiversityConfig,
        MemorizationConfig,
        SilhouetteConfig,
        evaluate_diversity,
        evaluate_fd,
        evaluate_memorization,
        evaluate_silhouette,
    )
    from clinalign.evaluation.inputs import EmbeddingCache
    from clinalign.utils.io import atomic_write_text, read_jsonl

    # the evaluator probe's embedding store already holds every real image: the checks read them back from it
    # (and add the generated images to it) instead of encoding the real images again
    cache = EmbeddingCache(evaluator, store=EmbeddingStore(out / "probes" / "evaluator" / "cache", evaluator))
    methods = {m: [str(p) for p in paths] for m, paths in gen_dirs.items()}
    folder = out / "cas" / "evaluation"
    common = {"methods": methods, "device": cfg.device, "batch_size": 64}
    results: dict[str, Any] = {}
    fd_config = DistributionConfig(
        **common, real=str(test_file), evaluators=[str(cfg.evaluator)], out=str(folder / "fd")
    )
    results["fd"] = evaluate_fd(fd_config, critics={str(cfg.evaluator): cache})

    prompts = out / "enrich" / "diversity_prompts.jsonl"
    if not prompts.is_file():
        rows = read_jsonl(test_file)[: cfg.diversity_prompts]
        atomic_write_text(prompts, "".join(json.dumps(r) + "\n" for r in rows))
    diversity_sets = {
        m: [
            str(
                _generate(
                    cfg,
                    lora=lora,
                    textual_inversion=ti,
                    prompts_file=prompts,
                    out=out / "methods" / m / "gen_diversity",
                    n_per_prompt=cfg.diversity_samples,
                )
            )
        ]
        for m, (lora, ti) in generators.items()
    }
    diversity_config = DiversityConfig(**{**common, "methods": diversity_sets}, out=str(folder / "diversity"))
    results["diversity"] = evaluate_diversity(diversity_config, critic=cache)

    memorization_config = MemorizationConfig(
        **common, train=str(enriched), train_split="train", real=str(test_file), out=str(folder / "memorization")
    )
    results["memorization"] = evaluate_memorization(memorization_config, encoder=cache)
    silhouette_config = SilhouetteConfig(
        **common, real=str(test_file), evaluator=str(cfg.evaluator), out=str(folder / "silhouette")
    )
    results["silhouette"] = evaluate_silhouette(silhouette_config, critic=cache)
    return results


# settings that change no result: how the run is shown and where it lives; the extra baselines and the evaluation
# checks only add steps, whose outputs a rerun then adds beside the finished ones
_RESUME_FREE_FIELDS = frozenset({"out_dir", "progress", "baselines", "evaluation"})


def _check_same_settings(saved: Path, cfg: QuickstartConfig) -> None:
    """Refuse to resume a folder whose earlier run used other settings: its finished steps would be reused."""
    from clinalign.utils.outdir import changed_settings

    changed = changed_settings(saved, cfg.model_dump(), may_change=_RESUME_FREE_FIELDS)
    if changed:
        raise ConfigError(
            f"{saved.parent} holds a quickstart run with other settings, and a rerun would reuse its finished steps "
            f"({'; '.join(changed)}). Pass --overwrite to start over there, or choose another --out."
        )


def run_quickstart(config: QuickstartConfig, *, log: Callable[[str], None] = print) -> QuickstartResult:
    """Run the eight quickstart steps; returns the summary and writes ``report.html`` and ``summary.json``."""
    from clinalign.critics import load_critic
    from clinalign.probe_training import train_probe
    from clinalign.rewards import CCSReward, DDReward, SFSReward, VDCReward
    from clinalign.scoring import ScoreCASConfig, evaluate_cas
    from clinalign.toy import write_toyderm
    from clinalign.toy.enrich import enrich_toyderm
    from clinalign.toy.report import summarize, write_report

    started = time.perf_counter()
    cfg = config.resolved()
    out = Path(cfg.out_dir)
    _check_same_settings(out / "quickstart_config.json", cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "quickstart_config.json", cfg.model_dump())
    extra_methods = EXTRA_BASELINES if cfg.baselines == "all" else ()
    steps = _Steps(log, total=(9 if cfg.evaluation else 8) + len(extra_methods))

    files = steps.run(
        "data",
        f"generate ToyDerm ({cfg.n_train} train / {cfg.n_test} test images, seed {cfg.seed})",
        lambda: write_toyderm(out / "data", n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed),
    )
    enriched = steps.run(
        "enrich",
        "enrich with the 'toyderm' preset (schema-validated, rendered t_ep)",
        lambda: enrich_toyderm(files.enriched, out / "enrich"),
    )
    train_rows = _train_rows(enriched, "train")
    test_file = out / "enrich" / "test_prompts.jsonl"
    if not test_file.is_file():
        from clinalign.utils.io import atomic_open, read_jsonl

        with atomic_open(test_file) as handle:
            import json

            for row in read_jsonl(enriched):
                if row.get("split") == "test":
                    handle.write(json.dumps({**row, "image": str(enriched.parent / row["image"])}) + "\n")

    def probes() -> dict[str, Any]:
        result = {}
        train_records, test_records = _records(enriched, "train"), _records(enriched, "test")
        for role, name in (("training_critic", cfg.training_critic), ("evaluator", cfg.evaluator)):
            critic = load_critic(str(name), device=cfg.device)
            trained = train_probe(
                critic,
                train_records,
                out / "probes" / role,
                val_records=test_records,
                epochs=50,
                lr=1e-3,
                batch_size=256,
                seed=cfg.seed,
                progress=cfg.progress,
            )
            result[role] = {"critic": critic, "probe": trained.probe, "test_accuracy": trained.val_accuracy}
            log(f"      {role} probe accuracy on real test images: {trained.val_accuracy:.3f}")
        return result

    fitted = steps.run("probes", "fit DD probes (training critic and evaluator) on real training images", probes)

    gen_dirs: dict[str, list[Path]] = {}
    gen_dirs["zero_shot"] = [
        steps.run(
            "zero_shot",
            "zero-shot baseline: generate for the held-out test prompts",
            lambda: _generate(cfg, lora=None, prompts_file=test_file, out=out / "methods" / "zero_shot" / "gen"),
        )
    ]

    def lora_baseline() -> Path:
        lora = _train_lora(
            cfg, name="lora", seed=cfg.seed, rewards=None, train_rows=train_rows, out=out / "methods" / "lora"
        )
        return _generate(cfg, lora=lora, prompts_file=test_file, out=out / "methods" / "lora" / "gen")

    gen_dirs["lora"] = [
        steps.run("lora", f"LoRA-finetuning baseline (λ_reward = 0, {cfg.lora_steps} steps)", lora_baseline)
    ]

    def craft() -> list[Path]:
        critic, probe = fitted["training_critic"]["critic"], fitted["training_critic"]["probe"]
        dirs = []
        for seed in cfg.craft_seeds or [cfg.seed]:
            rewards = [VDCReward(critic), CCSReward(critic), DDReward(critic, probe), SFSReward(critic)]
            run_dir = out / "methods" / "craft" / f"seed{seed}"
            lora = _train_lora(cfg, name="craft", seed=seed, rewards=rewards, train_rows=train_rows, out=run_dir)
            # each seed samples with its own noise too: the spread over seeds covers training and sampling
            dirs.append(_generate(cfg, lora=lora, prompts_file=test_file, out=run_dir / "gen", seed=seed))
        return dirs

    gen_dirs["craft"] = steps.run(
        "craft",
        f"CRAFT: DRaFT-K with VDC+CCS+DD+SFS ({cfg.craft_steps} steps, seeds {cfg.craft_seeds})",
        craft,
    )
    # what generates each method's images: (LoRA, textual-inversion folder)
    methods_dir = out / "methods"
    generators: dict[str, tuple[Path | None, Path | None]] = {
        "zero_shot": (None, None),
        "lora": (methods_dir / "lora" / "lora", None),
        "craft": (methods_dir / "craft" / f"seed{(cfg.craft_seeds or [cfg.seed])[0]}" / "lora", None),
    }

    if "ti" in extra_methods:

        def ti() -> Path:
            ti_dir = _train_ti(cfg, train_rows, methods_dir / "ti")
            generators["ti"] = (None, ti_dir)
            return _generate(
                cfg, lora=None, textual_inversion=ti_dir, prompts_file=test_file, out=methods_dir / "ti" / "gen"
            )

        gen_dirs["ti"] = [steps.run("ti", f"textual inversion: one token per class ({cfg.ti_steps} steps)", ti)]

        def ti_lora() -> Path:
            ti_dir = methods_dir / "ti" / "textual_inversion"
            lora = _train_lora(
                cfg, name="ti_lora", seed=cfg.seed, rewards=None, train_rows=train_rows,
                out=methods_dir / "ti_lora", textual_inversion=ti_dir,
            )  # fmt: skip
            generators["ti_lora"] = (lora, lora / "textual_inversion")
            return _generate(
                cfg, lora=lora, textual_inversion=lora / "textual_inversion", prompts_file=test_file,
                out=methods_dir / "ti_lora" / "gen",
            )  # fmt: skip

        gen_dirs["ti_lora"] = [
            steps.run("ti_lora", f"TI+LoRA: LoRA on prompts with the learnt tokens ({cfg.lora_steps} steps)", ti_lora)
        ]

    if "dpo" in extra_methods:

        def dpo() -> Path:
            from clinalign.rewards import CompositeReward

            critic, probe = fitted["training_critic"]["critic"], fitted["training_critic"]["probe"]
            judge = CompositeReward([VDCReward(critic), CCSReward(critic), DDReward(critic, probe)])
            lora = _train_dpo(cfg, train_rows, judge, list(probe.class_names), methods_dir / "dpo")
            generators["dpo"] = (lora, None)
            return _generate(cfg, lora=lora, prompts_file=test_file, out=methods_dir / "dpo" / "gen")

        gen_dirs["dpo"] = [
            steps.run(
                "dpo",
                f"Diffusion-DPO: {cfg.dpo_prompts} prompts x {cfg.dpo_samples} base samples judged by the training "
                f"critic's VDC+CCS+DD, best vs worst ({cfg.dpo_steps} steps)",
                dpo,
            )
        ]

    def score():
        evaluator, probe = fitted["evaluator"]["critic"], fitted["evaluator"]["probe"]
        score_config = ScoreCASConfig(
            # the baselines first, CRAFT last (the order of the tables)
            methods={m: [str(p) for p in gen_dirs[m]] for m in sorted(gen_dirs, key=lambda m: m == "craft")},
            real=str(test_file),
            checklists=str(files.checklists),
            evaluator=str(cfg.evaluator),
            probe=str(out / "probes" / "evaluator"),
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            out=str(out / "cas"),
        )
        return evaluate_cas(score_config, evaluator=evaluator, probe=probe, progress=cfg.progress)

    evaluation: dict[str, Any] = {}
    if cfg.evaluation:
        # before scoring, so the CAS report (cas/tables.md, cas/summary.json) includes the checks too
        evaluation = steps.run(
            "evaluation",
            "evaluation beyond CAS: fd, diversity, memorization, silhouette",
            lambda: _evaluation(cfg, out, gen_dirs, fitted["evaluator"]["critic"], enriched, test_file, generators),
        )
    report = steps.run("score", "score every method with the evaluator (CAS, tail analysis)", score)
    summary = summarize(
        report,
        probe_accuracy={role: info["test_accuracy"] for role, info in fitted.items()},
        config=cfg.model_dump(),
        timings=steps.timings,
        n_boot=cfg.n_boot or 1000,
        seed=cfg.seed,
    )
    if evaluation:
        summary["evaluation"] = {check: result.summary["results"] for check, result in evaluation.items()}
    test_rows = _train_rows(enriched, "test")
    real_images = ([Path(r["image"]) for r in test_rows], [r["label"] for r in test_rows])
    report_path = steps.run(
        "report",
        "write report.html and summary.json",
        lambda: write_report(report, summary, out, real_images=real_images),
    )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "summary.json", summary)
    return QuickstartResult(summary=summary, out_dir=out, report=report_path, seconds=summary["seconds"])


def load_summary(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a finished run's ``summary.json``."""
    return read_json(Path(out_dir) / "summary.json")
