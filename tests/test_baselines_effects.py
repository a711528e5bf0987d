"""What textual inversion and Diffusion-DPO learn, measured on samples with fixed seeds.

These use the shipped toy base model (``clinalign.toy.base_model_dir()``: a trained tiny text-to-image
pipeline whose VAE reconstructs colours), because the randomly initialised test pipeline's VAE maps
every colour to grey, so no colour could be learnt through it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from clinalign.toy import base_model_dir, render_image

#: a colour inside the toy model's range (its darkest skin tone) that its base samples are far from
DARK = (0.38, 0.25, 0.17)


def _plain_pipeline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(base_model_dir()), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_ti_token_learns_a_colour(tmp_path):
    """A token trained on images of one colour: samples prompted with it are closer to that colour than
    samples prompted with the initializer word (same seeds), for every seed."""
    from clinalign import TextualInversionTrainer, TIConfig
    from clinalign.diffusion import sample

    fill = tuple(round(255 * c) for c in DARK)
    rows = [{"id": f"c{i}", "image": Image.new("RGB", (32, 32), fill), "label": "dark"} for i in range(4)]
    config = TIConfig(
        model=str(base_model_dir()), placeholder_tokens={"dark": "<dark>"}, initializer_token="lesion",
        num_vectors=8, learning_rate=0.5, max_steps=60, batch_size=4, resolution=32, seed=0,
        output_dir=str(tmp_path / "ti"), log_with="none", checkpoint_every=0, progress_bar=False,
    )  # fmt: skip
    trainer = TextualInversionTrainer(config=config, train_data=rows)
    trainer.train()
    model, target = trainer.model, torch.tensor(DARK)

    def colours(prompt: str, n: int = 16) -> torch.Tensor:
        with torch.no_grad():
            out = sample(
                model, model.encode_prompts([prompt] * n), height=32, width=32, num_inference_steps=10, k=0,
                eta=0.0, guidance_scale=15.0, generator=[torch.Generator().manual_seed(100 + i) for i in range(n)],
            )  # fmt: skip
        return out.images.mean(dim=(2, 3))  # [n,3] mean colour per sample

    with_token, with_word = colours("<dark>"), colours("lesion")
    dist_token = (with_token - target).norm(dim=1)
    dist_word = (with_word - target).norm(dim=1)
    # measured: 0.380 vs 0.481 mean distance, closer for 16 of 16 seeds
    assert bool((dist_token < dist_word).all()), (dist_token, dist_word)
    assert float(dist_token.mean()) < 0.9 * float(dist_word.mean())
    # and each channel moved toward the (darker) target
    assert bool((with_token.mean(0) < with_word.mean(0)).all())


def test_dpo_on_brighter_chosen_images_makes_plain_diffusers_samples_brighter(tmp_path):
    """Pairs prefer the brighter of two versions of a toy image; the exported LoRA, loaded into a plain
    diffusers pipeline with ``load_lora_weights``, makes every fixed-seed sample brighter than the base's."""
    from clinalign import DiffusionDPOTrainer, DPOConfig

    rows = []
    classes = ["melanoma", "vitiligo", "benign nevus", "erythema multiforme"]
    for i in range(8):
        pixels = render_image(classes[i % 4], i)[0].astype(float)
        rows.append(
            {
                "id": f"p{i}",
                "prompt": "dermatology photo",
                "chosen": Image.fromarray(np.clip(pixels * 1.25 + 20, 0, 255).astype("uint8")),
                "rejected": Image.fromarray(np.clip(pixels * 0.75, 0, 255).astype("uint8")),
            }
        )
    config = DPOConfig(
        model=str(base_model_dir()), beta=5000.0, learning_rate=3e-3, max_steps=40, batch_size=4, resolution=32,
        lora_rank=4, lora_layers="all_attention", seed=0, output_dir=str(tmp_path / "dpo"), log_with="none",
        checkpoint_every=0, progress_bar=False,
    )  # fmt: skip
    out = DiffusionDPOTrainer(config=config, train_data=rows).train()
    assert out.history[-1]["loss/dpo"] < 0.1 < out.history[0]["loss/dpo"]

    def brightness(lora) -> torch.Tensor:
        pipe = _plain_pipeline()
        if lora is not None:
            pipe.load_lora_weights(str(lora))
        images = pipe(
            ["dermatology photo"] * 8, height=32, width=32, num_inference_steps=10, guidance_scale=5.0,
            output_type="pt", generator=[torch.Generator().manual_seed(100 + i) for i in range(8)],
        ).images  # fmt: skip
        return images.mean(dim=(1, 2, 3))

    tuned, base = brightness(out.lora_dir), brightness(None)
    # measured: 0.567 vs 0.546 mean brightness, brighter for 8 of 8 seeds
    assert bool((tuned > base).all()), (tuned, base)
    assert float(tuned.mean() - base.mean()) > 0.01
