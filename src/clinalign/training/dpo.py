"""Diffusion-DPO (Wallace et al. 2023) on a LoRA: learn from (prompt, chosen, rejected) preference pairs.

For each pair, the chosen and rejected images are noised with the *same* noise and timestep; the
policy (UNet with the LoRA) and the reference (the same UNet with the LoRA disabled, so no second UNet
in memory) predict the noise for both. With per-sample errors ``e = ‖target − pred‖²`` (mean over
latent dimensions) and ``Δ = e_policy − e_reference``, the per-pair loss is

    ``−log σ(−β/2 · (Δ_chosen − Δ_rejected))``

as in the paper's implementation. At the LoRA's zero initialisation the policy equals the reference
and the loss is ``log 2``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from pydantic import BaseModel, Field

from clinalign.diffusion import DiffusionModel
from clinalign.diffusion.lora import LORA_WEIGHT_NAME
from clinalign.errors import ConfigError, DataError
from clinalign.training.config import (
    _FIELDS_CONFIG,
    BaseTrainConfig,
    LoraOptions,
    _DataFields,
    _ModelFields,
    _SamplingFields,
)
from clinalign.training.core import LossOutput, TrainBatch, Trainer


class _DPOMethodFields(BaseModel):
    """DPOConfig options: the method and beta."""

    model_config = _FIELDS_CONFIG

    # ---------------------------------------------------------------- method
    method: Literal["dpo"] = Field("dpo", description="Diffusion-DPO on a LoRA.")
    beta: float = Field(
        5000.0,
        description="β, the KL-regularisation strength; 5000 is the Diffusion-DPO paper's Stable Diffusion 1.5 "
        "setting (its SD1.5 launcher passes --beta_dpo 5000).",
        gt=0,
    )


class DPOConfig(BaseTrainConfig, LoraOptions, _SamplingFields, _DataFields, _DPOMethodFields, _ModelFields):
    """Options of a Diffusion-DPO run: the shared fields (in phase order), ``beta`` and the LoRA fields."""

    methods: ClassVar[tuple[str, ...]] = ("dpo",)

    # ---------------------------------------------------------------- overridden defaults
    learning_rate: float = Field(1e-5, description="AdamW peak learning rate (LoRA).", gt=0)
    batch_size: int = Field(4, description="Preference pairs per micro-batch per process.", ge=1)
    train_data: str | None = Field(
        None,
        description="Preference pairs JSONL: prompt, chosen, rejected (image paths, relative to the file's "
        "folder), optional label and id (`clinalign pairs` writes it).",
    )


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair: the prompt, the preferred image and the other one."""

    id: str
    prompt: str
    chosen: Path | Image.Image
    rejected: Path | Image.Image
    label: str | int | None = None


def load_pairs(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> list[PreferencePair]:
    """Preference pairs from a JSONL path or a sequence of dicts (``prompt``, ``chosen``, ``rejected``)."""
    from clinalign.utils.io import read_jsonl

    root: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: preference pairs file not found. Check `train_data`.")
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise DataError(f"{path}: preference pairs must be a .jsonl file (prompt, chosen, rejected per line).")
        rows: list[Mapping[str, Any]] = read_jsonl(path)
        root, where = path.parent, str(path)
    else:
        rows, where = list(source), "train_data"
    if not rows:
        raise DataError(f"{where}: no preference pairs.")
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"{where}, row {number}: expected a mapping with prompt/chosen/rejected.")
        prompt = row.get("prompt") or row.get("t_ep")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}, row {number}: missing 'prompt'; every pair needs the prompt it was made from.")
        images = []
        for key in ("chosen", "rejected"):
            value = row.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{where}, row {number}: missing '{key}' (an image path).")
            if not isinstance(value, Image.Image):
                image = Path(str(value)).expanduser()
                if not image.is_absolute() and root is not None:
                    image = root / image
                if not image.is_file():
                    raise DataError(f"{where}, row {number}: {key} image '{value}' not found (looked for {image}).")
                value = image
            images.append(value)
        label = row.get("label")
        pairs.append(
            PreferencePair(
                id=str(row.get("id") or f"pair-{number}"),
                prompt=prompt,
                chosen=images[0],
                rejected=images[1],
                label=label if label is None or isinstance(label, int) else str(label),
            )
        )
    return pairs


def _pixels(images: Sequence[Path | Image.Image], resolution: int) -> torch.Tensor:
    from clinalign.data import load_image
    from clinalign.data.images import pil_to_tensor

    return torch.stack(
        [pil_to_tensor((i if isinstance(i, Image.Image) else load_image(i)).convert("RGB"), resolution) for i in images]
    )


