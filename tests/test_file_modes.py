"""Outputs are written atomically *and* with the user's umask, like a plain ``open(path, "w")`` would.

``make wheel-check`` also runs ``clinalign quickstart --fast`` under umask 027 and checks the mode of
every file it writes (report.html, PNGs, LoRA safetensors, manifests).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_support import tiny_sd_path

from clinalign.utils.io import atomic_write_text, current_umask, default_file_mode, write_json


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask
    assert default_file_mode() == 0o666 & ~umask


def test_atomic_helpers_match_plain_open(umask, tmp_path):
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as handle:
        handle.write("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    write_json(tmp_path / "atomic.json", {"a": 1})
    assert _mode(tmp_path / "atomic.txt") == _mode(plain) == 0o666 & ~umask
    assert _mode(tmp_path / "atomic.json") == _mode(plain)


def test_real_outputs_follow_the_umask(umask, tmp_path):
    """Manifest and PNGs (generate), LoRA safetensors (save_lora), probe weights, a matplotlib plot."""
    from clinalign.diffusion import LoraSpec, generate_to_dir, load_diffusion_model
    from clinalign.diffusion.generate import PromptRow
    from clinalign.probe import LinearProbe
    from clinalign.scoring.plots import plot_ecdf

    expected = 0o666 & ~umask
    model = load_diffusion_model(tiny_sd_path(), device="cpu")
    model.add_lora(LoraSpec(rank=2))
    gen = tmp_path / "gen"
    manifest = generate_to_dir(
        model, [PromptRow(prompt="a chest x-ray", label="cardiomegaly")], gen, n_per_prompt=2, resolution=16,
        num_inference_steps=2, progress_bar=False,
    )  # fmt: skip
    pngs = sorted((gen / "images").glob("*.png"))
    assert len(pngs) == 2
    lora = model.save_lora(tmp_path / "lora") / "pytorch_lora_weights.safetensors"
    probe_dir = LinearProbe.fit(torch.randn(8, 4), torch.tensor([0, 1] * 4), ["a", "b"], epochs=1).save(
        tmp_path / "probe"
    )
    plot = plot_ecdf({"m": np.array([0.1, 0.5])}, np.array([0.2, 0.6]), 0.3, tmp_path / "ecdf.png")
    written = [manifest, gen / "generate_config.json", *pngs, lora, *probe_dir.iterdir(), plot]
    for path in written:
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))} != {oct(expected)}"
    # nothing temporary left behind
    assert not [p for p in tmp_path.rglob(".*.tmp")]
