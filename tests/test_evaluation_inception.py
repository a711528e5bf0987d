"""fd / kid in the FID Inception-v3 space: the clear messages without torchmetrics or weights, and the computation
with a tiny randomly initialised feature extractor injected in place of Inception."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from scoring_helpers import run_cli as _run
from scoring_helpers import write_generated_set, write_real_set

from clinalign.evaluation.distribution import DistributionConfig, evaluate_fd, evaluate_kid
from clinalign.evaluation.functional import frechet_distance, kernel_inception_distance
from clinalign.evaluation.inception import INCEPTION_WEIGHTS_NAME, InceptionEncoder


class TinyFeatures(torch.nn.Module):
    """uint8 images [N,3,H,W] -> 12 features, random weights (stands in for Inception's 2048)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, stride=2)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(images.float() / 255.0))).flatten(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("inception")
    real = write_real_set(root)
    gen = write_generated_set(root / "craft", real, seed=0, noise=60)
    return {"root": root, "real": real, "gen": gen}


def _features(paths, size: int) -> torch.Tensor:
    from clinalign.data.images import load_image, pil_to_tensor

    images = torch.stack([pil_to_tensor(load_image(p), size) for p in paths])
    with torch.no_grad():
        return TinyFeatures()((images * 255).round().to(torch.uint8))


def _paths(world):
    real = [world["root"] / json.loads(x)["image"] for x in world["real"].read_text().splitlines()]
    gen = [world["gen"] / json.loads(x)["file"] for x in (world["gen"] / "manifest.jsonl").read_text().splitlines()]
    return real, gen


def test_fd_and_kid_with_an_injected_feature_extractor_equal_the_functions_on_its_features(world, tmp_path):
    config = {"methods": {"craft": [str(world["gen"])]}, "real": str(world["real"]), "evaluators": ["inception"]}
    encoder = InceptionEncoder(TinyFeatures(), image_size=32)
    assert encoder.embed_dim == 12
    fd = evaluate_fd(DistributionConfig(**config, out=str(tmp_path / "fd")), critics={"inception": encoder})
    kid = evaluate_kid(
        DistributionConfig(**config, subsets=5, subset_size=10, out=str(tmp_path / "kid")),
        critics={"inception": encoder},
    )
    real_paths, gen_paths = _paths(world)
    real, gen = _features(real_paths, 32), _features(gen_paths, 32)
    (row,) = fd.rows
    assert row["encoder"] == "inception" and row["fd"] > 0
    assert row["fd"] == pytest.approx(frechet_distance(real, gen), rel=1e-9)
    assert row["prompt_image_cosine_vdc"] is None and row["image_image_cosine_sfs"] is None  # no text side
    (krow,) = kid.rows
    expected = kernel_inception_distance(real, gen, subsets=5, subset_size=10)
    assert (krow["kid_mean"], krow["kid_std"]) == pytest.approx(expected, rel=1e-9)
    assert any("FID Inception-v3" in note for note in fd.summary["notes"])


def test_fd_and_kid_equal_torchmetrics_with_the_same_feature_extractor(world, tmp_path):
    pytest.importorskip("torchmetrics")
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from clinalign.data.images import load_image, pil_to_tensor

    config = {"methods": {"craft": [str(world["gen"])]}, "real": str(world["real"]), "evaluators": ["inception"]}
    encoder = InceptionEncoder(TinyFeatures(), image_size=32)
    fd = evaluate_fd(DistributionConfig(**config, out=str(tmp_path / "fd")), critics={"inception": encoder}).rows[0]
    n = len(_paths(world)[0])
    kid = evaluate_kid(
        DistributionConfig(**config, subsets=1, subset_size=n, out=str(tmp_path / "kid")),
        critics={"inception": encoder},
    ).rows[0]
    real_paths, gen_paths = _paths(world)

    def uint8(paths):
        return (torch.stack([pil_to_tensor(load_image(p), 32) for p in paths]) * 255).round().to(torch.uint8)

    reference = FrechetInceptionDistance(feature=TinyFeatures(), input_img_size=(3, 32, 32))
    reference.update(uint8(real_paths), real=True)
    reference.update(uint8(gen_paths), real=False)
    assert fd["fd"] == pytest.approx(float(reference.compute()), rel=1e-4)
    # one subset of every row: both estimators see the same rows, so the unbiased MMD² must agree
    kernel = KernelInceptionDistance(feature=TinyFeatures(), subsets=1, subset_size=n)
    kernel.update(uint8(real_paths), real=True)
    kernel.update(uint8(gen_paths), real=False)
    assert kid["kid_mean"] == pytest.approx(float(kernel.compute()[0]), rel=1e-4)


def test_inception_without_torchmetrics_or_weights_is_a_clear_exit_2(world, tmp_path, capsys, monkeypatch):
    argv = ["evaluate", "fd", "--method", f"craft={world['gen']}", "--real", str(world["real"])]
    argv += ["--evaluator", "inception", "--out", str(tmp_path / "o"), "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torchmetrics", None)
        patch.setitem(sys.modules, "torchmetrics.image.fid", None)
        code, _, err = _run(argv, capsys)
    assert code == 2 and "torchmetrics" in err and "pip install 'clinalign[eval]'" in err
    code, _, err = _run([*argv, "--inception-weights", str(tmp_path / "missing.pth")], capsys)
    assert code == 2 and ("missing.pth: file not found" in err or "pip install 'clinalign[eval]'" in err)
    pytest.importorskip("torchmetrics")
    pytest.importorskip("torch_fidelity")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code, _, err = _run(argv, capsys)
    assert code == 2 and INCEPTION_WEIGHTS_NAME in err and "--inception-weights" in err
    assert not (tmp_path / "o" / "fd.csv").exists()


def test_inception_features_are_the_extractor_on_uint8_images():
    encoder = InceptionEncoder(TinyFeatures(), image_size=32)
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = TinyFeatures()((images * 255).round().to(torch.uint8))
    torch.testing.assert_close(encoder.encode_images(images), expected)
    assert np.isfinite(encoder.encode_images(images).numpy()).all()
