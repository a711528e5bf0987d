"""reward_weight_mode: normalized (weighted mean) vs raw (weighted sum), through CompositeReward and TrainConfig."""

from __future__ import annotations

import pytest
import torch

from clinalign import TrainConfig
from clinalign.errors import ConfigError
from clinalign.rewards import CompositeReward, RewardBatch


class _Const:
    def __init__(self, name: str, values: list[float]) -> None:
        self.name = name
        self.values = torch.tensor(values)

    def __call__(self, images, batch):
        return self.values


def _total(weights, normalize):
    rewards = [_Const("vdc", [0.2, 0.4]), _Const("dd", [-1.0, -0.5])]
    batch = RewardBatch(prompts=["a", "b"], checklists=["a", "b"], labels=torch.tensor([0, 1]))
    return CompositeReward(rewards, weights=weights, normalize=normalize)(torch.zeros(2, 3, 4, 4), batch).total


def test_normalized_is_the_weighted_mean_and_raw_the_weighted_sum():
    torch.testing.assert_close(_total({"vdc": 1, "dd": 3}, True), torch.tensor([(0.2 - 3.0) / 4, (0.4 - 1.5) / 4]))
    torch.testing.assert_close(_total({"vdc": 1, "dd": 3}, False), torch.tensor([0.2 - 3.0, 0.4 - 1.5]))
    # raw: sweeping the DD weight leaves the VDC contribution where it was
    step = _total({"vdc": 1, "dd": 2}, False) - _total({"vdc": 1, "dd": 1}, False)
    torch.testing.assert_close(step, torch.tensor([-1.0, -0.5]))


def test_train_config_field():
    assert TrainConfig().reward_weight_mode == "normalized"
    assert TrainConfig(reward_weight_mode="raw").reward_weight_mode == "raw"
    with pytest.raises(ConfigError, match="reward_weight_mode"):
        TrainConfig(reward_weight_mode="sum")


def test_trainer_builds_the_composite_with_the_mode():
    from clinalign.training.trainer import _composite

    rewards = [_Const("vdc", [1.0]), _Const("dd", [1.0])]
    assert _composite(rewards, {"dd": 2.0}, "raw").normalize is False
    assert _composite(rewards, {}, "normalized").normalize is True
