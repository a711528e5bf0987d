"""Baselines benchmark on a tiny local Stable Diffusion pipeline (CPU-friendly, no downloads).

Prints, side by side (interleaved best-of-N timing, as in ``bench_draftk.py``):

1. a Diffusion-DPO micro-step (load + encode the pairs, policy and reference UNet passes, the loss,
   backward) ÷ its necessary UNet work timed alone: 4 UNet forwards (policy and reference, chosen and
   rejected) + 2 backwards (policy, chosen and rejected); also ÷ that plus the VAE encode of both images;
2. a textual-inversion micro-step ÷ 1 UNet forward + 1 backward (into the prompt embeddings); also ÷ that
   plus the text encoder forward/backward and the VAE encode;
3. a DRaFT-K micro-step with ``repeats_in_batch: true`` ÷ the same step with M separate sampling calls,
   for M = 2 (paper) and M = 4.

Run: ``python bench/bench_baselines.py [--batch 2] [--resolution 32] [--steps 20] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from bench_draftk import interleaved
from PIL import Image

from clinalign import DiffusionDPOTrainer, DPOConfig, DraftKTrainer, TextualInversionTrainer, TIConfig, TrainConfig
from clinalign.critics import load_critic
from clinalign.rewards import VDCReward
from clinalign.testing import build_tiny_clip, build_tiny_sd


def _rows(n: int, size: int) -> list[dict]:
    rng = np.random.default_rng(0)
    labels = ["cardiomegaly", "effusion"]
    return [
        {
            "id": f"r{i}",
            "image": Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")),
            "prompt": f"a chest x-ray with {labels[i % 2]} {i}",
            "label": labels[i % 2],
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="rows (pairs) per micro-batch")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="T for the DRaFT-K comparison (paper: 20).")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (best of)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on shared CPUs).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    B, R = args.batch, args.resolution

    tmp = Path(tempfile.mkdtemp(prefix="bench-baselines-"))
    sd_dir = str(build_tiny_sd(tmp / "sd", block_out_channels=(32, 64), vae_channels=(32, 64)))
    common = dict(
        model=sd_dir, resolution=R, batch_size=B, max_steps=1, log_with="none", checkpoint_every=0,
        progress_bar=False, gradient_checkpointing=False,
    )  # fmt: skip
    rows = _rows(2 * B, R)
    pairs = [
        {"id": f"p{i}", "prompt": rows[2 * i]["prompt"], "chosen": rows[2 * i]["image"],
         "rejected": rows[2 * i + 1]["image"]}
        for i in range(B)
    ]  # fmt: skip

    # ---- Diffusion-DPO
    dpo = DiffusionDPOTrainer(config=DPOConfig(**common, output_dir=str(tmp / "dpo"), lora_rank=4), train_data=pairs)
    with torch.no_grad():  # off the zero init, so the LoRA branch does real work
        for p in dpo.params:
            p.normal_(0, 0.1)
    model = dpo.model
    dpo_batch = _batch(dpo, pairs)
    inputs = dpo.dpo_inputs(dpo_batch)
    x, t, emb = inputs.noisy[:B], inputs.timesteps[:B], inputs.embeds[:B]

    def zero(trainer) -> None:
        for p in trainer.params:
            p.grad = None

    def dpo_step() -> None:
        zero(dpo)
        dpo.model.set_training(True)
        out = dpo.compute_loss(dpo_batch)
        out.loss.backward()

    def unet_forward_nograd() -> None:
        with torch.no_grad():
            model.unet_forward(x, t, emb)

    def unet_forward_backward() -> None:
        zero(dpo)
        model.unet_forward(x, t, emb).float().pow(2).mean().backward()

    def dpo_parts() -> None:
        for _ in range(2):
            unet_forward_nograd()  # reference, chosen / rejected
            unet_forward_backward()  # policy, chosen / rejected

    pixels = torch.rand(2 * B, 3, R, R)

    def vae_encode() -> None:
        model.encode_images(pixels, generator=torch.Generator().manual_seed(0))

    # ---- textual inversion
    ti = TextualInversionTrainer(
        config=TIConfig(
            **common, output_dir=str(tmp / "ti"), placeholder_tokens={"cardiomegaly": "<c>", "effusion": "<e>"},
            initializer_token="a", ti_prompt_template="{token}, {prompt}",
        ),
        train_data=rows[:B],
    )  # fmt: skip
    ti_batch = _batch(ti, rows[:B])
    ti_model = ti.model
    ti_prompts = [ti.prompt_for(e) for e in ti.train_examples[:B]]
    ti_emb = ti_model.encode_prompts(ti_prompts).detach()
    latents = ti_model.encode_images(pixels[:B])
    t_b = torch.full((B,), 500)

    def ti_step() -> None:
        zero(ti)
        ti.model.set_training(True)
        ti.compute_loss(ti_batch).loss.backward()

    def ti_unet_part() -> None:
        e = ti_emb.clone().requires_grad_(True)
        ti_model.unet_forward(latents, t_b, e).float().pow(2).mean().backward()

    def ti_text_part() -> None:
        zero(ti)
        ti_model.encode_prompts(ti_prompts, grad=True).float().pow(2).mean().backward()

    def ti_vae_part() -> None:
        ti_model.encode_images(pixels[:B], generator=torch.Generator().manual_seed(0))

    timings = interleaved(
        {
            "dpo_step": dpo_step,
            "dpo_unet": dpo_parts,
            "vae_2b": vae_encode,
            "ti_step": ti_step,
            "ti_unet": ti_unet_part,
            "ti_text": ti_text_part,
            "ti_vae": ti_vae_part,
        },
        args.repeats,
    )

    # ---- DRaFT-K: M trajectories in one batch vs M separate calls
    critic = load_critic(build_tiny_clip(tmp / "clip"), device="cpu")
    draftk: dict[str, float] = {}
    for m in (2, 4):
        trainers = {}
        for batched in (False, True):
            cfg = TrainConfig(
                **{**common, "gradient_checkpointing": True}, output_dir=str(tmp / f"draftk{m}{batched}"),
                num_inference_steps=args.steps, k=1, repeats=m, repeats_in_batch=batched, lora_rank=4,
                lambda_diff=0.2, lambda_reward=0.8,
            )  # fmt: skip
            trainer = DraftKTrainer(rewards=[VDCReward(critic)], config=cfg, train_data=rows[:B])
            trainers[batched] = (trainer, _batch(trainer, rows[:B]))

        def run(batched: bool, trainers=trainers) -> None:
            trainer, batch = trainers[batched]
            zero(trainer)
            trainer.model.set_training(True)
            trainer.compute_loss(batch)

        found = interleaved({"separate": lambda: run(False), "batched": lambda: run(True)}, args.repeats)
        draftk[f"M{m}_separate"], draftk[f"M{m}_batched"] = found["separate"], found["batched"]

    def row(label: str, value: str, ratio: float | None = None, note: str = "") -> None:
        print(f"{label:<58}{value:>12}{(f'{ratio:.3f}' if ratio is not None else ''):>10}  {note}")

    print()
    print(
        f"Baselines benchmark: tiny SD (32, 64), {R}x{R}, batch {B}, {args.threads} thread(s), best of {args.repeats}"
    )
    row("measure", "seconds", None, "ratio")
    dpo_unet = timings["dpo_unet"]
    row("DPO micro-step", f"{timings['dpo_step']:.4f}")
    row(
        "  4 UNet forward + 2 backward (batch B each)",
        f"{dpo_unet:.4f}",
        timings["dpo_step"] / dpo_unet,
        "step / UNet parts",
    )
    row("  + VAE encode of chosen and rejected", f"{dpo_unet + timings['vae_2b']:.4f}",
        timings["dpo_step"] / (dpo_unet + timings["vae_2b"]), "step / all parts")  # fmt: skip
    ti_unet = timings["ti_unet"]
    ti_all = ti_unet + timings["ti_text"] + timings["ti_vae"]
    row("TI micro-step", f"{timings['ti_step']:.4f}")
    row("  1 UNet forward + 1 backward", f"{ti_unet:.4f}", timings["ti_step"] / ti_unet, "step / UNet part")
    row("  + text encoder fwd/bwd + VAE encode", f"{ti_all:.4f}", timings["ti_step"] / ti_all, "step / all parts")
    for m in (2, 4):
        sep, bat = draftk[f"M{m}_separate"], draftk[f"M{m}_batched"]
        row(f"DRaFT-K micro-step, T={args.steps} K=1, M={m}: batched / separate", f"{bat:.3f}/{sep:.3f}", bat / sep,
            "repeats_in_batch: true / false")  # fmt: skip


def _batch(trainer, rows):
    from clinalign.training.core import TrainBatch

    return TrainBatch(rows=trainer.train_examples[: len(rows)], micro_step=0)


if __name__ == "__main__":
    main()
