"""Shared helpers for the diffusion/training tests (no tests here): a tiny SD pipeline on disk, toy rows,
a brightness reward and a small config."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

_TINY_SD: dict[str, Path] = {}


def tiny_sd_path() -> Path:
    """Build the tiny SD pipeline once per test process and return its directory."""
    if "path" not in _TINY_SD:
        from clinalign.testing import build_tiny_sd

        root = Path(tempfile.mkdtemp(prefix="clinalign-tiny-sd-"))
        _TINY_SD["path"] = build_tiny_sd(root / "sd")
    return _TINY_SD["path"]


@pytest.fixture
def tiny_sd() -> Path:
    return tiny_sd_path()


class BrightnessReward:
    """Mean pixel value: a simple differentiable reward, higher for brighter images."""

    name = "brightness"

    def __call__(self, images: torch.Tensor, batch: Any) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))


class RedReward:
    """Mean red minus mean green-blue: a second simple reward (for composites)."""

    name = "red"

    def __call__(self, images: torch.Tensor, batch: Any) -> torch.Tensor:
        return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


def toy_rows(n: int = 8, *, size: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    labels = ["cardiomegaly", "effusion"]
    rows = []
    for i in range(n):
        array = (rng.random((size, size, 3)) * 255).astype("uint8")
        label = labels[i % 2]
        rows.append(
            {
                "id": f"r{i}",
                "image": Image.fromarray(array),
                "prompt": f"a chest x-ray with {label} {i}",
                "checklist": f"{label} checklist",
                "label": label,
            }
        )
    return rows


def write_toy_jsonl(directory: Path, n: int = 8, *, size: int = 32) -> Path:
    """Enriched-JSONL layout (id, image, label, t_ep) with images on disk, plus a checklists file."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in toy_rows(n, size=size):
        path = directory / f"{row['id']}.png"
        row["image"].save(path)
        lines.append(json.dumps({"id": row["id"], "image": path.name, "label": row["label"], "t_ep": row["prompt"]}))
    (directory / "train.jsonl").write_text("\n".join(lines) + "\n")
    (directory / "checklists.json").write_text(
        json.dumps({"cardiomegaly": "enlarged heart", "effusion": "blunted angle"})
    )
    return directory / "train.jsonl"


def tiny_config(tmp_path: Path, **overrides: Any):
    from clinalign.training import TrainConfig

    values: dict[str, Any] = {
        "model": str(tiny_sd_path()),
        "resolution": 16,
        "num_inference_steps": 3,
        "k": 1,
        "repeats": 2,
        "guidance_scale": 2.0,
        "batch_size": 2,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "output_dir": str(tmp_path / "run"),
        "log_with": "none",
        "checkpoint_every": 0,
        "progress_bar": False,
    }
    values.update(overrides)
    return TrainConfig(**values)
