"""Critics backed by open_clip (e.g. BiomedCLIP via ``open_clip:hf-hub:<repo>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clinalign.critics.base import Critic
from clinalign.critics.preprocess import ImagePreprocessConfig, interpolation_name
from clinalign.errors import ConfigError, MissingDependencyError, ModelLoadError

PREFIX = "open_clip:"


def parse_open_clip_name(spec: str) -> tuple[str, str | None]:
    """Split an open_clip critic name (``open_clip:<model>[:<pretrained>]``, ``hf-hub:``, a dir) into parts."""
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    if not body:
        raise ConfigError(
            f"critic name '{spec}' names no model. Use 'open_clip:<model>[:<pretrained>]', "
            "'open_clip:hf-hub:<repo>' or 'open_clip:local-dir:<path>'."
        )
    if body.startswith(("hf-hub:", "local-dir:")):
        return body, None
    if Path(body).expanduser().is_dir():
        return f"local-dir:{Path(body).expanduser().resolve()}", None
    model, _, pretrained = body.partition(":")
    return model, (pretrained or None)


def _preprocess_from_cfg(cfg: dict[str, Any]) -> ImagePreprocessConfig:
    size = cfg.get("size", 224)
    side = int(size[0] if isinstance(size, (tuple, list)) else size)
    mode = str(cfg.get("resize_mode", "shortest"))
    return ImagePreprocessConfig(
        resize_mode="squash" if mode == "squash" else "shortest",
        resize_size=side,
        crop_size=None if mode == "squash" else side,
        mean=tuple(float(m) for m in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),  # type: ignore[arg-type]
        std=tuple(float(s) for s in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),  # type: ignore[arg-type]
        interpolation=interpolation_name(cfg.get("interpolation")),
    )


class OpenClipCritic(Critic):
    """A frozen open_clip model. Build it with :func:`clinalign.load_critic`."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str) -> None:
        super().__init__(model)
        self.name = name
        self.tokenizer = tokenizer
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        if not cfg:
            image_size = getattr(model.visual, "image_size", 224)
            cfg = {"size": image_size}
        self.preprocess_config = _preprocess_from_cfg(cfg)
        self.max_text_tokens = int(getattr(tokenizer, "context_length", 77))
        with torch.no_grad():
            probe = self._text_features(["a"])
        self.embed_dim = int(probe.shape[-1])

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._module.encode_image(pixel_values)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts)
        return self._module.encode_text(tokens.to(self.device))

    def _token_lengths(self, texts: list[str]) -> list[int]:
        inner = getattr(self.tokenizer, "tokenizer", None)
        if inner is not None and callable(inner):  # HF tokenizer wrapped by open_clip
            return [len(ids) for ids in inner(texts, truncation=False)["input_ids"]]
        encode = getattr(self.tokenizer, "encode", None)
        if callable(encode):  # open_clip SimpleTokenizer: add start/end of text
            return [len(encode(text)) + 2 for text in texts]
        return [0 for _ in texts]


def load_open_clip_critic(
    spec: str, *, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
) -> OpenClipCritic:
    """Load an open_clip model from ``open_clip:...`` or a local ``open_clip_config.json`` directory.

    Local weights must be safetensors unless ``allow_pickle`` (trusted local files only).
    """
    from clinalign.utils.weights import check_weights_source

    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("open_clip_torch", "The open_clip critic backend") from exc
    model_name, pretrained = parse_open_clip_name(spec)
    if model_name.startswith("local-dir:") and not Path(model_name[len("local-dir:") :]).is_dir():
        raise ModelLoadError(f"open_clip local directory not found: {model_name[len('local-dir:') :]}. Check the path.")
    local = model_name[len("local-dir:") :] if model_name.startswith("local-dir:") else pretrained
    if local is not None and Path(local).expanduser().exists():
        check_weights_source(local, what="critic", allow_pickle=allow_pickle)
    elif allow_pickle:
        raise ConfigError(
            f"--allow-pickle is for trusted local files only, not for '{spec}'. Drop --allow-pickle, or download "
            "the weights and convert them to safetensors first."
        )
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, precision=precision, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"could not load open_clip model '{model_name}'"
            + (f" with pretrained '{pretrained}'" if pretrained else "")
            + f": {exc}. Known architectures: open_clip.list_models(); without network access only local "
            "directories (open_clip_config.json + weights) or cached weights load."
        ) from exc
    canonical = model_name if pretrained is None else f"{model_name}:{pretrained}"
    return OpenClipCritic(model, tokenizer, name=f"{PREFIX}{canonical}")
