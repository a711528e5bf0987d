"""Rebuild the shipped toy models from scratch: ``python -m clinalign.toy.build_assets [--out DIR] [--reduced]``.

Three artifacts, all trained on ToyDerm on the CPU, deterministically (same seed, same torch version and
thread count -> same weights):

- ``base/``: a tiny text-to-image latent diffusion pipeline in diffusers format (AutoencoderKL, a
  UNet2DConditionModel, a 2-layer CLIPTextModel + tokenizer, a DDIM scheduler) trained with *label-only*
  prompts ("dermatology photo of melanoma"). It knows the domain but not the vocabulary of the enriched
  prompts, so prompted with ``t_ep`` it renders the class criteria imperfectly: room for reward finetuning.
- ``training_critic/``: a tiny CLIP dual encoder (transformers format) trained contrastively on one half of
  the training patients with their enriched prompts and class checklists.
- ``evaluator_critic/``: a second tiny CLIP with a different seed, width, depth, input size and patch size,
  trained on the *other* half of the training patients with different augmentations, so the two critics
  do not share the shortcuts a single training run learns.

``build_info.json`` records the configuration, timings, linear-probe accuracies of both critics on real
test images and how often the base model's samples are classified correctly by the evaluator's probe.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clinalign.toy.dataset import (
    CLASSES,
    SKIN_TONES,
    ToyDerm,
    checklists,
    label_prompt,
    skin_tone_of,
    text_corpus,
)

# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CriticSpec:
    """Architecture and training recipe of one toy critic."""

    seed: int
    image_size: int  # what the vision tower sees (the image processor resizes 32px inputs to this)
    patch_size: int
    vision_hidden: int
    vision_layers: int
    text_hidden: int
    text_layers: int
    projection_dim: int
    half: int  # which half of the training patients (0 or 1) it is trained on
    augment: str  # "photometric" or "geometric"
    steps: int
    # fraction of each batch replaced by corrupted copies (shuffled tiles, speckled pixels, heavy blur)
    # paired with ARTIFACT_TEXT, so colour soup and glows embed away from every class description
    artifact_fraction: float = 0.0
    batch_size: int = 128
    learning_rate: float = 2e-3


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the shipped weights."""

    seed: int = 0
    image_size: int = 32
    n_train: int = 6000
    n_test: int = 800
    # VAE
    vae_channels: tuple[int, ...] = (32, 64)
    vae_layers_per_block: int = 1
    vae_steps: int = 1200
    vae_batch_size: int = 32
    vae_learning_rate: float = 1e-3
    vae_kl_weight: float = 1e-6
    # text encoder + UNet
    text_hidden: int = 64
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_steps: int = 3500
    unet_batch_size: int = 64
    unet_learning_rate: float = 1e-3
    caption_dropout: float = 0.1
    # fraction of training captions whose label is replaced by a uniformly drawn one (possibly the same):
    # the base learns each class prompt as a mixture, the way a web-trained model half-knows medical terms
    label_noise: float = 0.5
    # fraction of training captions that also name the skin tone ("dermatology photo of melanoma, dark skin"),
    # and the fraction of those whose tone is replaced by a uniformly drawn one (possibly the same): the base
    # half-knows the tone words too, so its text encoder represents them and finetuning can close that gap
    tone_caption_fraction: float = 0.5
    tone_noise: float = 0.5
    # std of a per-image, per-channel constant added to the training noise ("offset noise"). Without it the
    # noise schedule never reaches zero SNR, the mean colour of the initial noise survives sampling and the
    # base cannot choose the skin tone (the image's dominant colour) whatever the prompt says
    offset_noise: float = 0.1
    # critics
    training_critic: CriticSpec = field(
        default_factory=lambda: CriticSpec(
            seed=11,
            image_size=32,
            patch_size=4,
            vision_hidden=64,
            vision_layers=3,
            text_hidden=64,
            text_layers=2,
            projection_dim=64,
            half=0,
            augment="photometric",
            steps=800,
            artifact_fraction=0.15,
        )
    )
    evaluator_critic: CriticSpec = field(
        default_factory=lambda: CriticSpec(
            seed=23,
            image_size=48,
            patch_size=6,
            vision_hidden=48,
            vision_layers=4,
            text_hidden=48,
            text_layers=3,
            projection_dim=48,
            half=1,
            augment="geometric",
            steps=800,
            artifact_fraction=0.15,
        )
    )
    # evaluation of the base model
    eval_samples_per_class: int = 32
    eval_inference_steps: int = 20

    @classmethod
    def reduced(cls) -> BuildConfig:
        """A tiny configuration that exercises every stage in about a minute (not for shipping)."""
        base = cls()
        return replace(
            base,
            n_train=256,
            n_test=64,
            vae_steps=20,
            vae_batch_size=16,
            unet_steps=20,
            unet_batch_size=16,
            training_critic=replace(base.training_critic, steps=20, batch_size=32),
            evaluator_critic=replace(base.evaluator_critic, steps=20, batch_size=32),
            eval_samples_per_class=2,
            eval_inference_steps=4,
        )


