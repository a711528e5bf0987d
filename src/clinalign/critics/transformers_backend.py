"""Critics backed by a transformers dual encoder (CLIP, SigLIP, MedSigLIP, PLIP, MetaCLIP 2, ...).

Any model that ``AutoModel`` loads and that exposes ``get_image_features`` / ``get_text_features``
works; tokenisation and image preprocessing follow the model's own saved tokenizer and image
processor configs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from clinalign.critics.base import Critic
from clinalign.critics.naflex import naflex_inputs
from clinalign.critics.preprocess import ImagePreprocessConfig, interpolation_name
from clinalign.errors import ConfigError, ModelLoadError

# Model families whose text tower was trained on sequences padded to the maximum length and pools
# the last token: padding to "longest" would change their text embeddings.
_PAD_TO_MAX_FAMILIES = ("siglip", "siglip2")


def _features(output: Any) -> torch.Tensor:
    """transformers < 5 returns a tensor; >= 5 returns an output whose pooler_output is projected."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot read features from model output of type {type(output).__name__}")


def _preprocess_from_processor(processor: Any, model_image_size: int) -> ImagePreprocessConfig:
    cfg = processor.to_dict() if hasattr(processor, "to_dict") else dict(processor)
    mean = tuple(cfg.get("image_mean") or (0.0, 0.0, 0.0)) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
    std = tuple(cfg.get("image_std") or (1.0, 1.0, 1.0)) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    size = cfg.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = None
    if cfg.get("do_center_crop"):
        crop_size = cfg.get("crop_size") or {}
        crop = int(crop_size.get("height", model_image_size)) if isinstance(crop_size, dict) else int(crop_size)
    if not cfg.get("do_resize", True):
        mode, resize = "squash", model_image_size
    elif "shortest_edge" in size:
        mode, resize = "shortest", int(size["shortest_edge"])
    elif "height" in size:
        mode, resize = "squash", int(size["height"])
    else:
        mode, resize = "squash", model_image_size
    if crop is None and mode == "shortest":
        # a shortest-edge resize with no crop leaves non-square inputs; a ViT needs its fixed size
        crop = resize
    return ImagePreprocessConfig(
        resize_mode=mode,
        resize_size=resize,
        crop_size=crop,
        mean=tuple(float(m) for m in mean),  # type: ignore[arg-type]
        std=tuple(float(s) for s in std),  # type: ignore[arg-type]
        interpolation=interpolation_name(cfg.get("resample")),
    )


class TransformersCritic(Critic):
    """A frozen transformers dual encoder. Build it with :func:`clinalign.load_critic`."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, *, name: str) -> None:
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise ConfigError(
                    f"{name}: {type(model).__name__} has no {method}(); a critic needs a dual image-text "
                    "encoder such as CLIP, SigLIP or MedSigLIP."
                )
        super().__init__(model)
        config = model.config
        self.name = name
        self.model_type = str(getattr(config, "model_type", "")).lower()
        vision_config = getattr(config, "vision_config", config)
        text_config = getattr(config, "text_config", config)
        model_image_size = getattr(vision_config, "image_size", None)
        if model_image_size is None:  # NaFlex configs give a patch budget instead of a size
            model_image_size = int(vision_config.patch_size) * math.isqrt(int(vision_config.num_patches))
        self.preprocess_config = _preprocess_from_processor(image_processor, int(model_image_size))
        limit = int(getattr(text_config, "max_position_embeddings", 77))
        tokenizer_limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 100_000:
            limit = min(limit, tokenizer_limit)
        self.max_text_tokens = limit
        self.pad_to_max_length = self.model_type in _PAD_TO_MAX_FAMILIES
        self.tokenizer = tokenizer
        self.embed_dim = int(getattr(config, "projection_dim", None) or text_config.hidden_size)
        self._naflex: dict[str, int] | None = None
        if self.model_type == "siglip2":
            settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {}
            patch = int(settings.get("patch_size") or vision_config.patch_size)
            max_patches = int(settings.get("max_num_patches") or vision_config.num_patches)
            self._naflex = {"patch_size": patch, "max_num_patches": max_patches}
            # square inputs map to this side; used where images must be batched before encoding
            side = patch * math.isqrt(max_patches)
            self.preprocess_config = ImagePreprocessConfig(
                resize_mode="squash",
                resize_size=side,
                crop_size=None,
                mean=self.preprocess_config.mean,
                std=self.preprocess_config.std,
                interpolation="bilinear",
            )

    def _prepare_pixels(self, images: torch.Tensor) -> torch.Tensor:
        if self._naflex is None:
            return super()._prepare_pixels(images)
        # NaFlex: normalisation and patching happen in _image_features, which needs the grid shape
        return images

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self._naflex is not None:
            cfg = self.preprocess_config
            inputs = naflex_inputs(pixel_values.float(), mean=cfg.mean, std=cfg.std, **self._naflex)
            inputs["pixel_values"] = inputs["pixel_values"].to(pixel_values.dtype)
            return _features(self._module.get_image_features(**inputs))
        return _features(self._module.get_image_features(pixel_values=pixel_values))

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            padding="max_length" if self.pad_to_max_length else True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenize(texts)
        inputs = {"input_ids": tokens["input_ids"].to(self.device)}
        if not self.pad_to_max_length and "attention_mask" in tokens:
            # SigLIP-family towers were trained without a padding mask; CLIP-style ones use it
            inputs["attention_mask"] = tokens["attention_mask"].to(self.device)
        return _features(self._module.get_text_features(**inputs))

    def _token_lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]


def load_transformers_critic(
    name_or_path: str | os.PathLike[str], *, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
) -> TransformersCritic:
    """Load a transformers dual encoder from a hub id or a local directory (safetensors weights only,
    unless ``allow_pickle`` for a trusted local directory)."""
    import transformers
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from clinalign.utils.weights import check_weights_source

    check_weights_source(name_or_path, what="critic", allow_pickle=allow_pickle)
    source = str(name_or_path)
    local = Path(source).expanduser()
    is_local = local.is_dir()
    ref = str(local.resolve()) if is_local else source
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model = AutoModel.from_pretrained(ref, use_safetensors=None if allow_pickle else True, **{dtype_key: dtype})
        tokenizer = AutoTokenizer.from_pretrained(ref)
        image_processor = AutoImageProcessor.from_pretrained(ref)
    except (OSError, ValueError, KeyError) as exc:
        where = f"the local directory {ref}" if is_local else f"'{source}' (hub id)"
        raise ModelLoadError(
            f"could not load a transformers critic from {where}: {exc}. The directory must hold a model "
            "config and weights, a tokenizer and an image processor config (save all three with "
            "save_pretrained). Without network access, hub ids only work if the model is in the local "
            "Hugging Face cache."
        ) from exc
    model.to(device)
    return TransformersCritic(model, tokenizer, image_processor, name=f"transformers:{ref}")
