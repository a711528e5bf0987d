"""DraftKTrainer on the tiny SD pipeline: gradient truncation, frozen parts, learning, resume, LoRA export."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train_support import (  # noqa: F401 - tiny_sd is a fixture
    BrightnessReward,
    RedReward,
    tiny_config,
    tiny_sd,
    tiny_sd_path,
    toy_rows,
    write_toy_jsonl,
)

from clinalign.errors import ConfigError, DataError
from clinalign.training import DraftKTrainer, RewardHackingWarning, TrainingDivergedError


def _count_unet_calls(trainer):
    """Record, per UNet call: (grad enabled, inside a backward pass = checkpoint recomputation)."""
    calls = []
    trainer.model.unet.register_forward_pre_hook(
        lambda *_: calls.append((torch.is_grad_enabled(), torch._C._current_graph_task_id() != -1))
    )
    return calls


@pytest.mark.parametrize(
    ("lambda_diff", "k", "repeats", "checkpointing"),
    [(0.2, 1, 2, False), (0.0, 2, 2, False), (0.5, 2, 3, True), (0.2, 3, 1, True)],
)
def test_grad_unet_calls_per_step(tmp_path, lambda_diff, k, repeats, checkpointing):
    cfg = tiny_config(
        tmp_path, lambda_diff=lambda_diff, k=k, repeats=repeats, num_inference_steps=3, max_steps=1,
        gradient_checkpointing=checkpointing,
    )  # fmt: skip
    trainer = DraftKTrainer(rewards=[BrightnessReward()], config=cfg, train_data=toy_rows(4))
    calls = _count_unet_calls(trainer)
    trainer.train()
    forward = [grad for grad, in_backward in calls if not in_backward]
    recomputed = [grad for grad, in_backward in calls if in_backward]
    expected_grad = k * repeats + (1 if lambda_diff > 0 else 0)
    assert sum(forward) == expected_grad
    assert len(forward) - sum(forward) == (3 - k) * repeats  # the first T-K steps ran under no_grad
    # gradient checkpointing recomputes exactly the K·M sampler calls during backward, nothing else
    assert len(recomputed) == (k * repeats if checkpointing else 0)


def test_only_lora_changes_frozen_parts_bit_identical(tmp_path):
    """Real clinical rewards on a tiny CLIP critic: VAE, text encoder, critic and UNet base stay bit-identical."""
    from clinalign.critics import load_critic
    from clinalign.rewards import CCSReward, SFSReward, VDCReward
    from clinalign.testing import build_tiny_clip

    critic = load_critic(build_tiny_clip(tmp_path / "clip"), device="cpu")
    cfg = tiny_config(tmp_path, max_steps=2, lora_layers="all_attention", reward_weights={"vdc": 2.0})
    trainer = DraftKTrainer(
        rewards=[VDCReward(critic), CCSReward(critic), SFSReward(critic)], config=cfg, train_data=toy_rows(4)
    )
    model = trainer.model

    def snapshot():
        return {
            "vae": {k: v.clone() for k, v in model.vae.state_dict().items()},
            "text": {k: v.clone() for k, v in model.text_encoder.state_dict().items()},
            "critic": {k: v.clone() for k, v in critic.module.state_dict().items()},
            "unet": {k: v.clone() for k, v in model.unet.state_dict().items() if "lora_" not in k},
            "lora": {k: v.clone() for k, v in model.unet.state_dict().items() if "lora_" in k},
        }

    before = snapshot()
    out = trainer.train()
    after = snapshot()
    for part in ("vae", "text", "critic", "unet"):
        assert before[part].keys() == after[part].keys()
        for key in before[part]:
            assert torch.equal(before[part][key], after[part][key]), f"{part}.{key} changed"
    changed = [k for k in before["lora"] if not torch.equal(before["lora"][k], after["lora"][k])]
    assert len(changed) == len(before["lora"])
    assert {"reward/vdc", "reward/ccs", "reward/sfs", "reward/total", "loss/diffusion"} <= set(out.history[0])
    # weights: vdc counts twice in the total
    h = out.history[0]
    expected = (2 * h["reward/vdc"] + h["reward/ccs"] + h["reward/sfs"]) / 4
    assert h["reward/total"] == pytest.approx(expected, abs=1e-5)
    meta = json.loads((out.lora_dir / "clinalign_meta.json").read_text())
    assert meta["training_critics"] == [critic.name]
    assert [r["name"] for r in meta["rewards"]] == ["vdc", "ccs", "sfs"]
    assert meta["steps"] == 2
    assert meta["base_model"] == str(tiny_sd_path())
    assert meta["config"]["k"] == 1
    assert meta["clinalign_version"]


def test_brightness_reward_rises_and_eval_flags_hacking(tmp_path):
    """The trained reward rises clearly; an evaluator that dislikes brightness exposes it as reward hacking."""

    class DarknessReward:
        name = "darkness"

        def __call__(self, images, batch):
            return 1.0 - images.mean(dim=(1, 2, 3))

    cfg = tiny_config(
        tmp_path, lambda_diff=0.0, repeats=1, max_steps=16, learning_rate=5e-2, lora_layers="all_attention",
        lora_rank=4, eval_every=8, eval_max_prompts=4, hacking_tolerance=0.0, hacking_patience=1, max_grad_norm=None,
    )  # fmt: skip
    trainer = DraftKTrainer(
        rewards=[BrightnessReward()],
        config=cfg,
        train_data=toy_rows(8),
        eval_data=toy_rows(4, seed=1),
        eval_rewards=[DarknessReward()],
    )
    with pytest.warns(RewardHackingWarning, match="reward hacking"):
        out = trainer.train()
    # The tiny random VAE's GroupNorms wash out most global brightness: across random latents the mean
    # brightness of decoded images varies with std ~0.003 only, so a rise of 0.005 is well outside noise.
    rewards = [h["reward/total"] for h in out.history]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.005, rewards
    assert [e["step"] for e in out.eval_history] == [0, 8, 16]
    held_out = [e["eval/train_critic_total"] for e in out.eval_history]  # fixed prompts and seeds
    assert min(held_out[1:]) > held_out[0] + 0.005, held_out
    assert out.eval_history[1]["eval/hacking"] == 1.0  # brightness up, evaluator (darkness) down


def test_resume_equals_uninterrupted(tmp_path):
    common = {
        "lambda_diff": 0.3,
        "repeats": 2,
        "lora_dropout": 0.1,  # exercises the global RNG too
        "checkpoint_every": 2,
        "gradient_accumulation_steps": 2,
        "batch_size": 1,
        "num_inference_steps": 2,
    }
    rows = toy_rows(6)
    full = DraftKTrainer(
        rewards=[BrightnessReward()], config=tiny_config(tmp_path / "a", max_steps=4, **common), train_data=rows
    ).train()
    part = DraftKTrainer(
        rewards=[BrightnessReward()], config=tiny_config(tmp_path / "b", max_steps=2, **common), train_data=rows
    ).train()
    assert (tmp_path / "b" / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").is_file()
    resumed = DraftKTrainer(
        rewards=[BrightnessReward()],
        config=tiny_config(tmp_path / "b", max_steps=4, resume_from="latest", **common),
        train_data=rows,
    ).train()
    assert resumed.global_step == 4
    keys = ("loss/total", "loss/diffusion", "reward/total", "train/grad_norm")
    assert [[h[k] for k in keys] for h in part.history + resumed.history] == [
        [h[k] for k in keys] for h in full.history
    ]
    from safetensors.torch import load_file

    a = load_file(str(full.lora_dir / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed.lora_dir / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=1, resume_from="latest", repeats=1)
    with pytest.warns(UserWarning, match="starting fresh"):
        out = DraftKTrainer(rewards=[BrightnessReward()], config=cfg, train_data=toy_rows(2)).train()
    assert out.global_step == 1


def test_checkpoint_pruning(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=3, checkpoint_every=1, checkpoints_total_limit=2, repeats=1, lambda_diff=0)
    DraftKTrainer(rewards=[BrightnessReward()], config=cfg, train_data=toy_rows(2)).train()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-0000002", "step-0000003"]


def test_saved_lora_reproduces_trainer_samples(tmp_path):
    """Plain StableDiffusionPipeline + load_lora_weights(dir) gives the trainer's own samples; grid and logs exist."""
    from diffusers import StableDiffusionPipeline

    cfg = tiny_config(tmp_path, max_steps=2, log_with="tensorboard", sample_every=2, lora_alpha=4.0, eta=1.0)
    trainer = DraftKTrainer(rewards=[BrightnessReward(), RedReward()], config=cfg, train_data=toy_rows(4))
    out = trainer.train()
    rows = trainer.sample_rows()
    ours = trainer._generate(rows, seed_offset=77)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(out.lora_dir)
    theirs = pipe(
        [r.prompt for r in rows], height=16, width=16, num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale, eta=cfg.eta, output_type="pt",
        generator=[torch.Generator().manual_seed(cfg.seed + 77 + i) for i in range(len(rows))],
    ).images  # fmt: skip
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    run = tmp_path / "run"
    assert (run / "samples" / "step-0000002.png").is_file()
    assert list((run / "logs").rglob("events.out.tfevents*"))
    assert (run / "config.yaml").is_file()


