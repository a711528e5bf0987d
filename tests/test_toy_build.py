"""``python -m clinalign.toy.build_assets --reduced`` rebuilds every artifact end to end (slow)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_build_assets_reduced(tmp_path, capsys):
    from diffusers import StableDiffusionPipeline
    from transformers import AutoModel

    from clinalign.toy.build_assets import main

    assert main(["--reduced", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "build_assets finished in" in printed
    for name in ("base", "training_critic", "evaluator_critic"):
        assert (tmp_path / name).is_dir()
    info = json.loads((tmp_path / "build_info.json").read_text())
    assert 0.0 <= info["training_critic"]["probe_accuracy_test"] <= 1.0
    assert "label_prompts_evaluator_accuracy" in info["base_eval"]
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "base")
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    AutoModel.from_pretrained(tmp_path / "evaluator_critic")

    # `--stages unet` retrains text encoder + UNet on the existing VAE, deterministically
    def weights(part):
        return (tmp_path / "base" / part / "diffusion_pytorch_model.safetensors").read_bytes()

    vae, unet = weights("vae"), weights("unet")
    assert main(["--reduced", "--stages", "unet", "--out", str(tmp_path)]) == 0
    assert weights("vae") == vae
    assert weights("unet") == unet


def test_build_assets_rejects_unknown_stage(capsys):
    from clinalign.toy.build_assets import main

    assert main(["--stages", "decoder"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_unet_stage_needs_an_earlier_base(tmp_path):
    from clinalign.toy.build_assets import BuildConfig, build_assets

    with pytest.raises(FileNotFoundError, match="Run the 'base' stage"):
        build_assets(tmp_path, config=BuildConfig.reduced(), stages=("unet",))
