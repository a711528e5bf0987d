"""Critics: loading through load_critic, agreement with the models' own processors, gradients, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from clinalign.critics import TextTruncationWarning, load_critic
from clinalign.critics.open_clip_backend import parse_open_clip_name
from clinalign.errors import ClinAlignError, ConfigError, DataError, ModelLoadError


def _pil_batch(n: int, size: int, seed: int = 0) -> tuple[list[Image.Image], torch.Tensor]:
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    tensor = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    return [Image.fromarray(a) for a in arrays], tensor


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_transformers_critic_matches_model_with_its_own_processor(which, tiny_clip_dir, tiny_siglip_dir):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    directory = tiny_clip_dir if which == "clip" else tiny_siglip_dir
    critic = load_critic(directory)
    model = AutoModel.from_pretrained(directory).eval()
    processor = AutoImageProcessor.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # inputs already at the resize size: the processor's resize is then the identity, so both paths agree exactly
    size = critic.preprocess_config.resize_size
    pils, tensor = _pil_batch(3, size)
    with torch.no_grad():
        pixel_values = processor(images=pils, return_tensors="pt")["pixel_values"]
        expected = model.get_image_features(pixel_values=pixel_values)
        expected = getattr(expected, "pooler_output", expected).numpy()
    ours = critic.encode_images(tensor).detach().numpy()
    np.testing.assert_allclose(ours, _normalize(expected), atol=2e-5)

    texts = ["a chest x-ray with cardiomegaly", "round brown nevus with a smooth border"]
    padding = "max_length" if which == "siglip" else True
    tokens = tokenizer(texts, padding=padding, max_length=critic.max_text_tokens, truncation=True, return_tensors="pt")
    kwargs = {"input_ids": tokens["input_ids"]}
    if which == "clip":
        kwargs["attention_mask"] = tokens["attention_mask"]
    with torch.no_grad():
        text_expected = model.get_text_features(**kwargs)
        text_expected = getattr(text_expected, "pooler_output", text_expected).numpy()
    np.testing.assert_allclose(critic.encode_texts(texts).numpy(), _normalize(text_expected), atol=2e-5)
    assert critic.max_text_tokens == (64 if which == "siglip" else 77)
    assert critic.name == f"transformers:{directory.resolve()}"


def test_siglip_text_padding_to_max_length_matters(siglip_critic):
    # padding to the longest text would change the embedding: SigLIP towers see the pad tokens
    text = "brown nevus"
    ours = siglip_critic.encode_texts([text])
    tokens = siglip_critic.tokenizer([text], padding=True, return_tensors="pt")
    with torch.no_grad():
        short = siglip_critic.module.get_text_features(input_ids=tokens["input_ids"])
        short = torch.nn.functional.normalize(getattr(short, "pooler_output", short), dim=-1)
    assert not torch.allclose(ours, short, atol=1e-4)


def test_open_clip_critic_loads_local_dir_and_matches_model(tiny_open_clip_dir):
    import open_clip

    critic = load_critic(tiny_open_clip_dir)
    assert critic.name == f"open_clip:local-dir:{tiny_open_clip_dir.resolve()}"
    same = load_critic(f"open_clip:local-dir:{tiny_open_clip_dir}")
    assert type(same) is type(critic)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip_dir}")
    model.eval()
    pils, tensor = _pil_batch(2, 32, seed=1)
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(p) for p in pils])).numpy()
        tokens = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip_dir}")(["a red ring"])
        text_expected = model.encode_text(tokens).numpy()
    np.testing.assert_allclose(critic.encode_images(tensor).detach().numpy(), _normalize(expected), atol=1e-5)
    np.testing.assert_allclose(critic.encode_texts(["a red ring"]).numpy(), _normalize(text_expected), atol=1e-5)
    assert critic.embed_dim == 16


@pytest.mark.parametrize("fixture", ["clip_critic", "siglip_critic"])
def test_gradients_reach_images_but_never_the_critic(fixture, request):
    critic = request.getfixturevalue(fixture)
    images = torch.rand(2, 3, 48, 40, requires_grad=True)
    critic.encode_images(images).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in critic.module.parameters())
    critic.train()  # a trainer calling .train() must not unfreeze or leave eval mode
    assert not critic.module.training


def test_grayscale_equals_repeated_rgb(clip_critic):
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(clip_critic.encode_images(gray), clip_critic.encode_images(gray.repeat(1, 3, 1, 1)))


def test_text_embeddings_are_cached_per_text(clip_critic, monkeypatch):
    calls: list[list[str]] = []
    original = clip_critic._text_features

    def counting(texts):
        calls.append(list(texts))
        return original(texts)

    monkeypatch.setattr(clip_critic, "_text_features", counting)
    clip_critic.clear_cache()
    first = clip_critic.encode_texts(["pale ring", "dark centre", "pale ring"])
    second = clip_critic.encode_texts(["dark centre", "pale ring"])
    assert calls == [["pale ring", "dark centre"]]
    torch.testing.assert_close(first[0], first[2])
    torch.testing.assert_close(second[1], first[0])
    assert not first.requires_grad


def test_truncation_warning_counts_long_texts(siglip_critic):
    siglip_critic.clear_cache()
    long = "irregular notched border with several colours " * 20
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        siglip_critic.encode_texts([long, long + "x", "short"])
    messages = [str(w.message) for w in caught if issubclass(w.category, TextTruncationWarning)]
    assert len(messages) == 1 and messages[0].startswith("2 of 3 new texts exceed") and "64 tokens" in messages[0]


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_critic_returns_float32_embeddings(tiny_clip_dir, dtype, torch_dtype):
    critic = load_critic(tiny_clip_dir, dtype=dtype, device="cpu")
    assert critic.dtype == torch_dtype
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = critic.encode_images(images)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert torch.isfinite(images.grad).all()
    reference = load_critic(tiny_clip_dir).encode_images(images.detach())
    assert torch.nn.functional.cosine_similarity(out.detach(), reference).min() > 0.97


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(3, 32, 32), "shape"),
        (torch.rand(2, 4, 32, 32), "shape"),
        (torch.randint(0, 255, (2, 3, 32, 32)), "float"),
        (torch.rand(2, 3, 32, 32) * 255, r"\[0,1\]"),
        (torch.rand(2, 3, 32, 32) * 2 - 1, r"\(images \+ 1\) / 2"),
        (torch.zeros(0, 3, 32, 32), "empty"),
        (np.zeros((2, 3, 32, 32), dtype=np.float32), "torch.Tensor"),
    ],
)
def test_bad_images_are_clear_errors(clip_critic, images, match):
    with pytest.raises(DataError, match=match):
        clip_critic.encode_images(images)


def test_bad_texts_are_clear_errors(clip_critic):
    with pytest.raises(DataError, match="empty list"):
        clip_critic.encode_texts([])
    with pytest.raises(DataError, match="single string"):
        clip_critic.encode_texts("a string")
    with pytest.raises(DataError, match="item 1"):
        clip_critic.encode_texts(["ok", 3])


def test_bad_names_are_clear_errors(tmp_path, tiny_clip_dir):
    with pytest.raises(ConfigError, match="unknown critic backend 'jax'"):
        load_critic(tiny_clip_dir, backend="jax")
    with pytest.raises(ModelLoadError, match="not found"):
        load_critic(tmp_path / "does" / "not" / "exist")
    with pytest.raises(ModelLoadError, match="could not load a transformers critic"):
        load_critic(tmp_path)  # exists but holds no model
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_critic(tiny_clip_dir, dtype="fp8")
    with pytest.raises(ConfigError, match="names no model"):
        load_critic("open_clip:")
    assert issubclass(ModelLoadError, ClinAlignError)


def test_open_clip_name_parsing(tmp_path):
    assert parse_open_clip_name("open_clip:ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_open_clip_name("open_clip:ViT-B-16") == ("ViT-B-16", None)
    repo = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert parse_open_clip_name(f"open_clip:{repo}") == (repo, None)
    assert parse_open_clip_name(f"open_clip:{tmp_path}") == (f"local-dir:{tmp_path.resolve()}", None)


def test_import_clinalign_is_light():
    import subprocess
    import sys

    heavy = "('torch', 'diffusers', 'openai', 'transformers')"
    code = f"import sys, clinalign; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("size", [(32, 32), (40, 24), (64, 64)])
def test_siglip2_naflex_matches_its_processor(tmp_path_factory, size):
    from transformers import AutoImageProcessor, AutoModel

    from clinalign.testing import build_tiny_siglip2

    directory = build_tiny_siglip2(tmp_path_factory.mktemp("siglip2"))
    critic = load_critic(directory)
    model = AutoModel.from_pretrained(directory).eval()
    processor = AutoImageProcessor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(2)]
    tensor = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays]).requires_grad_(True)
    inputs = processor(images=[Image.fromarray(a) for a in arrays], return_tensors="pt")
    with torch.no_grad():
        expected = model.get_image_features(**inputs)
        expected = _normalize(getattr(expected, "pooler_output", expected).numpy())
    ours = critic.encode_images(tensor)
    # sizes already on the patch grid need no resize and agree exactly; 64x64 is downscaled by two
    # different antialiased bilinear implementations (torchvision vs F.interpolate)
    atol = 1e-5 if size != (64, 64) else 5e-2
    np.testing.assert_allclose(ours.detach().numpy(), expected, atol=atol)
    ours.sum().backward()
    assert tensor.grad.abs().sum() > 0
    assert critic.pad_to_max_length


def test_naflex_target_size_respects_budget():
    from clinalign.critics.naflex import naflex_target_size

    for height, width in [(448, 448), (512, 300), (100, 900), (7, 7)]:
        h, w = naflex_target_size(height, width, 16, 256)
        assert h % 16 == 0 and w % 16 == 0 and (h // 16) * (w // 16) <= 256
        # one more patch step on the longer side would exceed the budget or the aspect ratio
        assert ((h + 16) // 16) * ((w + 16) // 16) > 256 or min(h, w) == 16


def test_fingerprint_identifies_the_model_not_the_path(tmp_path, tiny_clip_dir, clip_critic, siglip_critic):
    import shutil

    from clinalign.critics import same_model

    copy = shutil.copytree(tiny_clip_dir, tmp_path / "copy_of_clip")
    copied = load_critic(copy)
    assert copied.name != clip_critic.name
    assert copied.fingerprint == clip_critic.fingerprint != siglip_critic.fingerprint
    assert same_model(copied, clip_critic.identity())
    assert not same_model(siglip_critic, clip_critic.identity())
    assert same_model(clip_critic, clip_critic.name) and not same_model(copied, clip_critic.name)