def test_nan_loss_is_skipped_then_stops(tmp_path):
    class NaNReward:
        name = "nan"

        def __call__(self, images, batch):
            return images.mean(dim=(1, 2, 3)) * float("nan")

    cfg = tiny_config(tmp_path, max_steps=10, max_nan_steps=3, repeats=1)
    trainer = DraftKTrainer(rewards=[NaNReward()], config=cfg, train_data=toy_rows(4))
    lora_before = [p.detach().clone() for p in trainer.params]
    with pytest.warns(RuntimeWarning, match="step skipped"), pytest.raises(TrainingDivergedError, match="3 steps"):
        trainer.train()
    assert trainer.global_step == 3
    assert all(torch.equal(a, b) for a, b in zip(lora_before, trainer.params, strict=True))


def test_pure_diffusion_baseline_needs_no_rewards(tmp_path):
    cfg = tiny_config(tmp_path, lambda_reward=0.0, max_steps=1)
    calls = None
    trainer = DraftKTrainer(config=cfg, train_data=toy_rows(2))
    calls = _count_unet_calls(trainer)
    out = trainer.train()
    assert sum(g for g, _ in calls) == 1
    assert "reward/total" not in out.history[0] and math.isfinite(out.history[0]["loss/diffusion"])


def test_enriched_jsonl_and_checklists_file(tmp_path):
    """Training data from an enriched JSONL (id, image, label, t_ep) plus a checklists file."""
    seen = []

    class Spy:
        name = "spy"

        def __call__(self, images, batch):
            seen.append((list(batch.prompts), list(batch.checklists), batch.labels.tolist(), batch.references.shape))
            return images.mean(dim=(1, 2, 3))

    data = write_toy_jsonl(tmp_path / "data", 4)
    cfg = tiny_config(tmp_path, max_steps=1, repeats=1, checklists=str(data.parent / "checklists.json"))
    trainer = DraftKTrainer(rewards=[Spy()], config=cfg, train_data=str(data))
    trainer.train()
    assert trainer.class_names == ["cardiomegaly", "effusion"]
    prompts, checklists, labels, ref_shape = seen[0]
    assert all(p.startswith("a chest x-ray with") for p in prompts)
    names = [trainer.class_names[i] for i in labels]
    assert checklists == [{"cardiomegaly": "enlarged heart", "effusion": "blunted angle"}[n] for n in names]
    assert tuple(ref_shape) == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"image": None, "prompt": "x", "label": "a"}], "missing 'image'"),
        ([{"prompt": "x"}], "missing 'label'"),
        ([{"image": "/no/such.png", "prompt": "x", "label": "a"}], "not found"),
    ],
)
def test_bad_rows(tmp_path, rows, match):
    with pytest.raises(DataError, match=match):
        DraftKTrainer(rewards=[BrightnessReward()], config=tiny_config(tmp_path), train_data=rows)


