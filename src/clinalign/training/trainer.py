"""``DraftKTrainer``: reward gradients through the last K denoising steps into LoRA weights (CRAFT stage 2).

Per micro-batch of real rows (the shared loop in :mod:`clinalign.training.core` handles accumulation,
the cross-process all-reduce, clipping, skipping, evaluation and checkpoints):

1. diffusion loss ``λ_diff · ‖target − ε_θ(z_t, t, t_ep)‖²`` on the real images' VAE latents (one UNet
   call with gradients), backpropagated at once;
2. for each of M trajectories: sample T steps from the enriched prompts (T−K under no_grad, K with
   gradients, checkpointed), decode with gradients, score with the rewards (real images as SFS
   references) and backpropagate ``−λ_reward · mean reward / M`` at once, so only one trajectory's
   graph is alive at a time.

With ``lambda_reward: 0`` this is the plain LoRA baseline (``method: lora``); with ``textual_inversion``
the prompts carry learnt class tokens (``method: ti_lora``, and CRAFT from a TI+LoRA start with
``init_lora``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clinalign.artifacts import META_NAME, ArtifactMeta
from clinalign.diffusion import DiffusionModel, LoraSpec, denoising_loss, sample
from clinalign.diffusion.lora import LORA_WEIGHT_NAME
from clinalign.errors import ConfigError, DataError
from clinalign.rewards.registry import build_rewards
from clinalign.training.config import TrainConfig
from clinalign.training.core import (
    LossOutput,
    RewardHackingWarning,
    TrainBatch,
    Trainer,
    TrainingDivergedError,
    TrainOutput,
    composite_rewards,
    warm_text_caches,
)
from clinalign.training.data import TrainExample, load_examples, load_pixels

# kept importable from here (older code and tests import them from this module)
_composite = composite_rewards

__all__ = [
    "META_NAME",
    "DraftKTrainer",
    "RewardHackingWarning",
    "TrainOutput",
    "TrainingDivergedError",
    "build_rewards",
    "train_from_config",
    "warm_text_caches",
]


def repeat_reward_batch(batch: Any, n: int) -> Any:
    """``batch`` for ``n`` trajectories sampled together: every field repeated ``n`` times (trajectory-major),
    reference embeddings already computed for ``batch`` reused rather than recomputed."""
    if n == 1:
        return batch
    from clinalign.rewards import RewardBatch

    repeated = RewardBatch(
        prompts=list(batch.prompts) * n,
        checklists=list(batch.checklists) * n,
        labels=batch.labels.repeat(n),
        references=batch.references.repeat(n, 1, 1, 1) if batch.references is not None else None,
    )
    repeated._reference_cache.update({key: emb.repeat(n, 1) for key, emb in batch._reference_cache.items()})
    return repeated


def textual_inversion_tokens(directory: str | os.PathLike[str]) -> dict[str, str]:
    """class -> placeholder token recorded in a textual-inversion folder's ``clinalign_meta.json``."""
    meta = ArtifactMeta.load(directory)
    tokens = ((meta.textual_inversion or {}) if meta is not None else {}).get("placeholder_tokens")
    if not isinstance(tokens, dict) or not tokens:
        raise ConfigError(
            f"{directory}: no class -> token mapping found (clinalign_meta.json with textual_inversion."
            "placeholder_tokens). Point `textual_inversion` at the folder a `method: ti` run wrote."
        )
    return {str(k): str(v) for k, v in tokens.items()}


def class_prompt(template: str, tokens: Mapping[str, str], example: TrainExample, *, where: str) -> str:
    """``template`` filled with the row's class token, label and enriched prompt."""
    token = tokens.get(str(example.label))
    if token is None:
        raise DataError(
            f"{where}: row '{example.id}' has label '{example.label}', which has no textual-inversion token "
            f"(tokens for {sorted(tokens)}). Train TI on every class, or drop those rows."
        )
    return template.format(token=token, label=example.label, prompt=example.prompt)


