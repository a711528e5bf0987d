"""A tiny Stable Diffusion pipeline (UNet, VAE, CLIP text encoder, tokenizer, DDIM scheduler) for tests.

Saved with ``save_pretrained`` in the diffusers layout, so it loads through
:func:`clinalign.diffusion.load_diffusion_model` exactly like a hub id, and through a plain
``StableDiffusionPipeline.from_pretrained(dir)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clinalign.testing.tokenizer import build_word_tokenizer


def build_tiny_sd(
    out_dir: str | os.PathLike[str],
    *,
    block_out_channels: tuple[int, ...] = (16, 32),
    cross_attention_dim: int = 32,
    latent_channels: int = 4,
    vae_channels: tuple[int, ...] = (16, 32),
    max_text_tokens: int = 32,
    prediction_type: str = "epsilon",
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny SD 1.x/2.x-style pipeline to ``out_dir`` and return the path.

    The VAE downsamples by ``2 ** (len(vae_channels) - 1)`` (2 by default), so 16-32 px images give
    8-16 px latents. The UNet has one cross-attention down/up block per entry of ``block_out_channels``
    (the last down block and first up block are attention-free, like SD).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from clinalign.diffusion.model import stable_diffusion_pipeline

    out = Path(out_dir)
    tmp_tok = out / "_tokenizer_build"
    tokenizer = build_word_tokenizer(tmp_tok, model_max_length=max_text_tokens)
    torch.manual_seed(seed)
    n = len(block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cross_attention_dim,
            intermediate_size=cross_attention_dim * 2,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=max_text_tokens,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipe = stable_diffusion_pipeline(vae, text_encoder, tokenizer, unet, prediction_type=prediction_type)
    pipe.save_pretrained(out, safe_serialization=True)
    for child in tmp_tok.iterdir():
        child.unlink()
    tmp_tok.rmdir()
    return out


_TINY_CLASSES = {
    "cardiomegaly": ((200, 80, 80), "enlarged cardiac silhouette", "Location: chest; Shape/Size: large heart"),
    "effusion": ((80, 80, 200), "blunted costophrenic angle with fluid", "Location: lower lung; Texture: fluid"),
}


def build_tiny_craft_assets(
    out_dir: str | os.PathLike[str], *, n_train: int = 8, n_eval: int = 4, size: int = 32
) -> dict:
    """Everything a tiny offline CRAFT run needs, under ``out_dir``.

    Writes ``sd/`` (:func:`build_tiny_sd`), ``critic/`` (tiny CLIP, the training critic), ``evaluator/``
    (tiny SigLIP, a different model for held-out scoring), ``probe/`` and ``eval_probe/`` (linear probes
    fitted on each critic's embeddings of the training images), ``data/train.jsonl`` and
    ``data/eval.jsonl`` (enriched-JSONL rows: id, image, label, t_ep) with PNGs, and
    ``data/checklists.json`` (class -> t_c). Returns the paths by name.
    """
    import json

    import numpy as np
    from PIL import Image

    from clinalign.critics import load_critic
    from clinalign.data.images import pil_to_tensor
    from clinalign.probe import LinearProbe
    from clinalign.testing.critics import build_tiny_clip, build_tiny_siglip

    out = Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = sorted(_TINY_CLASSES)
    splits: dict[str, list[dict]] = {"train": [], "eval": []}
    images: dict[str, list[Image.Image]] = {"train": [], "eval": []}
    for split, n in (("train", n_train), ("eval", n_eval)):
        for i in range(n):
            label = names[i % len(names)]
            colour, finding, _ = _TINY_CLASSES[label]
            array = np.clip(rng.normal(colour, 40, size=(size, size, 3)), 0, 255).astype("uint8")
            image = Image.fromarray(array)
            file = f"{split}_{i:03d}.png"
            image.save(data / file)
            images[split].append(image)
            splits[split].append(
                {"id": f"{split}-{i}", "image": file, "label": label, "t_ep": f"a chest x-ray with {finding}"}
            )
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits[split]))
    (data / "checklists.json").write_text(json.dumps({k: v[2] for k, v in _TINY_CLASSES.items()}, indent=2))

    paths = {
        "sd": build_tiny_sd(out / "sd"),
        "critic": build_tiny_clip(out / "critic", seed=1),
        "evaluator": build_tiny_siglip(out / "evaluator", seed=2),
        "train_data": data / "train.jsonl",
        "eval_data": data / "eval.jsonl",
        "checklists": data / "checklists.json",
    }
    pixels = torch.stack([pil_to_tensor(im, 32) for im in images["train"]])
    labels = [r["label"] for r in splits["train"]]
    for key, critic_key in (("probe", "critic"), ("eval_probe", "evaluator")):
        critic = load_critic(paths[critic_key], device="cpu")
        with torch.no_grad():
            embeddings = critic.encode_images(pixels)
        LinearProbe.fit(embeddings, labels, names, epochs=20, critic_name=critic.name).save(out / key)
        paths[key] = out / key
    return paths
