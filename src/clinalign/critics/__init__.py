"""Frozen vision-language critics: differentiable image encoding, cached text encoding.

``load_critic`` picks a backend by name: ``open_clip:...`` names and directories holding an
``open_clip_config.json`` go to open_clip, everything else to transformers. New backends register
with :func:`register_backend`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from clinalign.critics.base import Critic, TextTruncationWarning, same_model
from clinalign.critics.cache import EmbeddingStore
from clinalign.critics.preprocess import ImagePreprocessConfig, preprocess_images
from clinalign.errors import ConfigError, ModelLoadError
from clinalign.utils.torch_utils import resolve_device, resolve_dtype

__all__ = [
    "Critic",
    "EmbeddingStore",
    "ImagePreprocessConfig",
    "TextTruncationWarning",
    "available_backends",
    "load_critic",
    "preprocess_images",
    "register_backend",
    "resolve_device",
    "resolve_dtype",
    "same_model",
]

CriticLoader = Callable[..., Critic]
_BACKENDS: dict[str, CriticLoader] = {}


def register_backend(name: str, loader: CriticLoader) -> None:
    """Register ``loader(name_or_path, *, device, dtype) -> Critic`` under ``name``."""
    _BACKENDS[name] = loader


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def _load_transformers(
    name_or_path: str, *, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
) -> Critic:
    from clinalign.critics.transformers_backend import load_transformers_critic

    return load_transformers_critic(name_or_path, device=device, dtype=dtype, allow_pickle=allow_pickle)


def _load_open_clip(
    name_or_path: str, *, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
) -> Critic:
    from clinalign.critics.open_clip_backend import load_open_clip_critic

    return load_open_clip_critic(name_or_path, device=device, dtype=dtype, allow_pickle=allow_pickle)


register_backend("transformers", _load_transformers)
register_backend("open_clip", _load_open_clip)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.isabs(name) or name.count("/") > 1


def load_critic(
    name_or_path: str | os.PathLike[str],
    backend: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    allow_pickle: bool = False,
) -> Critic:
    """Load a frozen vision-language critic.

    Args:
        name_or_path: a transformers hub id (``"google/medsiglip-448"``), a local directory saved with
            ``save_pretrained``, ``"open_clip:<model>[:<pretrained>]"``, ``"open_clip:hf-hub:<repo>"``,
            or a local open_clip directory (with ``open_clip_config.json``).
        backend: ``"auto"`` (default), ``"transformers"`` or ``"open_clip"``.
        device: where to run; default CUDA when available, else CPU.
        dtype: weights dtype (``"fp32"``, ``"bf16"``, ``"fp16"`` or a ``torch.dtype``); default fp32.
        allow_pickle: let a trusted *local* model with pickle weights (``.bin``) load; refused for hub ids.
            Without it only safetensors weights load.

    Returns:
        A :class:`Critic` with frozen parameters in eval mode.
    """
    name = str(name_or_path)
    if not name.strip():
        raise ConfigError("critic name is empty; pass a hub id, a local directory or 'open_clip:<model>'.")
    if backend == "auto":
        local = Path(name).expanduser()
        if name.startswith("open_clip:") or (local.is_dir() and (local / "open_clip_config.json").is_file()):
            backend = "open_clip"
        else:
            backend = "transformers"
    if backend not in _BACKENDS:
        raise ConfigError(f"unknown critic backend {backend!r}; available: {', '.join(available_backends())}.")
    if not name.startswith("open_clip:") and _looks_like_path(name) and not Path(name).expanduser().exists():
        raise ModelLoadError(f"critic directory not found: {name}. Check the path, or pass a hub id.")
    # backends registered by users may not know the flag: pass it only when set
    extra = {"allow_pickle": True} if allow_pickle else {}
    return _BACKENDS[backend](name, device=resolve_device(device), dtype=resolve_dtype(dtype), **extra)