def test_missing_checklist_for_ccs(tmp_path):
    from clinalign.critics import load_critic
    from clinalign.rewards import CCSReward
    from clinalign.testing import build_tiny_clip

    critic = load_critic(build_tiny_clip(tmp_path / "clip"), device="cpu")
    rows = [{**r, "checklist": None} for r in toy_rows(2)]
    with pytest.raises(DataError, match="no checklist for label"):
        DraftKTrainer(rewards=[CCSReward(critic)], config=tiny_config(tmp_path), train_data=rows)


def test_trainer_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no training data"):
        DraftKTrainer(rewards=[BrightnessReward()], config=tiny_config(tmp_path))
    with pytest.raises(ConfigError, match="reward_weights"):
        DraftKTrainer(
            rewards=[BrightnessReward()], config=tiny_config(tmp_path, reward_weights={"vdc": 1.0}),
            train_data=toy_rows(2),
        )  # fmt: skip
    with pytest.raises(ConfigError, match="need a training critic"):
        DraftKTrainer(config=tiny_config(tmp_path), train_data=toy_rows(2))
    with pytest.raises(DataError, match="fewer than one global batch"):
        DraftKTrainer(rewards=[BrightnessReward()], config=tiny_config(tmp_path, batch_size=4), train_data=toy_rows(2))
    with pytest.raises(ConfigError, match="eval_critic"):
        DraftKTrainer(
            rewards=[BrightnessReward()], config=tiny_config(tmp_path, eval_every=1, eval_data="x.jsonl"),
            train_data=toy_rows(2), eval_data=toy_rows(2),
        )  # fmt: skip


