"""Weighted combination of rewards, sharing each critic's image embedding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clinalign.errors import ConfigError, DataError
from clinalign.rewards.base import CriticReward, Reward, RewardBatch
from clinalign.rewards.functional import weighted_mean, weighted_sum


@dataclass
class CompositeRewardOutput:
    """Result of a :class:`CompositeReward`.

    Attributes:
        total: weighted mean of the components, [B].
        components: each reward's per-sample value by name, [B] each.
    """

    total: torch.Tensor
    components: dict[str, torch.Tensor]


class CompositeReward:
    """Combine rewards into ``total = Σ w_i r_i / Σ w_i`` (equal weights by default: the paper's mean of four).

    Rewards that share a critic share one image embedding: the critic's image encoder runs once per
    call, however many rewards use it. Any other reward object is simply called.

    Args:
        rewards: reward objects with unique ``name`` s.
        weights: one non-negative weight per reward, as a sequence (same order) or a mapping by name;
            ``None`` gives equal weights.
        normalize: ``True`` divides by ``Σ w_i`` (a weighted mean); ``False`` gives the raw weighted sum
            ``Σ w_i r_i``, so changing one weight leaves the others' contributions unchanged.
    """

    name = "composite"

    def __init__(
        self,
        rewards: Sequence[Reward],
        weights: Sequence[float] | Mapping[str, float] | None = None,
        *,
        normalize: bool = True,
    ) -> None:
        rewards = list(rewards)
        if not rewards:
            raise ConfigError("CompositeReward needs at least one reward.")
        names = []
        for reward in rewards:
            name = getattr(reward, "name", None)
            if not isinstance(name, str) or not name or not callable(reward):
                raise ConfigError(
                    f"{reward!r} is not a reward: a reward needs a non-empty str `name` and "
                    "`__call__(images, batch) -> Tensor[B]`."
                )
            names.append(name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"reward names must be unique, got duplicates {duplicates}; pass name=... to tell them apart."
            )
        self.rewards = rewards
        self.weights = self._resolve_weights(names, weights)
        self.normalize = normalize

    @staticmethod
    def _resolve_weights(names: list[str], weights: Sequence[float] | Mapping[str, float] | None) -> dict[str, float]:
        if weights is None:
            return dict.fromkeys(names, 1.0)
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ConfigError(f"weights name unknown rewards {unknown}; the rewards are {names}.")
            resolved = {n: float(weights.get(n, 1.0)) for n in names}
        else:
            values = [float(w) for w in weights]
            if len(values) != len(names):
                raise ConfigError(f"got {len(values)} weights for {len(names)} rewards {names}; give one per reward.")
            resolved = dict(zip(names, values, strict=True))
        negative = {n: w for n, w in resolved.items() if w < 0 or w != w}
        if negative:
            raise ConfigError(f"reward weights must be non-negative numbers, got {negative}.")
        if sum(resolved.values()) <= 0:
            raise ConfigError(f"at least one reward weight must be positive, got {resolved}.")
        return resolved

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def __call__(self, images: torch.Tensor, batch: RewardBatch) -> CompositeRewardOutput:
        embeddings: dict[int, torch.Tensor] = {}
        components: dict[str, torch.Tensor] = {}
        for reward in self.rewards:
            if isinstance(reward, CriticReward):
                key = id(reward.critic)
                if key not in embeddings:
                    embeddings[key] = reward.critic.encode_images(images)
                value = reward.from_embeddings(embeddings[key], batch)
            else:
                value = reward(images, batch)
            if not isinstance(value, torch.Tensor) or value.shape != (images.shape[0],):
                shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise DataError(
                    f"reward '{reward.name}' returned {shape}; a reward must return a tensor of shape "
                    f"[B] = [{images.shape[0]}], one value per image."
                )
            components[reward.name] = value.float()
        combine = weighted_mean if self.normalize else weighted_sum
        return CompositeRewardOutput(total=combine(components, self.weights), components=components)

    def describe(self) -> list[dict[str, Any]]:
        """JSON-friendly list of the rewards and weights (saved in training metadata)."""
        out = []
        for reward in self.rewards:
            info = (
                reward.describe()
                if hasattr(reward, "describe")
                else {"name": reward.name, "type": type(reward).__name__}
            )
            out.append({**info, "weight": self.weights[reward.name]})
        return out

    def __repr__(self) -> str:
        return f"CompositeReward({', '.join(f'{n}={w:g}' for n, w in self.weights.items())})"