class DraftKTrainer(Trainer):
    """Reward finetuning of Stable Diffusion LoRA weights with DRaFT-K (CRAFT stage 2).

    Args:
        model: hub id or diffusers directory of the base model, or a loaded :class:`DiffusionModel`
            (without LoRA); default ``config.model``.
        rewards: reward objects (``name`` + ``__call__(images, batch) -> [B]``) or a ``CompositeReward``;
            default: built from ``config.rewards`` on ``config.critic`` (+ ``config.probe`` for dd).
            Per-reward weights come from ``config.reward_weights``.
        config: the :class:`TrainConfig`.
        train_data: enriched JSONL / manifest path or a sequence of dicts with ``image``, ``prompt``
            (or ``t_ep``), ``checklist`` (or ``t_c``) and ``label``; default ``config.train_data``.
        eval_data: held-out rows in the same format, for periodic evaluation; default ``config.eval_data``.
        eval_rewards: rewards on a *different* critic scoring the held-out samples; default built from
            ``config.eval_critic`` (+ ``config.eval_probe``).
        checklists: class -> checklist mapping (or file) for rows without one; default ``config.checklists``.
        accelerator: an ``accelerate.Accelerator`` to use (default: one built from the config).
    """

    config_class = TrainConfig
    artifact_name = "lora"
    config: TrainConfig

    def __init__(
        self,
        model: str | os.PathLike[str] | DiffusionModel | None = None,
        rewards: Sequence[Any] | Any | None = None,
        config: TrainConfig | None = None,
        train_data: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        eval_data: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        *,
        eval_rewards: Sequence[Any] | Any | None = None,
        checklists: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        accelerator: Any | None = None,
    ) -> None:
        self._ti_tokens: dict[str, str] = {}
        super().__init__(
            model,
            config,
            train_data,
            eval_data,
            eval_rewards=eval_rewards,
            checklists=checklists,
            accelerator=accelerator,
            rewards=rewards,
        )
        if self._ti_tokens:  # every row must have a token: fail now, not mid-run
            for e in [*self.train_examples, *self.eval_examples]:
                self.prompt_for(e)

    # ------------------------------------------------------------------ the method
    @property
    def method_label(self) -> str:
        """What this run trains, for progress bars and logs: CRAFT when rewards are on, else the LoRA baseline."""
        base = "CRAFT (DRaFT-K)" if self.config.lambda_reward > 0 else "LoRA baseline"
        return f"{base}, TI start" if self._ti_tokens else base

    def setup_adapters(self) -> list[torch.nn.Parameter]:
        cfg, model = self.config, self.model
        if cfg.textual_inversion is not None:
            self._ti_tokens = textual_inversion_tokens(cfg.textual_inversion)
            model.load_textual_inversion(cfg.textual_inversion)
        if cfg.init_lora is None:
            self.lora_spec = cfg.lora_spec()
            return model.add_lora(self.lora_spec)
        self.lora_spec = _check_init_lora(cfg)
        return model.load_lora(cfg.init_lora, trainable=True)

    def setup_objective(self, rewards: Sequence[Any] | Any | None) -> None:
        cfg = self.config
        if rewards is None and cfg.lambda_reward > 0:
            rewards = build_rewards(cfg.rewards, critic=cfg.critic, probe=cfg.probe, device=self.accelerator.device)
        self.reward_fn = composite_rewards(
            rewards if rewards is not None else [], cfg.reward_weights, cfg.reward_weight_mode
        )
        if cfg.lambda_reward > 0 and self.reward_fn is None:
            raise ConfigError(
                "`lambda_reward` > 0 but no rewards were given; pass rewards=[...] or set lambda_reward 0."
            )

    def load_train_rows(self, source: Any) -> list[TrainExample]:
        cfg = self.config
        need_checklist = self.reward_fn is not None and "ccs" in self.reward_fn.names
        return load_examples(
            source, checklists=self._checklists, prompt_template=cfg.prompt_template,
            require_checklist=need_checklist, what="train_data", split=cfg.train_split,
        )  # fmt: skip

    def prompt_for(self, example: TrainExample) -> str:
        """The prompt the UNet is conditioned on: the enriched prompt, or with TI the template with the token.

        Rewards always see the enriched prompt itself (critics do not know the learnt tokens).
        """
        if not self._ti_tokens:
            return example.prompt
        return class_prompt(self.config.ti_prompt_template, self._ti_tokens, example, where="train/eval data")

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        """Diffusion loss, then M reward trajectories, each backpropagated at once (one graph alive at a time)."""
        cfg, acc, model = self.config, self.accelerator, self.model
        rows, micro_step = batch.rows, batch.micro_step
        real = load_pixels(rows, cfg.resolution).to(acc.device)
        prompt_embeds = model.encode_prompts([self.prompt_for(e) for e in rows])
        metrics: dict[str, float] = {}
        finite = True

        if cfg.lambda_diff > 0:
            generator = torch.Generator().manual_seed(self.seed_for(micro_step, 1))
            latents = model.encode_images(real, generator=generator)
            with acc.autocast():
                loss_diff = denoising_loss(model, latents, prompt_embeds, generator=generator)
            metrics["loss/diffusion"] = float(loss_diff.detach())
            finite = self.backward(cfg.lambda_diff * loss_diff) and finite

        if cfg.lambda_reward > 0 and self.reward_fn is not None:
            reward_batch = self._reward_batch(rows, real, self.reward_fn)
            totals, components = [], {}
            per_call = cfg.repeats_per_call
            for first in range(0, cfg.repeats, per_call):
                group = range(first, min(first + per_call, cfg.repeats))
                # one generator per trajectory, seeded as when each runs alone: batching changes no noise
                generators = [torch.Generator().manual_seed(self.seed_for(micro_step, 2, j)) for j in group]
                n = len(generators)
                with acc.autocast():
                    out = sample(
                        model,
                        prompt_embeds.repeat(n, 1, 1) if n > 1 else prompt_embeds,
                        height=cfg.resolution,
                        width=cfg.resolution,
                        num_inference_steps=cfg.num_inference_steps,
                        k=cfg.k,
                        eta=cfg.eta,
                        guidance_scale=cfg.guidance_scale,
                        generator=generators if n > 1 else generators[0],
                        gradient_checkpointing=cfg.gradient_checkpointing,
                    )
                # rewards run outside autocast: critics keep their own dtype (fp32 by default)
                scored = self.reward_fn(out.images.float(), repeat_reward_batch(reward_batch, n))
                per_trajectory = scored.total.view(n, -1).mean(dim=1)  # [n], mean reward of each trajectory
                totals.extend(float(v) for v in per_trajectory.detach())
                for name, value in scored.components.items():
                    means = value.detach().view(n, -1).mean(dim=1)
                    components.setdefault(name, []).extend(float(v) for v in means)
                finite = self.backward(-cfg.lambda_reward * per_trajectory.sum() / cfg.repeats) and finite
            metrics["reward/total"] = sum(totals) / len(totals)
            for name, values in components.items():
                metrics[f"reward/{name}"] = sum(values) / len(values)
        metrics["loss/total"] = cfg.lambda_diff * metrics.get("loss/diffusion", 0.0) - cfg.lambda_reward * metrics.get(
            "reward/total", 0.0
        )
        return LossOutput(loss=None, metrics=metrics, finite=finite)

    # ------------------------------------------------------------------ artifact
    def method_name(self) -> str:
        cfg = self.config
        if cfg.method == "craft" and cfg.lambda_reward == 0:
            return "ti_lora" if cfg.textual_inversion else "lora"
        return cfg.method

    def artifact_fields(self) -> dict[str, Any]:
        cfg = self.config
        fields: dict[str, Any] = {
            "lora": {
                "rank": self.lora_spec.rank,
                "alpha": self.lora_spec.alpha,
                "dropout": self.lora_spec.dropout,
                "targets": list(self.lora_spec.targets),
                "layers": self.lora_spec.layers,
                "weight_name": LORA_WEIGHT_NAME,
            }
        }
        if cfg.init_lora or cfg.textual_inversion:
            fields["init"] = {"init_lora": cfg.init_lora, "textual_inversion": cfg.textual_inversion}
        if self._ti_tokens:
            fields["textual_inversion"] = {
                "placeholder_tokens": dict(self._ti_tokens),
                "prompt_template": cfg.ti_prompt_template,
                "folder": TI_SUBFOLDER,
            }
        return fields

    def save_artifact(self, directory: Path) -> None:
        main = self.accelerator.is_main_process
        self.model.save_lora(directory, is_main_process=main, provenance=self.metadata())
        if main and self.config.textual_inversion is not None:
            # the LoRA was trained on prompts with the learnt tokens: ship them with it
            _copy_textual_inversion(Path(self.config.textual_inversion), directory / TI_SUBFOLDER)

    def save_lora(self, directory: str | os.PathLike[str]) -> Path:
        """Write the LoRA in diffusers format plus ``clinalign_meta.json``. Every process must call this."""
        return self.save(directory)


