"""Run CRAFT end to end on tiny random models, offline: build assets, train with DRaFT-K, generate.

    python examples/train_tiny.py                 # everything, outputs under runs/tiny/
    python examples/train_tiny.py --assets-only   # then: clinalign train --config examples/craft_tiny.yaml

The models are random, so the images are noise; the point is to exercise the whole pipeline (rewards
from a critic + probe, held-out evaluation with a different critic, checkpoints, TensorBoard logs,
sample grids, LoRA export and generation) in a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets-only", action="store_true", help="Only build runs/tiny/assets.")
    parser.add_argument("--config", default=str(HERE / "craft_tiny.yaml"))
    args = parser.parse_args()

    from clinalign.testing import build_tiny_craft_assets

    assets = Path("runs/tiny/assets")
    if not (assets / "eval_probe").is_dir():
        build_tiny_craft_assets(assets)
        print(f"built tiny assets in {assets}")
    if args.assets_only:
        return

    from clinalign.diffusion import generate_to_dir, load_diffusion_model, read_prompts
    from clinalign.training import TrainConfig, train_from_config

    config = TrainConfig.from_file(args.config)
    result = train_from_config(config)
    last = result.history[-1]
    print(f"trained {result.global_step} steps; last reward {last.get('reward/total', float('nan')):.4f}")
    for row in result.eval_history:
        print(
            f"  eval at step {int(row['step'])}: evaluator {row['eval/total']:.4f}, "
            f"training critic on held-out {row.get('eval/train_critic_total', float('nan')):.4f}"
        )

    model = load_diffusion_model(config.model, device="cpu")
    model.load_lora(result.lora_dir)
    manifest = generate_to_dir(
        model, read_prompts(config.eval_data), "runs/tiny/generated", n_per_prompt=2, seed=0,
        resolution=config.resolution, num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale, eta=0.0, batch_size=4,
    )  # fmt: skip
    print(f"LoRA: {result.lora_dir}\nsamples: {Path(config.output_dir) / 'samples'}\ngenerated: {manifest}")
    print(f"TensorBoard: tensorboard --logdir {Path(config.output_dir) / 'logs'}")


if __name__ == "__main__":
    main()
