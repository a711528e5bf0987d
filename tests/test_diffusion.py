"""clinalign.diffusion: loading, LoRA injection/saving, the DRaFT-K sampler, generation."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_support import tiny_sd, tiny_sd_path  # noqa: F401 - fixture

from clinalign.diffusion import LoraSpec, denoising_loss, load_diffusion_model, sample
from clinalign.errors import ConfigError, ModelLoadError


@pytest.fixture
def model(tiny_sd):  # noqa: F811
    return load_diffusion_model(tiny_sd, device="cpu")


def test_load_freezes_everything(model):
    for module in (model.unet, model.vae, model.text_encoder):
        assert not any(p.requires_grad for p in module.parameters())
    assert model.vae_scale_factor == 2
    assert type(model.scheduler).__name__ == "DDIMScheduler"


@pytest.mark.parametrize(
    ("name", "error"),
    [("/no/such/dir", ModelLoadError), ("", ConfigError)],
)
def test_load_errors(name, error):
    with pytest.raises(error):
        load_diffusion_model(name, device="cpu")


def test_load_rejects_directory_without_model_index(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        load_diffusion_model(tmp_path, device="cpu")


def test_encode_prompts_matches_pipeline(model):
    ours = model.encode_prompts(["a chest x-ray", ""])
    theirs, _ = model.pipeline.encode_prompt(["a chest x-ray", ""], "cpu", 1, False)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(
    ("layers", "targets", "expected"),
    [
        ("cross_attention", ("to_q", "to_k", "to_v", "to_out.0"), {"attn2"}),
        ("all_attention", ("to_q", "to_v"), {"attn1", "attn2"}),
    ],
)
def test_lora_targets(model, layers, targets, expected):
    params = model.add_lora(LoraSpec(rank=2, alpha=4, targets=targets, layers=layers))
    names = [n for n, p in model.unet.named_parameters() if p.requires_grad]
    assert len(names) == len(params) > 0
    assert all(".lora_" in n for n in names)
    blocks = {part for n in names for part in n.split(".") if part.startswith("attn")}
    assert blocks == expected
    projections = {n.split(".lora_")[0].split(".attn")[1].split(".", 1)[1] for n in names}
    assert projections == set(targets)


def test_lora_params_stay_fp32_under_bf16(tiny_sd):  # noqa: F811
    model = load_diffusion_model(tiny_sd, device="cpu", dtype="bf16")
    params = model.add_lora(LoraSpec(rank=2))
    assert all(p.dtype == torch.float32 for p in params)
    frozen = [p for n, p in model.unet.named_parameters() if "lora_" not in n]
    assert all(p.dtype == torch.bfloat16 for p in frozen)


def test_k_out_of_range(model):
    emb = model.encode_prompts(["x"])
    with pytest.raises(ConfigError, match="between 0 and num_inference_steps"):
        sample(model, emb, height=16, width=16, num_inference_steps=3, k=4)


def test_sampler_gradient_truncation(model):
    """Exactly K UNet calls run with grad; the rest under no_grad; gradients reach only LoRA."""
    params = model.add_lora(LoraSpec(rank=2))
    calls = []
    model.unet.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    emb = model.encode_prompts(["a", "b"])
    out = sample(
        model, emb, height=16, width=16, num_inference_steps=5, k=2, guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0), gradient_checkpointing=False,
    )  # fmt: skip
    assert calls == [False, False, False, True, True]
    assert (out.grad_unet_calls, out.no_grad_unet_calls) == (2, 3)
    assert out.images.shape == (2, 3, 16, 16)
    assert float(out.images.detach().min()) >= 0 and float(out.images.detach().max()) <= 1
    out.images.mean().backward()
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for n, p in model.unet.named_parameters() if "lora_" not in n)


def test_sampler_no_graph_under_no_grad(model):
    model.add_lora(LoraSpec(rank=2))
    with torch.no_grad():
        out = sample(model, model.encode_prompts(["a"]), height=16, width=16, num_inference_steps=3, k=1)
    assert not out.images.requires_grad
    assert out.grad_unet_calls == 0


def test_checkpointing_gives_same_gradients(model):
    params = model.add_lora(LoraSpec(rank=2))
    emb = model.encode_prompts(["a"])
    grads = []
    for ckpt in (False, True):
        for p in params:
            p.grad = None
        out = sample(
            model, emb, height=16, width=16, num_inference_steps=3, k=2,
            generator=torch.Generator().manual_seed(3), gradient_checkpointing=ckpt,
        )  # fmt: skip
        out.images.mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    torch.testing.assert_close(grads[0], grads[1])


def _saved_bytes(model, steps, k):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    emb = model.encode_prompts(["a"])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sample(
            model, emb, height=16, width=16, num_inference_steps=steps, k=k,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    out.images.mean().backward()
    return total


def test_saved_memory_independent_of_steps(model):
    model.add_lora(LoraSpec(rank=2))
    short, long = _saved_bytes(model, 3, 1), _saved_bytes(model, 9, 1)
    assert abs(long - short) / short < 0.05
    assert _saved_bytes(model, 9, 9) > 3 * short  # full backprop grows with T


def test_denoising_loss_grads_lora_only(model):
    params = model.add_lora(LoraSpec(rank=2))
    images = torch.rand(2, 3, 16, 16)
    latents = model.encode_images(images, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 8, 8)
    loss = denoising_loss(model, latents, model.encode_prompts(["a", "b"]), generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in params)


def test_lora_roundtrip_through_plain_pipeline(model, tmp_path):
    """save_lora -> StableDiffusionPipeline.load_lora_weights reproduces our sampler's images."""
    from diffusers import StableDiffusionPipeline

    params = model.add_lora(LoraSpec(rank=4, alpha=2.0))  # alpha != rank: the scaling must survive
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.5)
    prompts = ["a chest x-ray", "pleural effusion"]
    seeds = [5, 6]
    with torch.no_grad():
        ours = sample(
            model, model.encode_prompts(prompts), height=16, width=16, num_inference_steps=4, k=0, eta=1.0,
            guidance_scale=3.0, generator=[torch.Generator().manual_seed(s) for s in seeds],
        ).images  # fmt: skip
    model.save_lora(tmp_path / "lora")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path())
    pipe.set_progress_bar_config(disable=True)
    base = pipe(
        prompts, num_inference_steps=4, height=16, width=16, eta=1.0, guidance_scale=3.0, output_type="pt",
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    ).images  # fmt: skip
    assert (base - ours).abs().max() > 1e-3  # the LoRA changes the output
    pipe.load_lora_weights(tmp_path / "lora")
    theirs = pipe(
        prompts, num_inference_steps=4, height=16, width=16, eta=1.0, guidance_scale=3.0, output_type="pt",
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    ).images  # fmt: skip
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_load_lora_into_model(model, tmp_path, tiny_sd):  # noqa: F811
    params = model.add_lora(LoraSpec(rank=2))
    with torch.no_grad():
        for p in params:
            p.add_(0.3)
    model.save_lora(tmp_path / "lora")
    emb = model.encode_prompts(["a"])
    with torch.no_grad():
        ref = sample(
            model, emb, height=16, width=16, num_inference_steps=2, k=0, generator=torch.Generator().manual_seed(1)
        )
    other = load_diffusion_model(tiny_sd, device="cpu")
    other.load_lora(tmp_path / "lora")
    with torch.no_grad():
        got = sample(
            other, other.encode_prompts(["a"]), height=16, width=16, num_inference_steps=2, k=0,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
    torch.testing.assert_close(got.images, ref.images, atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelLoadError):
        other.load_lora(tmp_path / "missing")


def test_generate_to_dir_is_deterministic_and_resumes(model, tmp_path):
    from clinalign.diffusion import generate_to_dir, read_prompts
    from clinalign.utils.io import read_jsonl

    prompts_file = tmp_path / "p.jsonl"
    prompts_file.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "a1", "t_ep": "a chest x-ray", "label": "cardiomegaly", "t_c": "big heart"},
                {"prompt": "pleural effusion", "label": "effusion"},
            ]
        )
    )
    rows = read_prompts(prompts_file)
    kwargs = {"n_per_prompt": 2, "seed": 3, "resolution": 16, "num_inference_steps": 2, "progress_bar": False}
    m1 = generate_to_dir(model, rows, tmp_path / "g1", batch_size=3, **kwargs)
    m2 = generate_to_dir(model, rows, tmp_path / "g2", batch_size=1, **kwargs)
    rows1 = sorted(read_jsonl(m1), key=lambda r: r["file"])
    rows2 = sorted(read_jsonl(m2), key=lambda r: r["file"])
    assert len(rows1) == 4
    assert rows1[0]["ref_id"] == "a1" and rows1[0]["checklist"] == "big heart" and rows1[0]["label"] == "cardiomegaly"
    assert "ref_id" not in rows1[2]
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert r1 == r2
        assert (m1.parent / r1["file"]).read_bytes() == (m2.parent / r2["file"]).read_bytes()
    # resume: a rerun writes nothing new
    generate_to_dir(model, rows, tmp_path / "g1", batch_size=3, **kwargs)
    assert len(read_jsonl(m1)) == 4
    # other sampling settings would mix two sets in one folder: refused, nothing written
    before = sorted(p.name for p in (tmp_path / "g1" / "images").iterdir())
    with pytest.raises(ConfigError, match=r"guidance_scale: 7\.5 -> 3\.0.*new --out, or pass --overwrite"):
        generate_to_dir(model, rows, tmp_path / "g1", **{**kwargs, "guidance_scale": 3.0})
    assert sorted(p.name for p in (tmp_path / "g1" / "images").iterdir()) == before
    # more samples per prompt with the same settings add images (each has its own seed)
    generate_to_dir(model, rows, tmp_path / "g1", batch_size=3, **{**kwargs, "n_per_prompt": 3})
    assert len(read_jsonl(m1)) == 6
