"""Optional extras fail at the point of use with the install command (wandb, toy-build)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from clinalign.errors import MissingDependencyError
from clinalign.utils.deps import require


def test_require_names_the_extra():
    require("json", feature="anything")  # present: no error
    with pytest.raises(MissingDependencyError, match=r"pip install 'clinalign\[toy-build\]'") as info:
        require("no_such_module_xyz", package="no-such", feature="Rebuilding the toy assets", extra="toy-build")
    assert "no-such" in str(info.value) and info.value.exit_code == 2


def test_toy_build_probe_check_without_scikit_learn(monkeypatch):
    from clinalign.toy import build_assets

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real_find_spec(name, *a)
    )
    x = torch.randn(8, 4)
    y = torch.tensor([0, 1] * 4)
    with pytest.raises(MissingDependencyError, match=r"clinalign\[toy-build\]"):
        build_assets.probe_accuracy(x, y, x, y)


def test_wandb_tracker_without_wandb(monkeypatch, tmp_path):
    from test_train_support import BrightnessReward, tiny_config

    from clinalign.training import DraftKTrainer

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"pip install 'clinalign\[wandb\]'"):
        DraftKTrainer(rewards=[BrightnessReward()], config=tiny_config(tmp_path, log_with="wandb"), train_data=[])
