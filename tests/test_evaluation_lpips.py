"""diversity with LPIPS from local weights: a randomly initialised AlexNet saved to a file stands in for
torchvision's checkpoint; the result is compared with the `lpips` package on the same backbone."""

from __future__ import annotations

import json
import sys
from itertools import combinations

import numpy as np
import pytest
import torch
from scoring_helpers import run_cli as _run
from scoring_helpers import write_generated_set, write_real_set


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpips")
    real = write_real_set(root, n_per_class=2)
    multi = write_generated_set(root / "multi", real, seed=2, n_per_prompt=3, noise=60)
    return {"root": root, "multi": multi}


def _random_alexnet(path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_lpips_without_torchmetrics_or_weights_is_a_clear_exit_2(world, tmp_path, capsys, monkeypatch):
    argv = ["evaluate", "diversity", "--method", f"m={world['multi']}", "--out", str(tmp_path / "o"), "--no-progress"]
    code, _, err = _run([*argv, "--lpips-weights", str(tmp_path / "missing.pth")], capsys)
    assert code == 2 and "missing.pth: file not found" in err and "alexnet-owt-7be5be79.pth" in err
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.setitem(sys.modules, "torchmetrics.image.lpip", None)
    (tmp_path / "alexnet.pth").write_bytes(b"not read: the missing package is reported first")
    code, _, err = _run([*argv, "--lpips-weights", str(tmp_path / "alexnet.pth")], capsys)
    assert code == 2 and "pip install 'clinalign[eval]'" in err
    assert not (tmp_path / "o" / "diversity.csv").exists()


@pytest.mark.slow  # two random AlexNets (61M parameters) built, saved and loaded: ~15 s on 2 busy cores
def test_lpips_diversity_from_a_weights_file_equals_the_lpips_package(world, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torchmetrics")
    lpips = pytest.importorskip("lpips")
    from clinalign.data.images import load_images_tensor

    weights = _random_alexnet(tmp_path / "alexnet_random.pth")
    argv = ["evaluate", "diversity", "--method", f"m={world['multi']}", "--out", str(tmp_path / "o"), "--no-progress"]
    code, _, err = _run([*argv, "--lpips-weights", str(weights), "--device", "cpu"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "diversity.json").read_text())
    (row,) = summary["results"]
    assert row["distance"] == "lpips_alex" and summary["definition"].startswith("LPIPS")

    # independent: the lpips package with the same backbone (its torch hub folder holding the same file)
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "alexnet-owt-7be5be79.pth").symlink_to(weights)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model = lpips.LPIPS(net="alex", pretrained=True, verbose=False).eval()
    rows = [json.loads(x) for x in (world["multi"] / "manifest.jsonl").read_text().splitlines()]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["ref_id"], []).append(i)
    per_prompt = []
    for members in groups.values():
        images = load_images_tensor([world["multi"] / rows[i]["file"] for i in members], size=64)
        with torch.no_grad():
            pairs = [
                float(model(images[a : a + 1], images[b : b + 1], normalize=True))
                for a, b in combinations(range(len(members)), 2)
            ]
        per_prompt.append(np.mean(pairs))
    assert row["n_prompts"] == len(groups) and row["diversity_mean"] > 0
    assert row["diversity_mean"] == pytest.approx(float(np.mean(per_prompt)), rel=1e-4)
