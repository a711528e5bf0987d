"""``repeats_in_batch``: the M DRaFT-K trajectories of a step sampled in one UNet call per denoising step
give the same loss and LoRA gradients as M separate calls (same per-trajectory noise)."""

from __future__ import annotations

import pytest
import torch
from test_train_support import BrightnessReward, RedReward, tiny_config, tiny_sd_path, toy_rows

from clinalign.errors import ConfigError


def test_grouped_generators_give_each_group_the_noise_of_a_separate_call():
    from clinalign.diffusion import load_diffusion_model, sample

    model = load_diffusion_model(tiny_sd_path(), device="cpu")
    embeds = model.encode_prompts(["a chest x-ray", "fluid in the left lung"])
    common = {"height": 16, "width": 16, "num_inference_steps": 3, "k": 0, "eta": 1.0, "guidance_scale": 2.0}
    with torch.no_grad():
        alone = [sample(model, embeds, generator=torch.Generator().manual_seed(s), **common).images for s in (7, 8, 9)]
        together = sample(
            model, embeds.repeat(3, 1, 1), generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)], **common
        ).images
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(alone[0], alone[1])  # the trajectories really differ
    with pytest.raises(ConfigError, match="3 generators for a batch of 4"):
        sample(model, embeds.repeat(2, 1, 1), generator=[torch.Generator() for _ in range(3)], **common)


def _loss_and_grads(tmp_path, setting, unet_calls: list[int]):
    from clinalign import DraftKTrainer
    from clinalign.training.core import TrainBatch

    config = tiny_config(tmp_path / str(setting), repeats=3, repeats_in_batch=setting, lambda_diff=0.2)
    trainer = DraftKTrainer(rewards=[BrightnessReward(), RedReward()], config=config, train_data=toy_rows(2))
    with torch.no_grad():  # off the zero init, identically in every trainer, so every LoRA tensor gets a gradient
        for i, p in enumerate(trainer.params):
            p.copy_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    trainer.model.unet.register_forward_pre_hook(lambda *_: unet_calls.append(1))
    trainer.model.set_training(True)
    torch.manual_seed(0)
    out = trainer.compute_loss(TrainBatch(rows=trainer.train_examples[:2], micro_step=3))
    return out.metrics, [p.grad.detach().clone() for p in trainer.params]


@pytest.mark.parametrize("setting", [True, 2])
def test_repeats_in_batch_matches_separate_calls(tmp_path, setting):
    separate_calls: list[int] = []
    batched_calls: list[int] = []
    metrics, grads = _loss_and_grads(tmp_path, False, separate_calls)
    batched_metrics, batched_grads = _loss_and_grads(tmp_path, setting, batched_calls)
    for key in ("loss/total", "reward/total", "reward/brightness", "reward/red", "loss/diffusion"):
        assert batched_metrics[key] == pytest.approx(metrics[key], rel=1e-5, abs=1e-7), key
    assert len(grads) == len(batched_grads) and all(g.abs().sum() > 0 for g in grads)
    for a, b in zip(grads, batched_grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)
    # T=3 sampling steps, K=1 of them re-run in backward (checkpointed), plus the diffusion-loss call
    per_trajectory = 3 + 1
    assert len(separate_calls) == 1 + 3 * per_trajectory
    assert len(batched_calls) == 1 + (1 if setting is True else 2) * per_trajectory


def test_repeats_in_batch_validation(tmp_path):
    assert tiny_config(tmp_path, repeats=3, repeats_in_batch=True).repeats_per_call == 3
    assert tiny_config(tmp_path, repeats=3, repeats_in_batch=False).repeats_per_call == 1
    assert tiny_config(tmp_path, repeats=3, repeats_in_batch=2).repeats_per_call == 2
    with pytest.raises(ConfigError, match=r"between 1 and `repeats` \(2\), got 3"):
        tiny_config(tmp_path, repeats=2, repeats_in_batch=3)