#: subfolder of a TI+LoRA artifact holding the textual-inversion tokens the LoRA was trained with
TI_SUBFOLDER = "textual_inversion"


def _copy_textual_inversion(source: Path, target: Path) -> None:
    from clinalign.diffusion.adapters import textual_inversion_files
    from clinalign.utils.io import atomic_write_bytes

    target.mkdir(parents=True, exist_ok=True)
    for file in textual_inversion_files(source):
        atomic_write_bytes(target / file.name, file.read_bytes())
    if (source / META_NAME).is_file():
        atomic_write_bytes(target / META_NAME, (source / META_NAME).read_bytes())


def _check_init_lora(cfg: TrainConfig) -> LoraSpec:
    """The shape of ``cfg.init_lora``, checked against the config's LoRA fields (a resumed run compares those)."""
    from clinalign.diffusion.lora import read_lora_metadata

    path = Path(cfg.init_lora or "")
    if not (path / LORA_WEIGHT_NAME).is_file():
        raise ConfigError(
            f"`init_lora` {cfg.init_lora}: no {LORA_WEIGHT_NAME} there; point it at a trained LoRA folder."
        )
    saved = read_lora_metadata(path)
    checks = {
        "lora_rank": (saved.get("lora_rank"), cfg.lora_rank),
        "lora_alpha": (saved.get("lora_alpha"), cfg.effective_lora_alpha),
        "lora_targets": (saved.get("lora_targets"), list(cfg.lora_targets)),
        "lora_layers": (saved.get("lora_layers"), cfg.lora_layers),
    }
    wrong = {k: v for k, (v, mine) in checks.items() if v is not None and v != mine}
    if wrong:
        raise ConfigError(
            f"`init_lora` {cfg.init_lora} was trained with {wrong}, which differs from this config; set those "
            "options to the saved values."
        )
    return cfg.lora_spec()


def train_from_config(config: Any) -> TrainOutput:
    """Build the trainer ``config`` names (its class / ``method``) entirely from the config and train it."""
    from clinalign.training.methods import trainer_for_config

    return trainer_for_config(config)(config=config).train()
