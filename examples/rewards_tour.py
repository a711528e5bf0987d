"""A tour of critics, probes and clinical rewards on tiny local models (runs offline on a CPU in seconds).

It builds a tiny CLIP-style critic from a config, fits a DD probe on synthetic labelled images, scores
new images with VDC + CCS + DD + SFS, and then runs a few steps of gradient ascent on the *pixels*
to show that the composite reward is differentiable end to end (the same gradient DRaFT-K sends into
LoRA weights). With real models, replace the tiny critic by e.g. load_critic("google/medsiglip-448").

    python examples/rewards_tour.py
"""

from __future__ import annotations

import tempfile

import torch

from clinalign import LinearProbe, load_critic
from clinalign.rewards import CCSReward, CompositeReward, DDReward, RewardBatch, SFSReward, VDCReward
from clinalign.testing import build_tiny_clip

CLASSES = ["nevus", "vitiligo"]
CHECKLISTS = {
    "nevus": "Lesion Type: macule. Shape/Size: small, round. Color: uniform brown. Texture: smooth.",
    "vitiligo": "Lesion Type: depigmented patch. Shape/Size: irregular, sharp outline. Color: white. Texture: smooth.",
}


def synthetic_images(label: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """Skin-toned squares with a brown disc (nevus) or a white blob (vitiligo)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    skin = torch.tensor([0.85, 0.65, 0.55]).view(3, 1, 1)
    images = []
    for _ in range(n):
        radius = 0.25 + 0.1 * torch.rand(1, generator=generator)
        mask = ((xx**2 + yy**2).sqrt() < radius).float()
        colour = torch.tensor([0.4, 0.25, 0.15]) if label == "nevus" else torch.tensor([0.97, 0.95, 0.93])
        image = skin * (1 - mask) + colour.view(3, 1, 1) * mask
        images.append((image + 0.03 * torch.randn(3, 32, 32, generator=generator)).clamp(0, 1))
    return torch.stack(images)


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        critic = load_critic(build_tiny_clip(f"{tmp}/critic"), device="cpu")
    print(f"critic: {critic}")

    # 1. DD probe on real (here: synthetic) training images
    real = {c: synthetic_images(c, 32, generator) for c in CLASSES}
    embeddings = torch.cat([critic.encode_images(real[c]).detach() for c in CLASSES])
    labels = [c for c in CLASSES for _ in range(32)]
    probe = LinearProbe.fit(embeddings, labels, CLASSES, epochs=100, lr=1e-2, critic_name=critic.name)
    print(f"probe train accuracy: {probe.metrics['train_accuracy']:.2f}")

    # 2. score 'generated' images: here, noisy versions of held-out references
    references = torch.cat([synthetic_images(c, 2, generator) for c in CLASSES])
    label_idx = torch.tensor([0, 0, 1, 1])
    batch = RewardBatch(
        prompts=["a small round uniformly brown nevus"] * 2 + ["a white depigmented patch with a sharp outline"] * 2,
        checklists=[CHECKLISTS[CLASSES[i]] for i in label_idx],
        labels=label_idx,
        references=references,
    )
    reward = CompositeReward([VDCReward(critic), CCSReward(critic), DDReward(critic, probe), SFSReward(critic)])
    images = (references + 0.35 * torch.randn(references.shape, generator=generator)).clamp(0, 1)
    before = reward(images, batch)
    print("before:", {k: round(float(v.mean()), 3) for k, v in before.components.items()}, f"total {before.total.mean():.3f}")

    # 3. gradient ascent on pixels: the reward is differentiable in the images
    pixels = torch.logit(images.clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=0.05)
    calls_before = critic.image_encoder_calls
    for _ in range(30):
        out = reward(torch.sigmoid(pixels), batch)
        optimizer.zero_grad()
        (-out.total.mean()).backward()
        optimizer.step()
    after = reward(torch.sigmoid(pixels).detach(), batch)
    print("after: ", {k: round(float(v.mean()), 3) for k, v in after.components.items()}, f"total {after.total.mean():.3f}")
    calls = critic.image_encoder_calls - calls_before - 1
    print(f"image encoder calls in 30 ascent steps: {calls} (the 4 rewards share one embedding per step)")
    if not after.total.mean() > before.total.mean():
        raise SystemExit("the composite reward did not rise: something is wrong")


if __name__ == "__main__":
    main()
