"""Textual inversion, Diffusion-DPO and TI+LoRA starts on the shared trainer core, on the tiny SD pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train_support import (  # noqa: F401 - tiny_sd is a fixture
    BrightnessReward,
    tiny_config,
    tiny_sd,
    tiny_sd_path,
    toy_rows,
)

from clinalign.errors import ConfigError, DataError

TOKENS = {"cardiomegaly": "<cardiomegaly>", "effusion": "<effusion>"}


def _common(tmp_path, **overrides):
    values = {
        "model": str(tiny_sd_path()),
        "resolution": 16,
        "num_inference_steps": 3,
        "guidance_scale": 2.0,
        "batch_size": 2,
        "max_steps": 2,
        "output_dir": str(tmp_path / "run"),
        "log_with": "none",
        "checkpoint_every": 0,
        "progress_bar": False,
    }
    values.update(overrides)
    return values


def ti_config(tmp_path, **overrides):
    from clinalign import TIConfig

    values = _common(tmp_path, placeholder_tokens=TOKENS, initializer_token="a", learning_rate=5e-2)
    values.update(overrides)
    return TIConfig(**values)


def dpo_config(tmp_path, **overrides):
    from clinalign import DPOConfig

    values = _common(tmp_path, lora_rank=4, learning_rate=1e-3)
    values.update(overrides)
    return DPOConfig(**values)


def pair_rows(n: int = 4):
    rows = toy_rows(2 * n, seed=3)
    return [
        {
            "id": f"p{i}",
            "prompt": rows[2 * i]["prompt"],
            "chosen": rows[2 * i]["image"],
            "rejected": rows[2 * i + 1]["image"],
        }
        for i in range(n)
    ]


# ---------------------------------------------------------------------- textual inversion


def test_ti_trains_only_the_new_token_rows(tmp_path):
    from diffusers import StableDiffusionPipeline

    from clinalign import TextualInversionTrainer

    trainer = TextualInversionTrainer(config=ti_config(tmp_path, max_steps=3), train_data=toy_rows(4))
    before = trainer.embeddings()
    out = trainer.train()
    after = trainer.embeddings()
    fresh = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    base = fresh.text_encoder.get_input_embeddings().weight
    table = trainer.model.text_encoder.get_input_embeddings().weight
    vocab = base.shape[0]
    assert table.shape[0] == vocab + 2
    assert torch.equal(table[:vocab], base)  # every existing row bit-identical
    for token in TOKENS.values():
        assert not torch.equal(before[token], after[token])  # the new rows learnt
    # the rest of the model: bit-identical to a fresh load
    for part in ("unet", "vae"):
        ours, theirs = getattr(trainer.model, part).state_dict(), getattr(fresh, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    text_ours = trainer.model.text_encoder.state_dict()
    text_theirs = {k: v for k, v in fresh.text_encoder.state_dict().items() if "token_embedding" not in k}
    assert all(torch.equal(text_ours[k], v) for k, v in text_theirs.items())
    assert out.lora_dir is None and out.artifact_dir == tmp_path / "run" / "textual_inversion"
    meta = json.loads((out.artifact_dir / "clinalign_meta.json").read_text())
    assert meta["method"] == "ti" and meta["textual_inversion"]["placeholder_tokens"] == TOKENS
    assert math.isfinite(out.history[-1]["loss/diffusion"])


def test_ti_files_load_in_plain_diffusers_and_reproduce_prompt_embeddings(tmp_path):
    from diffusers import StableDiffusionPipeline

    from clinalign import TextualInversionTrainer
    from clinalign.diffusion.adapters import textual_inversion_files

    trainer = TextualInversionTrainer(config=ti_config(tmp_path, num_vectors=2), train_data=toy_rows(4))
    out = trainer.train()
    prompts = ["<cardiomegaly>", "a scan with <effusion> and <cardiomegaly>", "no token here"]
    ours = trainer.model.encode_prompts(prompts)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    files = textual_inversion_files(out.artifact_dir)
    assert len(files) == 2
    pipe.load_textual_inversion([str(f) for f in files])
    theirs, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    assert torch.equal(ours, theirs)
    # and through clinalign's own loader (what `generate --textual-inversion` uses)
    from clinalign.diffusion import load_diffusion_model

    model = load_diffusion_model(tiny_sd_path(), device="cpu")
    assert sorted(model.load_textual_inversion(out.artifact_dir)) == sorted(TOKENS.values())
    assert torch.equal(model.encode_prompts(prompts), ours)


def test_single_token_folder_loads_with_load_textual_inversion_dir(tmp_path):
    """With one class the folder itself is what `pipe.load_textual_inversion(dir)` reads."""
    from diffusers import StableDiffusionPipeline

    from clinalign.diffusion.adapters import save_textual_inversion

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    vectors = torch.randn(1, dim, generator=torch.Generator().manual_seed(0))
    save_textual_inversion({"<tok>": vectors}, tmp_path / "ti")
    pipe.load_textual_inversion(str(tmp_path / "ti"))
    token_id = pipe.tokenizer.convert_tokens_to_ids("<tok>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[token_id], vectors[0])


def test_ti_config_and_row_errors(tmp_path):
    from clinalign import TextualInversionTrainer

    with pytest.raises(ConfigError, match="placeholder_tokens"):
        ti_config(tmp_path, placeholder_tokens={})
    with pytest.raises(ConfigError, match="no '\\{token\\}'"):
        ti_config(tmp_path, ti_prompt_template="a scan")
    with pytest.raises(ConfigError, match="initializer_token"):
        TextualInversionTrainer(config=ti_config(tmp_path, initializer_token="two words"), train_data=toy_rows(2))
    with pytest.raises(DataError, match="no textual-inversion token"):
        TextualInversionTrainer(
            config=ti_config(tmp_path, placeholder_tokens={"cardiomegaly": "<c>"}), train_data=toy_rows(2)
        )


# ---------------------------------------------------------------------- Diffusion-DPO


def test_dpo_loss_equals_direct_computation_and_is_log2_at_zero_init(tmp_path):
    from clinalign import DiffusionDPOTrainer
    from clinalign.training.core import TrainBatch

    trainer = DiffusionDPOTrainer(config=dpo_config(tmp_path), train_data=pair_rows(4))
    batch = TrainBatch(rows=trainer.train_examples[:2], micro_step=0)
    unet = trainer.model.unet

    def direct(beta: float) -> float:
        inputs = trainer.dpo_inputs(batch)
        n = inputs.noisy.shape[0] // 2
        # shared noise and timestep for chosen and rejected
        assert torch.equal(inputs.timesteps[:n], inputs.timesteps[n:])
        with torch.no_grad():
            policy = unet(inputs.noisy, inputs.timesteps, encoder_hidden_states=inputs.embeds).sample
            unet.disable_adapters()
            reference = unet(inputs.noisy, inputs.timesteps, encoder_hidden_states=inputs.embeds).sample
            unet.enable_adapters()
        err = ((policy - inputs.target) ** 2).mean(dim=(1, 2, 3)).double()
        ref = ((reference - inputs.target) ** 2).mean(dim=(1, 2, 3)).double()
        diff = (err[:n] - ref[:n]) - (err[n:] - ref[n:])
        return float(torch.nn.functional.softplus(0.5 * beta * diff).mean())  # -log σ(-β/2·diff)

    # zero-initialised LoRA B: the policy is the reference and the loss is log 2
    assert trainer.compute_loss(batch).metrics["loss/dpo"] == pytest.approx(math.log(2), abs=1e-7)
    with torch.no_grad():  # move the LoRA off its zero init so the four predictions differ
        for p in trainer.params:
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    trainer.config.beta = 50.0
    out = trainer.compute_loss(batch)
    expected = direct(50.0)
    assert out.metrics["loss/dpo"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - math.log(2)) > 1e-3
    assert out.loss.requires_grad and all(p.requires_grad for p in trainer.params)


def test_dpo_trains_the_lora_and_exports_it(tmp_path):
    from diffusers import StableDiffusionPipeline

    from clinalign import DiffusionDPOTrainer

    trainer = DiffusionDPOTrainer(config=dpo_config(tmp_path, beta=100.0), train_data=pair_rows(4))
    before = [p.detach().clone() for p in trainer.params]
    out = trainer.train()
    assert out.history[0]["loss/dpo"] == pytest.approx(math.log(2), abs=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    pipe.load_lora_weights(out.lora_dir)
    meta = json.loads((out.lora_dir / "clinalign_meta.json").read_text())
    assert meta["method"] == "dpo" and meta["config"]["beta"] == 100.0


def test_dpo_pairs_errors(tmp_path):
    from clinalign.training.dpo import load_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "x", "chosen": "a.png"}) + "\n")
    with pytest.raises(DataError, match=r"row 1: chosen image 'a\.png' not found"):
        load_pairs(path)
    path.write_text(json.dumps({"prompt": "x", "chosen": "a.png", "rejected": ""}) + "\n")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="row 1: missing 'rejected'"):
        load_pairs(path)


# ---------------------------------------------------------------------- TI+LoRA and CRAFT from it


def test_craft_from_ti_lora_start_reproduces_the_start_model(tmp_path):
    """TI -> TI+LoRA -> CRAFT(init_lora, textual_inversion): step-0 samples equal the TI+LoRA model's in
    plain diffusers (tokens and LoRA loaded the way users load them)."""
    from diffusers import StableDiffusionPipeline

    from clinalign import DraftKTrainer, TextualInversionTrainer
    from clinalign.diffusion.adapters import textual_inversion_files

    ti = TextualInversionTrainer(config=ti_config(tmp_path / "ti"), train_data=toy_rows(4)).train()
    ti_lora_cfg = tiny_config(
        tmp_path / "til", method="ti_lora", textual_inversion=str(ti.artifact_dir), lora_rank=4, max_steps=2
    )
    assert ti_lora_cfg.lambda_reward == 0.0
    ti_lora = DraftKTrainer(config=ti_lora_cfg, train_data=toy_rows(4)).train()
    assert (ti_lora.lora_dir / "textual_inversion").is_dir()
    meta = json.loads((ti_lora.lora_dir / "clinalign_meta.json").read_text())
    assert meta["method"] == "ti_lora" and meta["textual_inversion"]["placeholder_tokens"] == TOKENS

    craft_cfg = tiny_config(
        tmp_path / "craft", textual_inversion=str(ti.artifact_dir), init_lora=str(ti_lora.lora_dir), lora_rank=4
    )
    craft = DraftKTrainer(rewards=[BrightnessReward()], config=craft_cfg, train_data=toy_rows(4))
    rows = craft.sample_rows()
    prompts = [craft.prompt_for(r) for r in rows]
    assert prompts[0].startswith(TOKENS[rows[0].label])
    ours = craft._generate(rows, seed_offset=5)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion([str(f) for f in textual_inversion_files(ti.artifact_dir)])
    pipe.load_lora_weights(ti_lora.lora_dir)
    theirs = pipe(
        prompts, height=16, width=16, num_inference_steps=craft_cfg.num_inference_steps,
        guidance_scale=craft_cfg.guidance_scale, eta=craft_cfg.eta, output_type="pt",
        generator=[torch.Generator().manual_seed(craft_cfg.seed + 5 + i) for i in range(len(rows))],
    ).images  # fmt: skip
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    # the run continues training that adapter
    before = [p.detach().clone() for p in craft.params]
    out = craft.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, craft.params, strict=True))
    assert json.loads((out.lora_dir / "clinalign_meta.json").read_text())["init"]["init_lora"] == str(ti_lora.lora_dir)


def test_init_lora_with_another_rank_is_refused(tmp_path):
    from clinalign import DraftKTrainer

    first = DraftKTrainer(
        rewards=[BrightnessReward()], config=tiny_config(tmp_path / "a", lora_rank=4, max_steps=1, repeats=1),
        train_data=toy_rows(2),
    ).train()  # fmt: skip
    with pytest.raises(ConfigError, match="lora_rank"):
        DraftKTrainer(
            rewards=[BrightnessReward()],
            config=tiny_config(tmp_path / "b", lora_rank=8, init_lora=str(first.lora_dir)),
            train_data=toy_rows(2),
        )


def test_lora_method_config_rules(tmp_path):
    with pytest.raises(ConfigError, match="trains without rewards"):
        tiny_config(tmp_path, method="lora", lambda_reward=0.5)
    with pytest.raises(ConfigError, match="needs `textual_inversion`"):
        tiny_config(tmp_path, method="ti_lora")


@pytest.mark.parametrize("method", ["ti", "dpo"])
def test_resume_equals_uninterrupted_for_ti_and_dpo(tmp_path, method):
    from clinalign import DiffusionDPOTrainer, TextualInversionTrainer

    trainer_cls, make, rows = (
        (TextualInversionTrainer, ti_config, toy_rows(4))
        if method == "ti"
        else (DiffusionDPOTrainer, dpo_config, pair_rows(4))
    )
    common = {"checkpoint_every": 2, "batch_size": 1, "gradient_accumulation_steps": 2}
    full = trainer_cls(config=make(tmp_path / "a", max_steps=4, **common), train_data=rows)
    full_out = full.train()
    part = trainer_cls(config=make(tmp_path / "b", max_steps=2, **common), train_data=rows).train()
    resumed = trainer_cls(config=make(tmp_path / "b", max_steps=4, resume_from="latest", **common), train_data=rows)
    resumed_out = resumed.train()
    assert resumed_out.global_step == 4
    assert [h["loss/total"] for h in part.history + resumed_out.history] == [h["loss/total"] for h in full_out.history]
    a, b = full.model.adapter_state_dict(), resumed.model.adapter_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="learning_rate"):
        trainer_cls(
            config=make(tmp_path / "b", max_steps=6, resume_from="latest", learning_rate=0.5, **common),
            train_data=rows,
        ).train()


def test_pairs_cli_ranks_samples_with_a_reward_judge(tmp_path, tiny_clip_dir, capsys):
    from clinalign.cli import main
    from clinalign.critics import load_critic
    from clinalign.data import load_image
    from clinalign.data.images import pil_to_tensor
    from clinalign.rewards import RewardBatch, VDCReward
    from clinalign.training.dpo import load_pairs

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"], "label": r["label"]}) + "\n" for r in toy_rows(2)))
    argv = ["pairs", "--model", str(tiny_sd_path()), "--prompts", str(prompts), "--judge", "reward:vdc",
            "--critic", str(tiny_clip_dir), "--n-per-prompt", "3", "--resolution", "16", "--steps", "2",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "pairs")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)  # main returns normally on success
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    path = tmp_path / "pairs" / "pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2
    reward = VDCReward(load_critic(tiny_clip_dir, device="cpu"))
    for row in rows:
        images = torch.stack([pil_to_tensor(load_image(path.parent / row[k])) for k in ("chosen", "rejected")])
        batch = RewardBatch(prompts=[row["prompt"]] * 2, checklists=["", ""], labels=torch.zeros(2, dtype=torch.long))
        chosen, rejected = (float(v) for v in reward(images, batch))
        assert chosen == pytest.approx(row["chosen_score"], abs=1e-5) and chosen > rejected
    assert [p.prompt for p in load_pairs(path)] == [r["prompt"] for r in rows]  # DPO reads it as is
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:6], "mllm", *argv[7:]])
        raise SystemExit(0)
    assert exit_info.value.code == 2
