"""The shipped toy models load through the public loaders and do what the quickstart relies on."""

from __future__ import annotations

import json

import pytest
import torch

from clinalign.toy import CLASSES, ToyDerm, checklists, paths
from clinalign.toy.build_assets import critic_image_embeddings, critic_text_embeddings, probe_accuracy

ASSETS = paths.assets_dir()
pytestmark = pytest.mark.skipif(not (ASSETS / "base").is_dir(), reason="toy assets not built in this checkout")


@pytest.fixture(scope="module")
def toy_data() -> ToyDerm:
    # a different seed from the one the assets were built with: fresh patients, fresh images
    return ToyDerm.generate(n_train=600, n_test=300, seed=12345)


def test_assets_small_and_documented():
    total = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"shipped toy assets are {total / 2**20:.1f} MB, budget is 30 MB"
    assert not list(ASSETS.rglob("*.bin")) and not list(ASSETS.rglob("*.pt")), "weights must be safetensors"
    info = json.loads((ASSETS / "build_info.json").read_text())
    for key in ("training_critic", "evaluator_critic", "timings_s", "config"):
        assert key in info


def test_base_pipeline_loads_and_generates():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(paths.base_model_dir())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None
    generator = torch.Generator().manual_seed(0)
    out = pipe(
        ["dermatology photo of melanoma", "dermatology photo, light skin. a small round brown macule in the centre."],
        num_inference_steps=4,
        guidance_scale=3.0,
        generator=generator,
        output_type="pt",
    )
    assert out.images.shape == (2, 3, 32, 32)
    assert torch.isfinite(out.images).all()
    assert float(out.images.std()) > 0.01  # not a constant image


@pytest.mark.parametrize("which", ["training_critic", "evaluator_critic"])
def test_critic_probe_separates_classes_on_real_test_images(which, toy_data):
    critic_dir = getattr(paths, f"{which}_dir")()
    train_e = critic_image_embeddings(critic_dir, toy_data.images("train"))
    test_e = critic_image_embeddings(critic_dir, toy_data.images("test"))
    accuracy, _ = probe_accuracy(train_e, toy_data.labels("train"), test_e, toy_data.labels("test"))
    print(f"{which}: linear-probe accuracy on {len(toy_data.test)} real test images = {accuracy:.3f} (chance 0.25)")
    assert accuracy > 0.85


@pytest.mark.parametrize("which", ["training_critic", "evaluator_critic"])
def test_critic_text_side_matches_images(which, toy_data):
    # checklists and enriched prompts must sit near their images, so CCS and VDC carry signal
    critic_dir = getattr(paths, f"{which}_dir")()
    test_e = critic_image_embeddings(critic_dir, toy_data.images("test"))
    lists = checklists()
    checklist_e = critic_text_embeddings(critic_dir, [lists[c] for c in CLASSES])
    zero_shot = float(((test_e @ checklist_e.T).argmax(1) == toy_data.labels("test")).float().mean())
    prompt_e = critic_text_embeddings(critic_dir, toy_data.prompts("test"))
    own = (test_e * prompt_e).sum(1).mean()
    other = (test_e * prompt_e.roll(1, dims=0)).sum(1).mean()
    print(f"{which}: checklist zero-shot accuracy {zero_shot:.3f}; VDC own {own:.3f} vs other {other:.3f}")
    assert zero_shot > 0.6
    assert own > other + 0.05


def test_critics_are_different_models():
    from transformers import AutoConfig

    a = AutoConfig.from_pretrained(paths.training_critic_dir())
    b = AutoConfig.from_pretrained(paths.evaluator_critic_dir())
    assert a.vision_config.patch_size != b.vision_config.patch_size
    assert a.projection_dim != b.projection_dim


def test_critics_load_through_load_critic_when_available():
    critics = pytest.importorskip("clinalign.critics")
    load_critic = getattr(critics, "load_critic", None)
    if load_critic is None:
        pytest.skip("clinalign.critics.load_critic not merged yet")
    critic = load_critic(str(paths.training_critic_dir()))
    images = ToyDerm.generate(n_train=2, n_test=0, seed=1).images("train").requires_grad_(True)
    emb = critic.encode_images(images)
    assert emb.shape[0] == 2
    emb.sum().backward()
    assert images.grad is not None
    txt = critic.encode_texts([checklists()["melanoma"]])
    assert txt.shape == (1, emb.shape[1])


def test_texts_fit_the_critics_and_base_token_limits():
    from transformers import AutoTokenizer

    texts = [*ToyDerm.generate(n_train=40, n_test=0, seed=4).prompts("train"), *checklists().values()]
    for directory in (paths.training_critic_dir(), paths.evaluator_critic_dir(), paths.base_model_dir() / "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(directory)
        longest = max(len(ids) for ids in tokenizer(texts).input_ids)
        assert longest <= tokenizer.model_max_length, f"{directory}: {longest} tokens"
        assert tokenizer.eos_token_id != 2  # CLIP pools at EOS only when eos_token_id != 2


def test_base_draws_the_skin_tone_its_prompt_names():
    # the base was trained with tone captions and offset noise so that the tone (the image's mean colour) is a
    # property of the prompt; without offset noise it came from the initial noise and matched the prompt at
    # chance (1/6). Same seeds for both tones: only the prompt differs.
    from diffusers import StableDiffusionPipeline

    from clinalign.toy import SKIN_TONES, skin_tone_of

    pipe = StableDiffusionPipeline.from_pretrained(paths.base_model_dir())
    pipe.set_progress_bar_config(disable=True)
    drawn: dict[str, list[str]] = {}
    for tone in ("very light", "dark"):
        prompts = [f"dermatology photo of {label}, {tone} skin" for label in CLASSES for _ in range(3)]
        images = pipe(
            prompts,
            num_inference_steps=20,
            guidance_scale=3.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
        drawn[tone] = [skin_tone_of(image) for image in images]
    light = [SKIN_TONES.index(t) for t in drawn["very light"]]
    dark = [SKIN_TONES.index(t) for t in drawn["dark"]]
    # every image of a dark-skin prompt is darker than the image of the very-light prompt with the same noise
    assert all(d > v for d, v in zip(dark, light, strict=True)), drawn
    # and by a wide margin: on average at least two of the palette's five steps between very light and dark
    assert sum(dark) / len(dark) - sum(light) / len(light) >= 2.0, drawn