def test_evaluator_equal_to_training_critic_warns(tmp_path):
    """Loaded twice (as if by hub id and by local copy), the same weights are recognised by fingerprint."""
    from clinalign.critics import load_critic
    from clinalign.rewards import SFSReward, VDCReward
    from clinalign.testing import build_tiny_clip

    path = build_tiny_clip(tmp_path / "clip")
    trained, evaluator = load_critic(path, device="cpu"), load_critic(path, device="cpu")
    with pytest.warns(UserWarning, match="evaluator uses the training critic"):
        trainer = DraftKTrainer(
            rewards=[VDCReward(trained)], config=tiny_config(tmp_path), train_data=toy_rows(2),
            eval_data=toy_rows(2), eval_rewards=[SFSReward(evaluator)],
        )  # fmt: skip
    assert trainer.metadata()["training_critic_identities"] == [trained.identity()]


def test_bf16_mixed_precision_keeps_lora_fp32(tmp_path):
    cfg = tiny_config(tmp_path, mixed_precision="bf16", max_steps=1, repeats=1, num_inference_steps=2)
    trainer = DraftKTrainer(rewards=[BrightnessReward()], config=cfg, train_data=toy_rows(2))
    assert trainer.model.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert next(trainer.model.vae.parameters()).dtype == torch.bfloat16
    before = [p.detach().clone() for p in trainer.params]
    out = trainer.train()
    assert math.isfinite(out.history[0]["loss/total"])
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))


def test_fp16_loss_scale_overflow_is_not_divergence(tmp_path):
    """With a gradient scaler, an overflowing first step is skipped by the scaler (scale lowered), not
    counted as NaN. accelerate creates no scaler on CPU, so a CPU GradScaler is attached by hand."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=1e38, backoff_factor=1e-34, growth_interval=1000)
    cfg = tiny_config(tmp_path, max_steps=3, repeats=1, num_inference_steps=2, max_nan_steps=1)
    trainer = DraftKTrainer(rewards=[BrightnessReward()], config=cfg, train_data=toy_rows(2), accelerator=accelerator)
    before = [p.detach().clone() for p in trainer.params]
    trainer.config.max_steps = 1
    trainer.total_steps = 1
    out = trainer.train()
    assert out.history[0]["train/overflow_steps"] == 1.0 and out.history[0]["train/skipped_steps"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))  # update skipped
    assert accelerator.scaler.get_scale() < 1e38
    trainer.total_steps = 3
    out = trainer.train()
    assert out.history[-1]["train/overflow_steps"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
