"""DRaFT-K benchmark on a tiny local Stable Diffusion pipeline (CPU-friendly, no downloads).

Prints, side by side:

1. step time vs the sum of its necessary parts timed alone (T−K no-grad UNet calls, K grad UNet
   forward+backward, VAE decode forward+backward, critic forward+backward); goal <= 1.10;
2. bytes saved for backward per step (counted with ``torch.autograd.graph.saved_tensors_hooks``) at
   T=50 vs T=10 with K=1 (goal <= 1.02), and full backprop through all steps for contrast;
3. our step time and saved bytes as ratios of trl 0.23.1 AlignProp's differentiable sampling
   (``DefaultDDPOStableDiffusionPipeline.rgb_with_grad`` with fixed truncation at K=1) on the same
   pipeline, LoRA, T, CFG and batch; goals: time <= 0.60, bytes < 1. The time row is printed beside its floor,
   the sum of the necessary parts ÷ trl's step, timed in the same interleaved block: both samplers make the
   same UNet calls, so no step that makes them with the same UNet forward can go below that floor.

Run: ``python bench/bench_draftk.py [--steps 20] [--batch 2] [--resolution 32] [--repeats 5]``
(``pip install 'clinalign[bench]'`` installs trl==0.23.1; install it with ``--no-deps``).
Times are the best of interleaved repeats, so machine load affects both sides alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from clinalign.critics import load_critic
from clinalign.diffusion import LoraSpec, load_diffusion_model, sample
from clinalign.rewards import RewardBatch, VDCReward
from clinalign.testing import build_tiny_clip, build_tiny_sd

PROMPTS = ["a chest x-ray with an enlarged cardiac silhouette", "blunted costophrenic angle with fluid"]
LORA = LoraSpec(rank=4, alpha=4, layers="all_attention")  # what trl's get_trainable_layers adds


class SavedBytes:
    """Count bytes the autograd graph saves for backward (each saved tensor counted once per save)."""

    def __init__(self) -> None:
        self.total = 0

    def __enter__(self) -> SavedBytes:
        def pack(t: torch.Tensor) -> torch.Tensor:
            self.total += t.numel() * t.element_size()
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Best (minimum) time of each function, run round-robin so load drift hits all of them alike.

    The minimum is the least noisy estimate on a shared machine: other processes can only add time."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="T for the timing comparison (paper: 20).")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on shared CPUs).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    T, K, B, R, G = args.steps, 1, args.batch, args.resolution, args.guidance_scale

    tmp = Path(tempfile.mkdtemp(prefix="bench-draftk-"))
    sd_dir = build_tiny_sd(tmp / "sd", block_out_channels=(32, 64), vae_channels=(32, 64))
    critic = load_critic(build_tiny_clip(tmp / "clip"), device="cpu")
    reward = VDCReward(critic)
    batch = RewardBatch(prompts=(PROMPTS * B)[:B], checklists=[""] * B, labels=torch.zeros(B, dtype=torch.long))

    model = load_diffusion_model(sd_dir, device="cpu")
    model.add_lora(LORA)
    params = model.lora_parameters()
    emb = model.encode_prompts(batch.prompts)

    def zero() -> None:
        for p in params:
            p.grad = None

    def our_step(steps: int = T, k: int = K, ckpt: bool = True) -> None:
        zero()
        out = sample(
            model, emb, height=R, width=R, num_inference_steps=steps, k=k, eta=1.0, guidance_scale=G,
            generator=torch.Generator().manual_seed(0), gradient_checkpointing=ckpt,
        )  # fmt: skip
        (-reward(out.images, batch).mean()).backward()

    # ---- the necessary parts, each timed alone
    h = R // model.vae_scale_factor
    latents = torch.randn(B, model.latent_channels, h, h)
    cfg_emb = torch.cat([model.encode_prompts([""]).expand(B, -1, -1), emb])
    t_mid = torch.tensor(500)

    def part_nograd_unet() -> None:
        with torch.no_grad():
            for _ in range(T - K):
                model.unet_forward(torch.cat([latents, latents]), t_mid, cfg_emb)

    def part_grad_unet() -> None:
        zero()
        for _ in range(K):
            x = latents.clone().requires_grad_(True)
            model.unet_forward(torch.cat([x, x]), t_mid, cfg_emb).float().mean().backward()

    def part_vae() -> None:
        x = latents.clone().requires_grad_(True)
        model.decode(x).mean().backward()

    def part_critic() -> None:
        x = torch.rand(B, 3, R, R, requires_grad=True)
        reward(x, batch).mean().backward()

    timings = interleaved(
        {
            "step": lambda: our_step(ckpt=True),
            "step_no_ckpt": lambda: our_step(ckpt=False),
            "nograd_unet": part_nograd_unet,
            "grad_unet": part_grad_unet,
            "vae": part_vae,
            "critic": part_critic,
        },
        args.repeats,
    )
    parts = timings["nograd_unet"] + timings["grad_unet"] + timings["vae"] + timings["critic"]

    # ---- saved-for-backward bytes
    def our_saved(steps: int, k: int) -> int:
        zero()
        with SavedBytes() as counter:
            out = sample(
                model, emb, height=R, width=R, num_inference_steps=steps, k=k, eta=1.0, guidance_scale=G,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            loss = -reward(out.images, batch).mean()
        loss.backward()
        return counter.total

    saved_10, saved_50, saved_full = our_saved(10, 1), our_saved(50, 1), our_saved(50, 50)

    # ---- trl 0.23.1 AlignProp differentiable sampling on the same pipeline
    trl_row = None
    try:
        from trl.models.modeling_sd_base import DefaultDDPOStableDiffusionPipeline
    except ImportError as exc:  # pragma: no cover - depends on the bench extra
        print(f"(trl comparison skipped: {exc}; pip install --no-deps trl==0.23.1)")
    else:
        from accelerate import PartialState

        PartialState()  # trl logs through accelerate's logger, which needs the state
        trl_pipe = DefaultDDPOStableDiffusionPipeline(str(sd_dir), use_lora=True)
        trl_pipe.sd_pipeline.set_progress_bar_config(disable=True)
        trl_pipe.sd_pipeline.safety_checker = None
        trl_unet = trl_pipe.get_trainable_layers()
        # same LoRA weights as ours, so both sides compute the same function
        ours_state = {n.replace(".default", ""): p for n, p in model.unet.named_parameters() if "lora_" in n}
        with torch.no_grad():
            for n, p in trl_unet.named_parameters():
                if "lora_" in n:
                    p.copy_(ours_state[n.replace(".default", "")])
        trl_params = [p for p in trl_unet.parameters() if p.requires_grad]
        neg = model.encode_prompts([""] * B)

        def trl_step(steps: int = T) -> None:
            for p in trl_params:
                p.grad = None
            out = trl_pipe.rgb_with_grad(
                prompt_embeds=emb, negative_prompt_embeds=neg, num_inference_steps=steps, guidance_scale=G,
                eta=1.0, output_type="pt", height=R, width=R, truncated_backprop=True,
                truncated_backprop_rand=False, truncated_backprop_timestep=steps - K, gradient_checkpoint=True,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            (-reward(out.images.float(), batch).mean()).backward()

        def trl_saved(steps: int) -> int:
            for p in trl_params:
                p.grad = None
            with SavedBytes() as counter:
                out = trl_pipe.rgb_with_grad(
                    prompt_embeds=emb, negative_prompt_embeds=neg, num_inference_steps=steps, guidance_scale=G,
                    eta=1.0, output_type="pt", height=R, width=R, truncated_backprop=True,
                    truncated_backprop_rand=False, truncated_backprop_timestep=steps - K, gradient_checkpoint=True,
                    generator=torch.Generator().manual_seed(0),
                )  # fmt: skip
                loss = -reward(out.images.float(), batch).mean()
            loss.backward()
            return counter.total

        def all_parts() -> None:
            part_nograd_unet()
            part_grad_unet()
            part_vae()
            part_critic()

        head = interleaved({"ours": lambda: our_step(ckpt=True), "trl": trl_step, "parts": all_parts}, args.repeats)
        trl_row = (head["ours"], head["trl"], head["parts"], our_saved(T, K), trl_saved(T), trl_saved(50))

    mib = 1 / 2**20

    def row(label: str, value: str, ratio: float | None = None, goal: str = "") -> None:
        ratio_text = f"{ratio:.3f}" if ratio is not None else ""
        print(f"{label:<56}{value:>18}{ratio_text:>10}  {goal}")

    print()
    print(f"DRaFT-K benchmark: tiny SD, {R}x{R}, batch {B}, T={T}, K={K}, CFG {G}, LoRA r{LORA.rank} all attention")
    row("measure", "value", None, "ratio / goal")
    row("step time, checkpointed (s)", f"{timings['step']:.4f}", timings["step"] / parts, "<= 1.10 x parts")
    row("step time, no checkpointing (s)", f"{timings['step_no_ckpt']:.4f}", timings["step_no_ckpt"] / parts)
    row("  sum of parts (s)", f"{parts:.4f}")
    for name in ("nograd_unet", "grad_unet", "vae", "critic"):
        row(f"    {name}", f"{timings[name]:.4f}")
    row("saved for backward, T=10 K=1 (MiB)", f"{saved_10 * mib:.3f}")
    row("saved for backward, T=50 K=1 (MiB)", f"{saved_50 * mib:.3f}", saved_50 / saved_10, "T=50 / T=10 <= 1.02")
    row("saved for backward, T=50 K=50 full (MiB)", f"{saved_full * mib:.3f}", saved_full / saved_10, "contrast")
    if trl_row is not None:
        ours_t, trl_t, parts_t, ours_b, trl_b, trl_b50 = trl_row
        row("step time, ours / trl AlignProp rgb_with_grad (s)", f"{ours_t:.3f}/{trl_t:.3f}", ours_t / trl_t, "<= 0.60")
        row(
            "  floor: sum of parts / trl, same block (s)",
            f"{parts_t:.3f}/{trl_t:.3f}",
            parts_t / trl_t,
            "lowest reachable",
        )
        row(f"saved bytes at T={T}, ours / trl (MiB)", f"{ours_b * mib:.2f}/{trl_b * mib:.2f}", ours_b / trl_b, "< 1")
        row(
            "saved bytes at T=50, ours / trl (MiB)",
            f"{saved_50 * mib:.2f}/{trl_b50 * mib:.2f}",
            saved_50 / trl_b50,
            "< 1",
        )


if __name__ == "__main__":
    main()
