"""Batched, no-grad embedding of image files with a critic (probe training, scoring references)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from clinalign.critics.base import Critic
from clinalign.data.images import load_image, pil_to_tensor


@torch.no_grad()
def embed_image_files(
    critic: Critic,
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "embedding images",
) -> torch.Tensor:
    """Embed image files -> float32 [N,D] on the CPU.

    Images are loaded robustly (grayscale, 16-bit, RGBA, CMYK converted), centre-fitted to the
    critic's input size so they batch, and encoded without gradients.
    """
    size = critic.image_size
    chunks: list[torch.Tensor] = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([pil_to_tensor(load_image(p), size) for p in paths[start : start + batch_size]])
            chunks.append(critic.encode_images(batch).cpu())
            bar.update(len(batch))
    if not chunks:
        return torch.zeros(0, critic.embed_dim)
    return torch.cat(chunks)
