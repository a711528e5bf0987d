"""Tiny CLIP / SigLIP / open_clip dual encoders for tests (random weights unless trained by the caller)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from clinalign.testing.tokenizer import build_word_tokenizer


def _tower(hidden_size: int, layers: int) -> dict[str, int]:
    return {
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
    }


def _text_tower(tokenizer, hidden_size: int, layers: int, max_text_tokens: int) -> dict[str, int]:
    return {
        **_tower(hidden_size, layers),
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_text_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def build_tiny_clip(
    out_dir: str | os.PathLike[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    projection_dim: int = 16,
    layers: int = 2,
    max_text_tokens: int = 77,
    seed: int = 0,
    crop: bool = True,
) -> Path:
    """Save a randomly initialised tiny ``CLIPModel`` + tokenizer + image processor to ``out_dir``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = Path(out_dir)
    tokenizer = build_word_tokenizer(out, model_max_length=max_text_tokens)
    torch.manual_seed(seed)
    text = {**_text_tower(tokenizer, hidden_size, layers, max_text_tokens), "bos_token_id": tokenizer.bos_token_id}
    vision = {**_tower(hidden_size, layers), "image_size": image_size, "patch_size": patch_size}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))
    model.save_pretrained(out, safe_serialization=True)
    resize = image_size + image_size // 8 if crop else image_size
    CLIPImageProcessor(
        size={"shortest_edge": resize},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(out)
    return out


def build_tiny_siglip(
    out_dir: str | os.PathLike[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    max_text_tokens: int = 64,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny ``SiglipModel`` + tokenizer + image processor to ``out_dir``."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    out = Path(out_dir)
    tokenizer = build_word_tokenizer(out, model_max_length=max_text_tokens, bos=False)
    torch.manual_seed(seed)
    text = _text_tower(tokenizer, hidden_size, layers, max_text_tokens)
    vision = {**_tower(hidden_size, layers), "image_size": image_size, "patch_size": patch_size}
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    model.save_pretrained(out, safe_serialization=True)
    SiglipImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(out)
    return out


def build_tiny_siglip2(
    out_dir: str | os.PathLike[str],
    *,
    patch_size: int = 8,
    max_num_patches: int = 16,
    hidden_size: int = 32,
    layers: int = 2,
    max_text_tokens: int = 64,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny SigLIP 2 (NaFlex) model + tokenizer + image processor to ``out_dir``."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    out = Path(out_dir)
    tokenizer = build_word_tokenizer(out, model_max_length=max_text_tokens, bos=False)
    torch.manual_seed(seed)
    text = _text_tower(tokenizer, hidden_size, layers, max_text_tokens)
    vision = {**_tower(hidden_size, layers), "patch_size": patch_size, "num_patches": max_num_patches}
    Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).save_pretrained(out, safe_serialization=True)
    Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=max_num_patches).save_pretrained(out)
    return out


def build_tiny_open_clip(
    out_dir: str | os.PathLike[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 32,
    embed_dim: int = 16,
    layers: int = 2,
    context_length: int = 77,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny open_clip model in the ``local-dir:`` layout.

    Writes ``open_clip_config.json`` (model and preprocess config) and ``open_clip_model.safetensors``;
    it uses open_clip's own CLIP BPE tokenizer (shipped with the package, no download).
    """
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "head_width": 16,
            "patch_size": patch_size,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": width,
            "heads": 2,
            "layers": layers,
        },
    }
    preprocess_cfg = {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2)
    )
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out
