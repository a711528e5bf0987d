"""Reward inputs and the reward interface.

A reward is any object with a ``name`` and ``__call__(images, batch) -> Tensor[B]`` (higher is
better). Rewards built on a :class:`~clinalign.critics.Critic` derive from :class:`CriticReward`,
which lets :class:`~clinalign.rewards.CompositeReward` embed the images once and share the
embedding between all rewards that use the same critic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from clinalign.critics.base import Critic
from clinalign.errors import DataError


@dataclass
class RewardBatch:
    """What rewards need to know about a batch of B generated images.

    Attributes:
        prompts: the enriched prompts t_ep the images were generated from (VDC), length B.
        checklists: the class checklist t_c of each sample's label (CCS), length B.
        labels: class indices, LongTensor [B] (DD).
        references: paired real images, float [B,3,H,W] in [0,1] (SFS), or ``None``.
    """

    prompts: Sequence[str]
    checklists: Sequence[str]
    labels: torch.Tensor
    references: torch.Tensor | None = None
    # reference embeddings per critic, computed once and reused across the M trajectories of a step
    _reference_cache: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.prompts = list(self.prompts)
        self.checklists = list(self.checklists)
        if not isinstance(self.labels, torch.Tensor):
            self.labels = torch.as_tensor(self.labels)
        if self.labels.dim() != 1 or self.labels.is_floating_point():
            raise DataError(
                f"RewardBatch.labels must be a 1-D integer tensor of class indices, got shape "
                f"{list(self.labels.shape)} and dtype {self.labels.dtype}."
            )
        self.labels = self.labels.long()
        sizes = {"prompts": len(self.prompts), "checklists": len(self.checklists), "labels": len(self.labels)}
        if self.references is not None:
            if self.references.dim() != 4:
                raise DataError(f"RewardBatch.references must be [B,3,H,W], got {list(self.references.shape)}.")
            sizes["references"] = int(self.references.shape[0])
        if len(set(sizes.values())) != 1:
            raise DataError(f"RewardBatch fields disagree on the batch size: {sizes}. Each needs one entry per image.")

    def __len__(self) -> int:
        return len(self.labels)

    def reference_embeddings(self, critic: Critic) -> torch.Tensor:
        """Embeddings of ``references`` in ``critic``'s space, computed once per batch and critic, no grad."""
        if self.references is None:
            raise DataError(
                "this reward needs paired real reference images, but RewardBatch.references is None. "
                "Pass references=[B,3,H,W] real images (training), or drop SFS (e.g. at generation-only evaluation)."
            )
        key = id(critic)
        if key not in self._reference_cache:
            with torch.no_grad():
                self._reference_cache[key] = critic.encode_images(self.references).detach()
        return self._reference_cache[key]


@runtime_checkable
class Reward(Protocol):
    """Anything with a ``name`` and ``__call__(images, batch) -> Tensor[B]`` is a reward."""

    name: str

    def __call__(self, images: torch.Tensor, batch: RewardBatch) -> torch.Tensor: ...


class CriticReward(ABC):
    """A reward computed from a critic's image embedding of the generated images.

    Subclasses implement :meth:`from_embeddings`; calling the reward embeds the images first.
    ``higher_is_better`` and ``is_differentiable`` describe the reward for trainers and reports.
    """

    name: str = "critic_reward"
    higher_is_better: bool = True
    is_differentiable: bool = True

    def __init__(self, critic: Critic, *, name: str | None = None) -> None:
        if not isinstance(critic, Critic):
            raise DataError(f"{type(self).__name__} needs a clinalign Critic (see load_critic), got {type(critic)}.")
        self.critic = critic
        if name is not None:
            self.name = name

    def __call__(self, images: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
        """Per-sample reward [B] for images float [B,3,H,W] in [0,1]; differentiable in ``images``."""
        return self.from_embeddings(self.critic.encode_images(images), batch)

    @abstractmethod
    def from_embeddings(self, image_embeddings: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
        """Per-sample reward [B] from the critic's L2-normalised embeddings [B,D] of the images."""

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (saved in training metadata)."""
        return {"name": self.name, "type": type(self).__name__, "critic": self.critic.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, critic={self.critic.name!r})"
