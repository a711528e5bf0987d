"""Device and dtype resolution shared by critics and diffusion models."""

from __future__ import annotations

import torch

from clinalign.errors import ConfigError

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "no": torch.float32,  # accelerate's name for "no mixed precision"
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}. Use 'cpu', 'cuda' or 'cuda:N'.") from exc


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None``/``"no"``/``"fp32"`` -> float32; ``"bf16"``, ``"fp16"`` (and torch dtypes) accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16.")
    return _DTYPES[key]
