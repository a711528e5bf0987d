"""Differentiable image preprocessing for critics: resize, centre crop, normalise, all in torch.

The processors shipped with vision-language models work on PIL images or NumPy arrays and break the
autograd graph. Reward finetuning needs gradients from the critic's embedding back to the pixels, so
the same steps are reimplemented here with torch ops, reading sizes and statistics from the model's
own preprocessing config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_INTERPOLATION = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


@dataclass(frozen=True)
class ImagePreprocessConfig:
    """How a critic wants its pixels.

    Attributes:
        resize_mode: ``"shortest"`` scales the shorter side to ``resize_size`` keeping aspect ratio
            (CLIP); ``"squash"`` resizes straight to ``resize_size``² (SigLIP).
        resize_size: target of the resize step.
        crop_size: side of the centre crop, or ``None`` for no crop.
        mean, std: per-channel normalisation applied to [0,1] pixels.
        interpolation: ``"bicubic"`` or ``"bilinear"`` (antialiased when downscaling).
    """

    resize_mode: str
    resize_size: int
    crop_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @property
    def output_size(self) -> int:
        return self.crop_size if self.crop_size is not None else self.resize_size


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    downscale = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    kwargs = {"align_corners": False, "antialias": downscale} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(images, size=size, mode=mode, **kwargs)


def preprocess_images(images: torch.Tensor, cfg: ImagePreprocessConfig) -> torch.Tensor:
    """Map [B,3,H,W] pixels in [0,1] to the critic's normalised input, differentiably."""
    height, width = images.shape[-2:]
    if cfg.resize_mode == "shortest":
        scale = cfg.resize_size / min(height, width)
        target = (max(cfg.resize_size, round(height * scale)), max(cfg.resize_size, round(width * scale)))
    elif cfg.resize_mode == "squash":
        target = (cfg.resize_size, cfg.resize_size)
    else:  # pragma: no cover - guarded by the config builders
        raise ValueError(f"unknown resize_mode {cfg.resize_mode!r}")
    images = _resize(images, target, cfg.interpolation)
    if cfg.interpolation == "bicubic":
        # bicubic overshoots; the model was trained on clipped uint8 pixels
        images = images.clamp(0.0, 1.0)
    if cfg.crop_size is not None:
        h, w = images.shape[-2:]
        crop = cfg.crop_size
        if h < crop or w < crop:
            images = _resize(images, (max(h, crop), max(w, crop)), cfg.interpolation)
            h, w = images.shape[-2:]
        top, left = (h - crop) // 2, (w - crop) // 2
        images = images[..., top : top + crop, left : left + crop]
    mean = torch.tensor(cfg.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def interpolation_name(resample: int | str | None, default: str = "bicubic") -> str:
    """Translate a PIL resample code or a name into an ``F.interpolate`` mode we support."""
    if resample is None:
        return default
    if isinstance(resample, str):
        name = resample.lower()
        return name if name in ("bilinear", "bicubic") else default
    return _INTERPOLATION.get(int(resample), default)
