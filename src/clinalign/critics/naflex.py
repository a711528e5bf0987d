"""Differentiable NaFlex preprocessing for SigLIP 2 (variable-resolution patch sequences).

SigLIP 2's NaFlex variants do not take a fixed-size image: the image is resized, keeping its aspect
ratio, to the largest size whose patch grid fits ``max_num_patches``, cut into patches, flattened to
a sequence and padded, with an attention mask and the grid shape passed alongside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def naflex_target_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """Largest (h, w) on the patch grid, keeping the aspect ratio, with at most ``max_num_patches`` patches."""

    def scaled(scale: float, side: int) -> int:
        return max(patch_size, math.ceil(side * scale / patch_size) * patch_size)

    def fits(scale: float) -> bool:
        return (scaled(scale, height) // patch_size) * (scaled(scale, width) // patch_size) <= max_num_patches

    low, high = 1e-6, 100.0
    # bisection on the scale: the patch count is monotone in it
    while high - low >= 1e-5:
        middle = (low + high) / 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return scaled(low, height), scaled(low, width)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B,C,H,W] -> [B, (H/p)*(W/p), p*p*C], patches in row-major grid order, channels last within a patch."""
    batch, channels, height, width = images.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, grid_h, patch_size, grid_w, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid_h * grid_w, patch_size * patch_size * channels)


def naflex_inputs(
    images: torch.Tensor,
    *,
    patch_size: int,
    max_num_patches: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> dict[str, torch.Tensor]:
    """Resize (antialiased bilinear), normalise and patchify [B,3,H,W] pixels in [0,1] -> SigLIP 2 model inputs."""
    target = naflex_target_size(images.shape[-2], images.shape[-1], patch_size, max_num_patches)
    if tuple(images.shape[-2:]) != target:
        downscale = target[0] < images.shape[-2] or target[1] < images.shape[-1]
        images = F.interpolate(images, size=target, mode="bilinear", align_corners=False, antialias=downscale)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    patches = patchify((images - mean_t) / std_t, patch_size)
    count = patches.shape[1]
    mask = torch.zeros(images.shape[0], max_num_patches, dtype=torch.int32, device=images.device)
    mask[:, :count] = 1
    if count < max_num_patches:
        patches = F.pad(patches, (0, 0, 0, max_num_patches - count))
    grid = (target[0] // patch_size, target[1] // patch_size)
    shapes = torch.tensor([grid] * images.shape[0], dtype=torch.long, device=images.device)
    return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}
