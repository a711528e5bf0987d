"""Textual inversion: learn new class tokens (e.g. ``<cardiomegaly>``) with the standard diffusion loss.

Only the new tokens' embedding rows train; every other weight (UNet, VAE, the text encoder including
all existing embedding rows) stays bit-identical. The result is saved in diffusers' textual-inversion
format, so ``pipe.load_textual_inversion(path)`` loads it; TI+LoRA and CRAFT from a TI+LoRA start
load it through ``textual_inversion`` in a :class:`~clinalign.training.config.TrainConfig`.

>>> ti = TextualInversionTrainer(model="...", config=TIConfig(placeholder_tokens={"cardiomegaly": "<cardiomegaly>"},
...                              initializer_token="heart"), train_data="train.jsonl")
>>> ti.train(); ti.save_embeddings("runs/ti/embeddings")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field, model_validator

from clinalign.diffusion import DiffusionModel, denoising_loss
from clinalign.diffusion.adapters import TI_WEIGHT_NAME, token_file_name
from clinalign.training.config import _FIELDS_CONFIG, BaseTrainConfig, _DataFields, _ModelFields, _SamplingFields
from clinalign.training.core import LossOutput, TrainBatch, Trainer
from clinalign.training.data import TrainExample, load_pixels
from clinalign.training.trainer import class_prompt


class _TIMethodFields(BaseModel):
    """TIConfig options: the method and the new tokens."""

    model_config = _FIELDS_CONFIG

    # ---------------------------------------------------------------- method
    method: Literal["ti"] = Field("ti", description="Textual inversion.")
    placeholder_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="Class name -> new token, e.g. {cardiomegaly: '<cardiomegaly>'}; every training label needs one.",
    )
    initializer_token: str = Field(
        "photo", description="A single-token word whose embedding initialises every new token (e.g. 'heart')."
    )
    num_vectors: int = Field(1, description="Embedding vectors per new token (<t>, <t>_1, ...).", ge=1)
    ti_prompt_template: str = Field(
        "{token}",
        description="Training prompt per row from its token ({token}), class ({label}) and enriched prompt "
        "({prompt}), e.g. 'a chest x-ray showing {token}'.",
    )


class TIConfig(BaseTrainConfig, _SamplingFields, _DataFields, _TIMethodFields, _ModelFields):
    """Options of a textual-inversion run: the shared :class:`BaseTrainConfig` fields plus the tokens.

    Paper (CRAFT, TI+LoRA start): disease tokens learnt for 3,000 steps.
    """

    methods: ClassVar[tuple[str, ...]] = ("ti",)

    # ---------------------------------------------------------------- overridden defaults
    learning_rate: float = Field(5e-3, description="AdamW peak learning rate (token embeddings).", gt=0)
    weight_decay: float = Field(0.0, description="AdamW weight decay on the new token rows.", ge=0)
    max_steps: int | None = Field(3000, description="Stop after this many optimiser steps (paper: 3,000).", ge=1)

    @model_validator(mode="after")
    def _check_ti(self) -> TIConfig:
        if not self.placeholder_tokens:
            raise ValueError(
                "`placeholder_tokens` is empty; map each class to a new token, e.g. {cardiomegaly: '<cardiomegaly>'}."
            )
        if len(set(self.placeholder_tokens.values())) != len(self.placeholder_tokens):
            raise ValueError(f"`placeholder_tokens` gives two classes the same token: {self.placeholder_tokens}.")
        if "{token}" not in self.ti_prompt_template:
            raise ValueError(
                f"`ti_prompt_template` {self.ti_prompt_template!r} has no '{{token}}': the tokens would never be seen."
            )
        return self


class TextualInversionTrainer(Trainer):
    """Learn one or more new tokens per class; only their embedding rows train.

    Args:
        model: hub id / diffusers directory / loaded :class:`DiffusionModel`; default ``config.model``.
        config: the :class:`TIConfig`.
        train_data: rows with ``image``, ``label`` and optionally ``prompt`` (used by ``{prompt}`` in
            ``ti_prompt_template``); a JSONL/CSV path or a sequence of dicts.
        eval_data, eval_rewards, checklists, accelerator: as for :class:`~clinalign.training.Trainer`.
    """

    config_class = TIConfig
    artifact_name = "textual_inversion"
    label = "textual inversion"
    config: TIConfig

    def __init__(
        self,
        model: str | os.PathLike[str] | DiffusionModel | None = None,
        config: TIConfig | None = None,
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
        for e in [*self.train_examples, *self.eval_examples]:  # every row needs a token: fail now
            self.prompt_for(e)

    @property
    def adapter(self):
        return self.model.adapters["textual_inversion"]

    def setup_adapters(self) -> list[torch.nn.Parameter]:
        cfg = self.config
        return self.model.add_textual_inversion(
            cfg.placeholder_tokens, initializer_token=cfg.initializer_token, num_vectors=cfg.num_vectors
        )

    def load_train_rows(self, source: Any) -> list[TrainExample]:
        with warnings.catch_warnings():
            if "{prompt}" not in self.config.ti_prompt_template:
                # rows need no enriched prompt when the template does not use it
                warnings.filterwarnings("ignore", message=".*no enriched prompt.*", category=UserWarning)
            return super().load_train_rows(source)

    def prompt_for(self, example: TrainExample) -> str:
        cfg = self.config
        return class_prompt(cfg.ti_prompt_template, cfg.placeholder_tokens, example, where="train/eval data")

    def cache_texts(self) -> list[str]:
        return [text for e in self.train_examples for text in (e.prompt, e.checklist)]

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        """Standard diffusion loss on the real images, conditioned on prompts with the class tokens."""
        cfg, acc, model = self.config, self.accelerator, self.model
        real = load_pixels(batch.rows, cfg.resolution).to(acc.device)
        generator = torch.Generator().manual_seed(self.seed_for(batch.micro_step, 1))
        latents = model.encode_images(real, generator=generator)
        with acc.autocast():
            embeds = model.encode_prompts([self.prompt_for(e) for e in batch.rows], grad=True)
            loss = denoising_loss(model, latents, embeds, generator=generator)
        value = float(loss.detach())
        return LossOutput(loss=loss, metrics={"loss/diffusion": value, "loss/total": value})

    # ------------------------------------------------------------------ artifact
    def artifact_fields(self) -> dict[str, Any]:
        cfg = self.config
        files = {token: token_file_name(token) for token in cfg.placeholder_tokens.values()}
        if len(files) == 1:
            files = {token: TI_WEIGHT_NAME for token in files}
        return {
            "textual_inversion": {
                "placeholder_tokens": dict(cfg.placeholder_tokens),
                "initializer_token": cfg.initializer_token,
                "num_vectors": cfg.num_vectors,
                "prompt_template": cfg.ti_prompt_template,
                "files": files,
            }
        }

    def save_artifact(self, directory: Path) -> None:
        self.adapter.save(directory, is_main_process=self.accelerator.is_main_process)

    def save_embeddings(self, directory: str | os.PathLike[str]) -> Path:
        """Write the learnt tokens (diffusers textual-inversion format) plus ``clinalign_meta.json``.

        One ``<token>.safetensors`` per class; with a single class also ``learned_embeds.safetensors``,
        so ``pipe.load_textual_inversion(directory)`` works; with several, pass the files
        (``pipe.load_textual_inversion([...])``) or use ``clinalign generate --textual-inversion DIR``.
        Every process must call this.
        """
        return self.save(directory)

    def embeddings(self) -> dict[str, torch.Tensor]:
        """placeholder token -> learnt vectors [num_vectors, D]."""
        return self.adapter.rows()
