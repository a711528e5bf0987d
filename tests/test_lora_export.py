"""LoRA provenance in the safetensors metadata, the kohya export, the model card and --push-to-hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_train_support import BrightnessReward, tiny_config, tiny_sd, tiny_sd_path, toy_rows  # noqa: F401

from clinalign.cli import main
from clinalign.diffusion import LORA_WEIGHT_NAME, LoraSpec, load_diffusion_model
from clinalign.diffusion.kohya import export_kohya, kohya_module_name, lora_delta_weights, split_diffusers_key
from clinalign.diffusion.lora import ADAPTER_NAME, read_lora_metadata
from clinalign.errors import DataError


@pytest.fixture
def saved_lora(tmp_path):
    """A tiny model with a perturbed rank-4, alpha-2 LoRA (alpha != rank, so scaling matters), saved."""
    model = load_diffusion_model(tiny_sd_path(), device="cpu")
    params = model.add_lora(LoraSpec(rank=4, alpha=2.0))
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.5)
    provenance = {
        "_class_name": "DraftKTrainer",
        "training_critic_identities": [{"name": "my/critic", "fingerprint": "abc123"}],
        "rewards": [{"name": "vdc", "weight": 1.0}],
        "steps": 7,
        "lora": {"targets": ["to_q", "to_k", "to_v", "to_out.0"], "layers": "cross_attention"},
    }
    directory = model.save_lora(tmp_path / "lora", provenance=provenance)
    return model, directory


def _peft_deltas(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """delta_W of every LoRA layer straight from the live peft modules (independent of any file)."""
    out = {}
    for name, module in unet.named_modules():
        if hasattr(module, "lora_A") and ADAPTER_NAME in getattr(module, "lora_A", {}):
            a = module.lora_A[ADAPTER_NAME].weight.float()
            b = module.lora_B[ADAPTER_NAME].weight.float()
            out[name.replace(".", "_")] = b @ a * module.scaling[ADAPTER_NAME]
    return out


def test_lora_file_carries_provenance(saved_lora):
    _, directory = saved_lora
    meta = read_lora_metadata(directory)
    assert meta["base_model"] == str(tiny_sd_path())
    assert meta["lora_rank"] == 4 and meta["lora_alpha"] == 2.0
    assert meta["training_critics"] == [{"name": "my/critic", "fingerprint": "abc123"}]
    assert meta["rewards"] == [{"name": "vdc", "weight": 1.0}]
    assert meta["steps"] == 7 and meta["trainer"] == "DraftKTrainer"
    assert meta["lora_targets"] == ["to_q", "to_k", "to_v", "to_out.0"]
    from clinalign import __version__

    assert meta["version"] == __version__
    with safe_open(str(directory / LORA_WEIGHT_NAME), framework="pt") as handle:
        raw = handle.metadata()
    assert all(isinstance(v, str) for v in raw.values())
    assert "lora_adapter_metadata" in raw  # diffusers' own entry is kept, so load_lora_weights rebuilds alpha
    assert not list(directory.glob(".lora-*"))  # the staging folder is gone


def test_kohya_key_mapping_and_alpha(saved_lora, tmp_path):
    _, directory = saved_lora
    out = export_kohya(directory, tmp_path / "kohya.safetensors")
    tensors = load_file(str(out))
    source = load_file(str(directory / LORA_WEIGHT_NAME))
    n_modules = sum(split_diffusers_key(k)[1] == "down" for k in source)
    assert n_modules > 0 and len(tensors) == 3 * n_modules
    assert kohya_module_name("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0") == (
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0"
    )
    for key, value in source.items():
        module, part = split_diffusers_key(key)
        assert key == f"unet.{module}.lora.{part}.weight"  # diffusers' own naming in the saved file
        assert torch.equal(tensors[f"{kohya_module_name(module)}.lora_{part}.weight"], value)
        assert float(tensors[f"{kohya_module_name(module)}.alpha"]) == 2.0
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert json.loads(meta["clinalign.training_critics"])[0]["fingerprint"] == "abc123"


def test_kohya_delta_weights_equal_the_live_adapter(saved_lora, tmp_path):
    """delta_W = up @ down * alpha / r reconstructed from both files equals the model's own LoRA update."""
    model, directory = saved_lora
    out = export_kohya(directory, tmp_path / "kohya.safetensors")
    live = _peft_deltas(model.unet)
    from_diffusers = lora_delta_weights(directory)
    from_kohya = lora_delta_weights(out)
    assert live.keys() == from_diffusers.keys() == from_kohya.keys()
    for name, delta in live.items():
        assert delta.abs().max() > 0
        torch.testing.assert_close(from_diffusers[name], delta, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(from_kohya[name], delta, atol=1e-6, rtol=1e-5)
    half = lora_delta_weights(export_kohya(directory, tmp_path / "half.safetensors", dtype=torch.float16))
    for name, delta in live.items():
        torch.testing.assert_close(half[name], delta, atol=2e-3, rtol=2e-2)


def test_kohya_file_loads_in_diffusers_like_the_original(saved_lora, tmp_path):
    """diffusers' kohya converter reads the export back to the same images as the diffusers-format folder."""
    from diffusers import StableDiffusionPipeline

    _, directory = saved_lora
    kohya = export_kohya(directory, tmp_path / "k" / "craft_kohya.safetensors")

    def images(load):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
        pipe.set_progress_bar_config(disable=True)
        load(pipe)
        return pipe(
            ["a chest x-ray"], num_inference_steps=3, height=16, width=16, guidance_scale=2.0, output_type="pt",
            generator=torch.Generator().manual_seed(3),
        ).images  # fmt: skip

    base = images(lambda pipe: None)
    ours = images(lambda pipe: pipe.load_lora_weights(directory))
    theirs = images(lambda pipe: pipe.load_lora_weights(kohya.parent, weight_name=kohya.name))
    assert (ours - base).abs().max() > 1e-3
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_kohya_export_errors(tmp_path, saved_lora):
    _, directory = saved_lora
    with pytest.raises(DataError, match=r"\.safetensors"):
        export_kohya(directory, tmp_path / "out.bin")
    with pytest.raises(Exception, match="not found"):
        export_kohya(tmp_path / "nowhere", tmp_path / "out.safetensors")


def test_trainer_writes_model_card_and_provenance(tmp_path):
    """A real (2-step) training run: the LoRA file names its critic and fingerprint; README.md has the eval."""
    from clinalign.critics import load_critic
    from clinalign.rewards import VDCReward
    from clinalign.testing import build_tiny_clip
    from clinalign.training import DraftKTrainer

    critic = load_critic(build_tiny_clip(tmp_path / "clip"), device="cpu")
    cfg = tiny_config(tmp_path, max_steps=2, eval_every=2, eval_max_prompts=2)
    trainer = DraftKTrainer(
        rewards=[VDCReward(critic)],
        config=cfg,
        train_data=toy_rows(4),
        eval_data=toy_rows(2, seed=1),
        eval_rewards=[BrightnessReward()],
    )
    out = trainer.train()
    meta = read_lora_metadata(out.lora_dir)
    assert meta["training_critics"] == [{"name": critic.name, "fingerprint": critic.fingerprint}]
    assert meta["base_model"] == str(tiny_sd_path())
    assert meta["steps"] == 2 and [r["name"] for r in meta["rewards"]] == ["vdc"]
    card = (out.lora_dir / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name: diffusers" in card
    assert "pipe.load_lora_weights" in card and critic.name in card and critic.fingerprint in card
    assert "| vdc | 1.0 |" in card
    last = out.eval_history[-1]
    assert f"| 2 | {last['eval/brightness']:.4f} |" in card  # the held-out table, step 2
    assert "learning_rate: 0.01" in card  # the config section
    assert "base_model:" not in card.split("---")[1]  # a local path is not a Hub base_model


def test_export_cli_and_push_to_hub(saved_lora, tmp_path, monkeypatch, capsys):
    """--push-to-hub uploads the weights, meta, card and the kohya file; only HfApi's network calls are faked."""
    from huggingface_hub import HfApi

    _, directory = saved_lora
    (directory / "README.md").write_text("card\n")
    (directory / "stray.txt").write_text("not published\n")
    secret = "hf_DO_NOT_PRINT_0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    calls = {}

    def fake_create_repo(self, **kwargs):
        calls["create_repo"] = kwargs

    def fake_upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        calls["upload_folder"] = kwargs
        calls["uploaded"] = {p.name: p.read_bytes() for p in folder.iterdir()}
        return "https://huggingface.co/me/lora/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    kohya = tmp_path / "export" / "craft_kohya.safetensors"
    main(["export-lora", str(directory), "--format", "kohya", "--out", str(kohya), "--push-to-hub", "me/lora"])
    assert calls["create_repo"] == {"repo_id": "me/lora", "repo_type": "model", "private": False, "exist_ok": True}
    assert calls["upload_folder"]["repo_id"] == "me/lora" and calls["upload_folder"]["repo_type"] == "model"
    assert set(calls["uploaded"]) == {LORA_WEIGHT_NAME, "README.md", "craft_kohya.safetensors"}
    assert calls["uploaded"][LORA_WEIGHT_NAME] == (directory / LORA_WEIGHT_NAME).read_bytes()
    assert calls["uploaded"]["craft_kohya.safetensors"] == kohya.read_bytes()
    printed = capsys.readouterr()
    assert "me/lora" in printed.out and secret not in printed.out + printed.err


def test_push_to_hub_rejects_bad_repo_id(saved_lora):
    from clinalign.diffusion.hub import push_lora_to_hub
    from clinalign.errors import ConfigError

    _, directory = saved_lora
    with pytest.raises(ConfigError, match="owner/name"):
        push_lora_to_hub(directory, "no-owner")