def diffusion_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    target_chosen: torch.Tensor,
    target_rejected: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair Diffusion-DPO loss [B] and the logit inside the sigmoid [B] from the four UNet predictions.

    Each prediction and target is [B,C,h,w]; errors are means over C,h,w in float32.
    """

    def err(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))

    delta_chosen = err(policy_chosen, target_chosen) - err(reference_chosen, target_chosen)
    delta_rejected = err(policy_rejected, target_rejected) - err(reference_rejected, target_rejected)
    inside = -0.5 * beta * (delta_chosen - delta_rejected)
    return -torch.nn.functional.logsigmoid(inside), inside


@dataclass
class DPOInputs:
    """The noised latents of one micro-batch: chosen rows first, then rejected (same noise and timestep).

    Attributes:
        noisy: [2B,C,h,w]; timesteps: [2B]; target: [2B,C,h,w] (noise or velocity); embeds: [2B,L,D].
    """

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    embeds: torch.Tensor


class DiffusionDPOTrainer(Trainer):
    """Diffusion-DPO on a UNet LoRA; the reference model is the same UNet with the LoRA disabled.

    Args:
        model: hub id / diffusers directory / loaded :class:`DiffusionModel`; default ``config.model``.
        config: the :class:`DPOConfig`.
        train_data: a pairs JSONL path or dicts with ``prompt``, ``chosen``, ``rejected`` (paths or PIL).
        eval_data, eval_rewards, checklists, accelerator: as for :class:`~clinalign.training.Trainer`.
    """

    config_class = DPOConfig
    artifact_name = "lora"
    label = "Diffusion-DPO"
    config: DPOConfig

    def __init__(
        self,
        model: str | os.PathLike[str] | DiffusionModel | None = None,
        config: DPOConfig | None = None,
        train_data: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        eval_data: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        *,
        eval_rewards: Sequence[Any] | Any | None = None,
        checklists: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        accelerator: Any | None = None,
    ) -> None:
        super().__init__(
            model,
            config,
            train_data,
            eval_data,
            eval_rewards=eval_rewards,
            checklists=checklists,
            accelerator=accelerator,
        )

    def setup_adapters(self) -> list[torch.nn.Parameter]:
        self.lora_spec = self.config.lora_spec()
        return self.model.add_lora(self.lora_spec)

    def load_train_rows(self, source: Any) -> list[PreferencePair]:
        if self.config.train_split is not None:
            raise ConfigError("`train_split` does not apply to preference pairs; remove it from a dpo config.")
        return load_pairs(source)

    def cache_texts(self) -> list[str]:
        return []

    def dpo_inputs(self, batch: TrainBatch) -> DPOInputs:
        """Encode both images of each pair and noise them with one shared noise draw and timestep per pair."""
        cfg, model = self.config, self.model
        rows: list[PreferencePair] = batch.rows
        n = len(rows)
        pixels = _pixels([r.chosen for r in rows] + [r.rejected for r in rows], cfg.resolution)
        generator = torch.Generator().manual_seed(self.seed_for(batch.micro_step, 1))
        latents = model.encode_images(pixels.to(self.accelerator.device), generator=generator)
        scheduler = model.scheduler
        noise = torch.randn((n, *latents.shape[1:]), generator=generator, dtype=torch.float32)
        noise = noise.to(latents.device, latents.dtype).repeat(2, 1, 1, 1)
        steps = int(scheduler.config.num_train_timesteps)
        timesteps = torch.randint(0, steps, (n,), generator=generator).to(latents.device).repeat(2)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if model.prediction_type == "epsilon":
            target = noise
        elif model.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ConfigError(f"unsupported scheduler prediction_type {model.prediction_type!r}.")
        embeds = model.encode_prompts([r.prompt for r in rows]).repeat(2, 1, 1)
        return DPOInputs(noisy=noisy, timesteps=timesteps, target=target, embeds=embeds)

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        """Policy (with grad) and reference (LoRA disabled, no grad) on the same noised pairs; the DPO loss."""
        model, acc = self.model, self.accelerator
        inputs = self.dpo_inputs(batch)
        with acc.autocast():
            policy = model.unet_forward(inputs.noisy, inputs.timesteps, inputs.embeds)
            with torch.no_grad(), model.adapters_disabled("lora"):
                reference = model.unet_forward(inputs.noisy, inputs.timesteps, inputs.embeds)
        pc, pr = policy.chunk(2)
        rc, rr = reference.chunk(2)
        tc, tr = inputs.target.chunk(2)
        per_pair, inside = diffusion_dpo_loss(pc, pr, rc, rr, tc, tr, beta=self.config.beta)
        loss = per_pair.mean()
        value = float(loss.detach())
        metrics = {
            "loss/dpo": value,
            "loss/total": value,
            "dpo/implicit_accuracy": float((inside > 0).float().mean()),
            "dpo/logit": float(inside.detach().mean()),
        }
        return LossOutput(loss=loss, metrics=metrics)

    # ------------------------------------------------------------------ artifact
    def artifact_fields(self) -> dict[str, Any]:
        spec = self.lora_spec
        return {
            "lora": {
                "rank": spec.rank,
                "alpha": spec.alpha,
                "dropout": spec.dropout,
                "targets": list(spec.targets),
                "layers": spec.layers,
                "weight_name": LORA_WEIGHT_NAME,
            }
        }

    def save_artifact(self, directory: Path) -> None:
        self.model.save_lora(directory, is_main_process=self.accelerator.is_main_process, provenance=self.metadata())

    def save_lora(self, directory: str | os.PathLike[str]) -> Path:
        """Write the LoRA in diffusers format plus ``clinalign_meta.json`` (``pipe.load_lora_weights(dir)``)."""
        return self.save(directory)