# ---------------------------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[build_assets {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """Yield ``steps`` index batches, reshuffling each epoch."""
    perm = torch.randperm(n, generator=generator)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm = torch.randperm(n, generator=generator)
            pos = 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


def _features(output: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput from get_*_features; older versions return the tensor."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------------- VAE


def train_vae(images: torch.Tensor, cfg: BuildConfig):
    """Train a small AutoencoderKL on [N,3,H,W] images in [0,1]; sets ``scaling_factor`` from the latents."""
    from diffusers import AutoencoderKL

    generator = _seed_all(cfg.seed + 1)
    n_blocks = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_blocks,
        up_block_types=("UpDecoderBlock2D",) * n_blocks,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=cfg.image_size,
        # self-attention at 16x16 cost ~30% of the step time and gained nothing measurable at 32px
        mid_block_add_attention=False,
    )
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(50, cfg.vae_steps))
    vae.train()
    data = images * 2 - 1
    start = time.time()
    for step, idx in enumerate(_batches(len(data), cfg.vae_batch_size, cfg.vae_steps, generator)):
        x = data[idx]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + cfg.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            _log(f"vae step {step}/{cfg.vae_steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
    vae.eval()
    with torch.no_grad():
        sample = data[: min(512, len(data))]
        posterior = vae.encode(sample).latent_dist
        std = float(posterior.mean.std())
        recon = vae.decode(posterior.mean).sample.clamp(-1, 1)
        mse = float(F.mse_loss((recon + 1) / 2, (sample + 1) / 2))
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    psnr = 10 * math.log10(1.0 / max(mse, 1e-10))
    return vae, {"params": _param_count(vae), "psnr_db": round(psnr, 2), "latent_std": round(std, 4)}


# ---------------------------------------------------------------------------------------------- base model


def _build_tokenizer(out_dir: Path, max_length: int = 77):
    from clinalign.testing.tokenizer import build_word_tokenizer

    return build_word_tokenizer(out_dir, corpus=text_corpus(), vocab_size=600, model_max_length=max_length)


def train_base(
    images: torch.Tensor, labels: torch.Tensor, vae, tokenizer, cfg: BuildConfig, tones: torch.Tensor | None = None
):
    """Train a CLIPTextModel + UNet2DConditionModel on VAE latents with label prompts (some naming the tone).

    ``tones`` holds each image's index in :data:`SKIN_TONES`; without it (or with
    ``cfg.tone_caption_fraction == 0``) every caption is label-only.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    generator = _seed_all(cfg.seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_hidden,
            intermediate_size=cfg.text_hidden * 2,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    n_blocks = len(cfg.unet_channels)
    latent_size = cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n_blocks - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n_blocks - 1) + ("UpBlock2D",),
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    # encode the dataset once: latent mean and std per image, sampled each step
    with torch.no_grad():
        means, stds = [], []
        for chunk in torch.split(images * 2 - 1, 256):
            posterior = vae.encode(chunk).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
        lat_mean, lat_std = torch.cat(means), torch.cat(stds)
    scale = vae.config.scaling_factor
    # caption table: for class c and tone slot k (k = len(SKIN_TONES): no tone) row c * (n_tones + 1) + k; "" last
    n_tones = len(SKIN_TONES)
    prompts = [
        label_prompt(c) if k == n_tones else f"{label_prompt(c)}, {SKIN_TONES[k]} skin"
        for c in CLASSES
        for k in range(n_tones + 1)
    ] + [""]
    empty = len(prompts) - 1
    use_tones = tones is not None and cfg.tone_caption_fraction > 0
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    prompt_ids = ids.input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.unet_learning_rate, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(100, cfg.unet_steps))
    unet.train()
    text_encoder.train()
    start = time.time()
    ema_loss = None
    for step, idx in enumerate(_batches(len(images), cfg.unet_batch_size, cfg.unet_steps, generator)):
        noise_latent = torch.randn(lat_mean[idx].shape, generator=generator)
        latents = (lat_mean[idx] + lat_std[idx] * noise_latent) * scale
        which = labels[idx].clone()
        if cfg.label_noise > 0:
            noisy = torch.rand(len(idx), generator=generator) < cfg.label_noise
            which[noisy] = torch.randint(0, len(CLASSES), (int(noisy.sum()),), generator=generator)
        drop = torch.rand(len(idx), generator=generator) < cfg.caption_dropout
        tone_slot = torch.full_like(which, n_tones)
        if use_tones:
            named = torch.rand(len(idx), generator=generator) < cfg.tone_caption_fraction
            tone = tones[idx].clone()
            wrong = torch.rand(len(idx), generator=generator) < cfg.tone_noise
            tone[wrong] = torch.randint(0, n_tones, (int(wrong.sum()),), generator=generator)
            tone_slot[named] = tone[named]
        caption = which * (n_tones + 1) + tone_slot
        caption[drop] = empty
        hidden = text_encoder(prompt_ids[caption]).last_hidden_state
        noise = torch.randn(latents.shape, generator=generator)
        if cfg.offset_noise > 0:
            offset = torch.randn((*latents.shape[:2], 1, 1), generator=generator)
            noise = noise + cfg.offset_noise * offset
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 200 == 0 or step == cfg.unet_steps - 1:
            elapsed = time.time() - start
            eta = elapsed / (step + 1) * (cfg.unet_steps - step - 1)
            _log(f"unet step {step}/{cfg.unet_steps} loss(ema) {ema_loss:.4f} ({elapsed:.0f}s, eta {eta:.0f}s)")
    unet.eval()
    text_encoder.eval()
    return unet, text_encoder, {"unet_params": _param_count(unet), "text_encoder_params": _param_count(text_encoder)}


def save_base(out_dir: Path, vae, unet, text_encoder, tokenizer) -> None:
    from clinalign.diffusion.model import stable_diffusion_pipeline

    pipe = stable_diffusion_pipeline(vae, text_encoder, tokenizer, unet)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


# ---------------------------------------------------------------------------------------------- critics


def _augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Train-time augmentations in [0,1]. The two critics get different families of them.

    Neither flips nor rotates: enriched prompts name the lesion's position in the frame.
    """
    b = images.shape[0]
    if kind == "photometric":
        gain = 1 + 0.12 * (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1)
        bias = 0.04 * (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1)
        out = images * gain + bias + 0.02 * torch.randn(images.shape, generator=generator)
        return out.clamp(0, 1)
    if kind == "geometric":
        # 1px shifts, per-channel colour casts, occasional blur and a small cutout on the skin
        shift = torch.randint(-1, 2, (2,), generator=generator)
        out = torch.roll(images, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
        cast = 1 + 0.08 * (torch.rand(b, 3, 1, 1, generator=generator) * 2 - 1)
        out = out * cast
        blur = torch.rand(b, generator=generator) < 0.3
        if blur.any():
            kernel = torch.tensor([1.0, 2.0, 1.0])
            kernel = (kernel[:, None] * kernel[None, :]) / 16
            kernel = kernel.expand(3, 1, 3, 3)
            blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
            out = torch.where(blur[:, None, None, None], blurred, out)
        side = images.shape[-1]
        cut = max(2, side // 8)
        ys = torch.randint(0, side - cut, (b,), generator=generator)
        xs = torch.randint(0, side - cut, (b,), generator=generator)
        apply = torch.rand(b, generator=generator) < 0.3
        for i in torch.nonzero(apply).flatten().tolist():
            patch = out[i, :, ys[i] : ys[i] + cut, xs[i] : xs[i] + cut]
            out[i, :, ys[i] : ys[i] + cut, xs[i] : xs[i] + cut] = patch.mean(dim=(1, 2), keepdim=True)
        return out.clamp(0, 1)
    raise ValueError(f"unknown augmentation {kind!r}")


ARTIFACT_TEXT = "dermatology photo, distorted artifact"


def _corrupt(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Corrupted copies of [B,3,H,W] images that keep their colours but not their lesion's structure.

    One of three per image: the 4x4 grid of tiles shuffled (fragments of rings and borders), pixels
    shuffled inside each 4x4 block (speckled colour soup), or a heavy blur (glows without an edge).
    These are what reward hacking of a tiny critic produced on the toy; a critic that pairs them with
    :data:`ARTIFACT_TEXT` stops scoring them as lesions.
    """
    b, c, h, w = images.shape
    kind = torch.randint(0, 3, (b,), generator=generator)
    out = images.clone()
    tile = h // 4
    for i in range(b):
        x = images[i]
        if kind[i] == 0:
            tiles = x.unfold(1, tile, tile).unfold(2, tile, tile)  # [3, 4, 4, tile, tile]
            flat = tiles.reshape(c, 16, tile, tile)[:, torch.randperm(16, generator=generator)]
            out[i] = flat.reshape(c, 4, 4, tile, tile).permute(0, 1, 3, 2, 4).reshape(c, h, w)
        elif kind[i] == 1:
            blocks = x.reshape(c, h // 4, 4, w // 4, 4).permute(0, 1, 3, 2, 4).reshape(c, h // 4, w // 4, 16)
            blocks = blocks[..., torch.randperm(16, generator=generator)]
            out[i] = blocks.reshape(c, h // 4, w // 4, 4, 4).permute(0, 1, 3, 2, 4).reshape(c, h, w)
        else:
            blurred = x[None]
            for _ in range(3):
                blurred = F.avg_pool2d(F.pad(blurred, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
            out[i] = blurred[0]
    return out


def _critic_preprocess(spec: CriticSpec):
    from clinalign.critics.preprocess import ImagePreprocessConfig

    return ImagePreprocessConfig(
        resize_mode="shortest",
        resize_size=spec.image_size,
        crop_size=spec.image_size,
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
        interpolation="bicubic",
    )


def train_critic(
    spec: CriticSpec,
    images: torch.Tensor,
    prompts: Sequence[str],
    labels: torch.Tensor,
    tokenizer,
    name: str,
):
    """Train a tiny CLIPModel contrastively on (image, text) pairs.

    Each image is paired with its enriched prompt (70%), its class checklist (20%) or its label-only
    prompt (10%), so VDC (t_ep) and CCS (t_c) are both meaningful in the learned space. Identical
    texts in a batch (checklists repeat) count as positives for each other's images.
    """
    from transformers import CLIPConfig, CLIPModel

    from clinalign.critics.preprocess import preprocess_images

    generator = _seed_all(spec.seed)
    model = CLIPModel(
        CLIPConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": spec.text_hidden,
                "intermediate_size": spec.text_hidden * 2,
                "num_hidden_layers": spec.text_layers,
                "num_attention_heads": 4,
                "max_position_embeddings": tokenizer.model_max_length,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={
                "image_size": spec.image_size,
                "patch_size": spec.patch_size,
                "hidden_size": spec.vision_hidden,
                "intermediate_size": spec.vision_hidden * 2,
                "num_hidden_layers": spec.vision_layers,
                "num_attention_heads": 4,
            },
            projection_dim=spec.projection_dim,
        )
    )
    preprocess = _critic_preprocess(spec)
    lists = checklists()
    text_pool = list(prompts) + [lists[c] for c in CLASSES] + [label_prompt(c) for c in CLASSES] + [ARTIFACT_TEXT]
    text_index = {t: i for i, t in enumerate(dict.fromkeys(text_pool))}
    unique_texts = list(text_index)
    tokens = tokenizer(
        unique_texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    # trim shared padding so the text tower runs on the longest real sequence only
    longest = int(tokens.attention_mask.sum(1).max())
    input_ids, attention = tokens.input_ids[:, :longest], tokens.attention_mask[:, :longest]
    prompt_idx = torch.tensor([text_index[p] for p in prompts])
    checklist_idx = torch.tensor([text_index[lists[c]] for c in CLASSES])
    label_idx = torch.tensor([text_index[label_prompt(c)] for c in CLASSES])
    artifact_idx = text_index[ARTIFACT_TEXT]

    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(50, spec.steps))
    model.train()
    start = time.time()
    for step, idx in enumerate(_batches(len(images), spec.batch_size, spec.steps, generator)):
        batch = _augment(images[idx], spec.augment, generator)
        choice = torch.rand(len(idx), generator=generator)
        tid = prompt_idx[idx].clone()
        tid[choice > 0.7] = checklist_idx[labels[idx][choice > 0.7]]
        tid[choice > 0.9] = label_idx[labels[idx][choice > 0.9]]
        if spec.artifact_fraction > 0:
            bad = torch.rand(len(idx), generator=generator) < spec.artifact_fraction
            if bad.any():
                batch[bad] = _corrupt(batch[bad], generator)
                tid[bad] = artifact_idx
        x = preprocess_images(batch, preprocess)
        uniq, inverse = torch.unique(tid, return_inverse=True)
        img = F.normalize(_features(model.get_image_features(pixel_values=x)), dim=-1)
        txt = F.normalize(
            _features(model.get_text_features(input_ids=input_ids[uniq], attention_mask=attention[uniq])), dim=-1
        )
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # [B, U]
        loss_i = F.cross_entropy(logits, inverse)
        # text -> image: each unique text's positives are all images paired with it
        pos = (inverse[None, :] == torch.arange(len(uniq))[:, None]).float()  # [U, B]
        log_p = F.log_softmax(logits.T, dim=-1)
        loss_t = -(pos * log_p).sum(1).div(pos.sum(1)).mean()
        loss = 0.5 * (loss_i + loss_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == spec.steps - 1:
            _log(f"{name} step {step}/{spec.steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
    model.eval()
    return model, {"params": _param_count(model)}


def save_critic(out_dir: Path, model, tokenizer_src: Path, spec: CriticSpec) -> None:
    from transformers import CLIPImageProcessor

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tokenizer_src.iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=True,
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


@torch.no_grad()
def critic_image_embeddings(critic_dir: Path, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings [N,D] of [N,3,H,W] images in [0,1] from a saved toy critic."""
    from transformers import AutoImageProcessor, AutoModel

    from clinalign.critics.preprocess import ImagePreprocessConfig, interpolation_name, preprocess_images

    model = AutoModel.from_pretrained(critic_dir).eval()
    proc = AutoImageProcessor.from_pretrained(critic_dir)
    cfg = ImagePreprocessConfig(
        resize_mode="shortest",
        resize_size=int(proc.size["shortest_edge"]),
        crop_size=int(proc.crop_size["height"]),
        mean=tuple(proc.image_mean),
        std=tuple(proc.image_std),
        interpolation=interpolation_name(proc.resample),
    )
    out = [
        F.normalize(_features(model.get_image_features(pixel_values=preprocess_images(chunk, cfg))), dim=-1)
        for chunk in torch.split(images, batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def critic_text_embeddings(critic_dir: Path, texts: Sequence[str]) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(critic_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(critic_dir)
    tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    return F.normalize(_features(model.get_text_features(**tokens)), dim=-1)


def probe_accuracy(train_emb: torch.Tensor, train_y: torch.Tensor, test_emb: torch.Tensor, test_y: torch.Tensor):
    """Fit a logistic-regression probe on train embeddings; return (accuracy on test, fitted probe)."""
    from clinalign.utils.deps import require

    require(
        "sklearn", package="scikit-learn", feature="Rebuilding the toy assets (critic probe check)", extra="toy-build"
    )
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000, C=10.0)
    probe.fit(train_emb.numpy(), train_y.numpy())
    return float((probe.predict(test_emb.numpy()) == test_y.numpy()).mean()), probe


def evaluate_critic(critic_dir: Path, data: ToyDerm, train_mask: torch.Tensor) -> dict[str, float]:
    """Linear-probe and checklist zero-shot accuracy of a saved critic on real test images."""
    train_x, test_x = data.images("train")[train_mask], data.images("test")
    train_y, test_y = data.labels("train")[train_mask], data.labels("test")
    train_e, test_e = critic_image_embeddings(critic_dir, train_x), critic_image_embeddings(critic_dir, test_x)
    acc, _ = probe_accuracy(train_e, train_y, test_e, test_y)
    lists = checklists()
    checklist_e = critic_text_embeddings(critic_dir, [lists[c] for c in CLASSES])
    zero_shot = float(((test_e @ checklist_e.T).argmax(1) == test_y).float().mean())
    # VDC sanity: an image's own prompt beats a random other-class prompt
    prompts = data.prompts("test")
    prompt_e = critic_text_embeddings(critic_dir, prompts)
    own = (test_e * prompt_e).sum(1)
    shuffled = (test_e * prompt_e.roll(1, dims=0)).sum(1)
    return {
        "probe_accuracy_test": round(acc, 4),
        "checklist_zero_shot_accuracy_test": round(zero_shot, 4),
        "vdc_own_prompt_mean": round(float(own.mean()), 4),
        "vdc_other_prompt_mean": round(float(shuffled.mean()), 4),
    }


@torch.no_grad()
def evaluate_base(base_dir: Path, evaluator_dir: Path, data: ToyDerm, cfg: BuildConfig) -> dict[str, Any]:
    """How well the base pipeline renders each class, judged by the evaluator's probe.

    Samples ``eval_samples_per_class`` images per class for label-only prompts and for held-out enriched
    prompts; reports the evaluator-probe accuracy of each (the probe is fitted on all real train images).
    """
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base_dir)
    pipe.set_progress_bar_config(disable=True)
    train_e = critic_image_embeddings(evaluator_dir, data.images("train"))
    _, probe = probe_accuracy(train_e, data.labels("train"), train_e[:2], data.labels("train")[:2])
    results: dict[str, Any] = {}
    per = cfg.eval_samples_per_class
    test = data.test
    ep_prompts, ep_labels, ep_tones = [], [], []
    for c in range(len(CLASSES)):
        chosen = [s for s in test if s.label_index == c][:per]
        ep_prompts += [s.prompt for s in chosen]
        ep_labels += [c] * len(chosen)
        ep_tones += [s.attributes.skin_tone for s in chosen]
    for kind, prompts, y in (
        ("label_prompts", [label_prompt(c) for c in CLASSES for _ in range(per)], np.repeat(np.arange(4), per)),
        ("enriched_prompts", ep_prompts, np.array(ep_labels)),
    ):
        images = []
        generator = torch.Generator().manual_seed(cfg.seed + 7)
        for start in range(0, len(prompts), 64):
            out = pipe(
                prompts[start : start + 64],
                num_inference_steps=cfg.eval_inference_steps,
                guidance_scale=3.0,
                generator=generator,
                output_type="pt",
            )
            images.append(out.images.float().clamp(0, 1))
        imgs = torch.cat(images)
        pred = probe.predict(critic_image_embeddings(evaluator_dir, imgs).numpy())
        results[f"{kind}_evaluator_accuracy"] = round(float((pred == y).mean()), 4)
        results[f"{kind}_per_class"] = {
            CLASSES[c]: round(float((pred[y == c] == c).mean()), 3) for c in range(len(CLASSES)) if (y == c).any()
        }
        if kind == "enriched_prompts":
            # the tone the prompt names vs the tone drawn (chance 1/6)
            drawn = [skin_tone_of(img.permute(1, 2, 0).numpy()) for img in imgs]
            results["enriched_prompts_tone_accuracy"] = round(
                float(np.mean([d == t for d, t in zip(drawn, ep_tones, strict=True)])), 4
            )
        if kind == "label_prompts":
            results["_grid"] = imgs
    return results


def _save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    from PIL import Image

    n, _, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.ones(3, rows * (h + 2), nrow * (w + 2))
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[:, r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = images[i]
    array = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(array).resize((array.shape[1] * 3, array.shape[0] * 3), Image.Resampling.NEAREST).save(path)


# ---------------------------------------------------------------------------------------------- main


STAGES = ("base", "unet", "critics", "evaluate")


def _load_vae(base_dir: Path):
    """The VAE of an earlier build, for the ``unet`` stage (which retrains only text encoder + UNet)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    # from_config + load_state_dict, not from_pretrained: that would record this folder's path in the
    # saved config (``_name_or_path``), and the shipped files must not depend on where they were built
    config = {k: v for k, v in AutoencoderKL.load_config(base_dir / "vae").items() if not k.startswith("_")}
    vae = AutoencoderKL.from_config(config)
    vae.load_state_dict(load_file(base_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    return vae.eval()


def build_assets(
    out_dir: str | os.PathLike[str],
    *,
    config: BuildConfig | None = None,
    stages: Sequence[str] = STAGES,
    threads: int | None = None,
) -> dict:
    """Build the toy assets under ``out_dir``; returns the build info (also written to ``build_info.json``).

    ``stages`` selects what to (re)build: ``"base"`` (VAE, text encoder, UNet), ``"unet"`` (text encoder
    and UNet only, on the VAE already in ``out_dir/base``), ``"critics"`` (both
    critics) and ``"evaluate"`` (probe accuracies and base-model sample accuracy); stages not selected
    reuse what is already in ``out_dir``. ``threads`` defaults to ``min(2, cpu_count)``; results are
    reproducible for a fixed thread count.
    """
    cfg = config or BuildConfig()
    out = Path(out_dir)
    if "unet" in stages and "base" not in stages and not (out / "base" / "vae").is_dir():
        # checked before any data is generated: the unet stage reuses the VAE of an earlier build
        raise FileNotFoundError(
            f"--stages unet retrains the UNet on the VAE of an earlier build, but {out / 'base' / 'vae'} does not "
            "exist. Run the 'base' stage (VAE + UNet) first."
        )
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "build_info.json"
    info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["config"] = json.loads(json.dumps(asdict(cfg)))
    info.setdefault("timings_s", {})
    torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
    total_start = time.time()

    t = time.time()
    data = ToyDerm.generate(n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed, size=cfg.image_size)
    info["timings_s"]["data"] = round(time.time() - t, 1)
    _log(f"generated ToyDerm: {len(data.train)} train, {len(data.test)} test ({info['timings_s']['data']}s)")
    train_images, train_labels = data.images("train"), data.labels("train")
    patients = torch.tensor([int(s.patient_id.rsplit("-", 1)[1]) for s in data.train])
    halves = [patients % 2 == 0, patients % 2 == 1]

    tok_dir = out / "_tokenizer"
    tokenizer = _build_tokenizer(tok_dir)

    if "base" in stages or "unet" in stages:
        if "base" in stages:
            t = time.time()
            vae, vae_info = train_vae(train_images, cfg)
            info["vae"] = vae_info
            info["timings_s"]["vae"] = round(time.time() - t, 1)
            _log(f"vae: {vae_info} ({info['timings_s']['vae']}s)")
        else:
            vae = _load_vae(out / "base")
            _log(f"unet stage: reusing the VAE in {out / 'base' / 'vae'}")
        t = time.time()
        tones = torch.tensor([SKIN_TONES.index(s.attributes.skin_tone) for s in data.train])
        unet, text_encoder, base_info = train_base(train_images, train_labels, vae, tokenizer, cfg, tones=tones)
        info["base"] = base_info
        info["timings_s"]["unet"] = round(time.time() - t, 1)
        save_base(out / "base", vae, unet, text_encoder, tokenizer)
        _log(f"base saved: {base_info} ({info['timings_s']['unet']}s)")

    if "critics" in stages:
        for key, spec in (("training_critic", cfg.training_critic), ("evaluator_critic", cfg.evaluator_critic)):
            t = time.time()
            mask = halves[spec.half]
            prompts = [p for p, m in zip(data.prompts("train"), mask.tolist(), strict=True) if m]
            model, critic_info = train_critic(spec, train_images[mask], prompts, train_labels[mask], tokenizer, key)
            save_critic(out / key, model, tok_dir, spec)
            info[key] = {**critic_info, "train_images": int(mask.sum()), "half": spec.half}
            info["timings_s"][key] = round(time.time() - t, 1)

    if "evaluate" in stages:
        t = time.time()
        for key, spec in (("training_critic", cfg.training_critic), ("evaluator_critic", cfg.evaluator_critic)):
            metrics = evaluate_critic(out / key, data, halves[spec.half])
            info.setdefault(key, {}).update(metrics)
            _log(f"{key}: {metrics}")
        if (out / "base").is_dir():
            base_eval = evaluate_base(out / "base", out / "evaluator_critic", data, cfg)
            grid = base_eval.pop("_grid")
            _save_grid(grid, out / "base_samples_label_prompts.png", nrow=cfg.eval_samples_per_class)
            info["base_eval"] = base_eval
            _log(f"base: {base_eval}")
        info["timings_s"]["evaluate"] = round(time.time() - t, 1)

    shutil.rmtree(tok_dir, ignore_errors=True)
    info["timings_s"]["total_this_run"] = round(time.time() - total_start, 1)
    stage_keys = ("data", "vae", "unet", "training_critic", "evaluator_critic", "evaluate")
    # stages may come from separate runs: the sum is what one run of all stages costs
    info["timings_s"]["total_all_stages"] = round(sum(info["timings_s"].get(k, 0.0) for k in stage_keys), 1)
    info["sizes_bytes"] = {
        name: _dir_size(out / name) for name in ("base", "training_critic", "evaluator_critic") if (out / name).is_dir()
    }
    info["versions"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **{m: sys.modules[m].__version__ for m in ("diffusers", "transformers") if m in sys.modules},
    }
    from clinalign.utils.io import write_json

    write_json(info_path, info)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    from clinalign.toy.paths import assets_dir

    parser = argparse.ArgumentParser(prog="python -m clinalign.toy.build_assets", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=assets_dir(), help="output folder (default: the package's assets)")
    parser.add_argument("--reduced", action="store_true", help="tiny fast build to check the pipeline (not shipped)")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)} (default: all)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: min(2, cores))")
    args = parser.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        print(f"--stages: unknown stage(s) {unknown}; choose from {list(STAGES)}.", file=sys.stderr)
        return 2
    start = time.time()
    try:
        info = build_assets(
            args.out,
            config=BuildConfig.reduced() if args.reduced else BuildConfig(),
            stages=stages,
            threads=args.threads,
        )
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    elapsed = time.time() - start
    print(json.dumps({k: info[k] for k in info if k != "config"}, indent=2, sort_keys=True))
    print(f"build_assets finished in {elapsed:.1f} s ({elapsed / 60:.1f} min); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
