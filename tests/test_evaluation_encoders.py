"""The memorization check's independent encoder: DINOv2 through transformers (tiny model built from a config)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scoring_helpers import COLOURS, _image, write_generated_set, write_real_set
from scoring_helpers import run_cli as _run

from clinalign.errors import ConfigError
from clinalign.evaluation.encoders import DEFAULT_ENCODER, ImageEncoder, load_encoder


def _tiny_dinov2(out: Path, *, processor: bool) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    Dinov2Model(config).save_pretrained(out)
    if processor:
        BitImageProcessor(
            size={"shortest_edge": 40},
            crop_size={"height": 24, "width": 24},
            do_center_crop=True,
            image_mean=[0.5, 0.4, 0.3],
            image_std=[0.2, 0.25, 0.3],
        ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    return _tiny_dinov2(tmp_path_factory.mktemp("dinov2"), processor=False)


def test_dinov2_encoder_equals_the_model_on_normalised_pixels(dino_dir, tmp_path):
    from transformers import Dinov2Model

    encoder = load_encoder(str(dino_dir), device="cpu")
    assert isinstance(encoder, ImageEncoder) and encoder.embed_dim == 32 and encoder.image_size == 32
    images = torch.rand(3, 3, 32, 32)
    model = Dinov2Model.from_pretrained(dino_dir).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(pixel_values=(images - mean) / std).pooler_output
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(encoder.encode_images(images), expected, atol=1e-5, rtol=1e-5)
    # the image processor's crop size and statistics are used when the folder has one
    with_processor = load_encoder(str(_tiny_dinov2(tmp_path / "p", processor=True)), device="cpu")
    assert with_processor.image_size == 24
    pixels = with_processor.preprocess(torch.full((1, 3, 50, 50), 0.5))
    assert pixels.shape == (1, 3, 24, 24)
    torch.testing.assert_close(pixels[0, :, 0, 0], torch.tensor([0.0, 0.4, 2 / 3]), atol=1e-5, rtol=0)


def test_a_critic_loads_as_itself(tiny_clip_dir):
    from clinalign.critics.base import Critic

    assert isinstance(load_encoder(str(tiny_clip_dir), device="cpu"), Critic)


def test_encoder_not_loadable_offline_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"huggingface-cli download facebook/dinov2-small.*--encoder none"):
        load_encoder(DEFAULT_ENCODER)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="the folder has no loadable transformers model"):
        load_encoder(str(tmp_path / "empty"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("memorization")
    real = write_real_set(root)
    rng = np.random.default_rng(11)
    rows = []
    for label, colour in COLOURS.items():
        for i in range(4):
            name = f"train/{label}_{i}.png"
            _image(root / name, colour, rng, size=48)
            rows.append({"id": f"train-{label}-{i}", "image": name, "label": label})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    copier = write_generated_set(root / "copier", real, seed=3)
    first = json.loads((copier / "manifest.jsonl").read_text().splitlines()[0])
    shutil.copy(root / "train" / "red_lesion_1.png", copier / first["file"])
    return {"root": root, "real": real, "train": root / "train.jsonl", "copier": copier}


def test_memorization_uses_dinov2_by_default_and_a_local_copy_when_given(world, dino_dir, tmp_path, capsys):
    from clinalign.critics.embed import embed_image_files

    base = ["evaluate", "memorization", "--method", f"copier={world['copier']}", "--train", str(world["train"])]
    base += ["--real", str(world["real"]), "--no-progress", "--no-match-sizes"]
    # the default encoder is DINOv2 from the hub: offline, a clear exit 2 naming how to get it
    code, _, err = _run([*base, "--out", str(tmp_path / "default")], capsys)
    assert code == 2 and f"cannot load the encoder '{DEFAULT_ENCODER}'" in err and "--encoder none" in err
    code, _, err = _run([*base, "--encoder", "none", "--out", str(tmp_path / "none")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "none" / "memorization.json").read_text())["encoder"] is None

    code, _, err = _run([*base, "--encoder", str(dino_dir), "--out", str(tmp_path / "dino")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "dino" / "memorization.json").read_text())
    assert summary["encoder"] == str(dino_dir)
    with open(tmp_path / "dino" / "memorization_per_image.csv", newline="") as handle:
        per_image = list(csv.DictReader(handle))
    # independent: nearest cosine distances from the embeddings of every image, by brute force
    encoder = load_encoder(str(dino_dir), device="cpu")
    train_paths = [world["root"] / json.loads(x)["image"] for x in world["train"].read_text().splitlines()]
    test_paths = [world["root"] / json.loads(x)["image"] for x in world["real"].read_text().splitlines()]
    gen_paths = [world["copier"] / json.loads(x)["file"] for x in (world["copier"] / "manifest.jsonl").open()]
    gen, train, test = (embed_image_files(encoder, p, progress=False) for p in (gen_paths, train_paths, test_paths))
    d_train = 1 - (gen @ train.T).max(dim=1).values
    d_test = 1 - (gen @ test.T).max(dim=1).values
    np.testing.assert_allclose([float(r["d_train"]) for r in per_image], d_train.numpy(), atol=1e-5)
    np.testing.assert_allclose([float(r["d_test"]) for r in per_image], d_test.numpy(), atol=1e-5)
    assert float(per_image[0]["d_train"]) == pytest.approx(0.0, abs=1e-5)  # the copied training image
