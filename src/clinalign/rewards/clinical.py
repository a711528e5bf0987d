"""The four clinical rewards: VDC, CCS, DD and SFS."""

from __future__ import annotations

from typing import Any

import torch

from clinalign.critics.base import Critic
from clinalign.errors import ConfigError
from clinalign.probe import LinearProbe
from clinalign.rewards.base import CriticReward, RewardBatch
from clinalign.rewards.functional import cosine_similarity, true_class_log_prob


class VDCReward(CriticReward):
    """Visual-description consistency: cos(E_I(x̂0), E_T(t_ep)), the image against its own enriched prompt."""

    name = "vdc"

    def from_embeddings(self, image_embeddings: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
        text = self.critic.encode_texts(batch.prompts).to(image_embeddings.device)
        return cosine_similarity(image_embeddings, text)


class CCSReward(CriticReward):
    """Clinical-checklist similarity: cos(E_I(x̂0), E_T(t_c)), the image against its class checklist."""

    name = "ccs"

    def from_embeddings(self, image_embeddings: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
        text = self.critic.encode_texts(batch.checklists).to(image_embeddings.device)
        return cosine_similarity(image_embeddings, text)


class DDReward(CriticReward):
    """Diagnostic discriminability: log softmax(φ(E_I(x̂0)))_y with a frozen linear probe φ.

    The probe must have been fitted in this critic's embedding space (checked by critic name and
    embedding size). Its parameters are frozen here: gradients reach the images only.
    """

    name = "dd"

    def __init__(self, critic: Critic, probe: LinearProbe, *, name: str | None = None) -> None:
        super().__init__(critic, name=name)
        probe.check_critic(critic, role="DD reward's critic")
        probe.eval()
        for parameter in probe.parameters():
            parameter.requires_grad_(False)
        self.probe = probe.to(critic.device)

    def from_embeddings(self, image_embeddings: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
        labels = batch.labels
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.probe.num_classes):
            raise ConfigError(
                f"RewardBatch.labels has indices outside the probe's {self.probe.num_classes} classes "
                f"{self.probe.class_names}: got range [{int(labels.min())}, {int(labels.max())}]."
            )
        return true_class_log_prob(self.probe.log_prob(image_embeddings), labels)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": list(self.probe.class_names)}


class SFSReward(CriticReward):
    """Structural-fidelity similarity: cos(E_I(x̂0), E_I(x_r)) against the paired real reference image."""

    name = "sfs"

    def from_embeddings(self, image_embeddings: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
        references = batch.reference_embeddings(self.critic).to(image_embeddings.device)
        return cosine_similarity(image_embeddings, references)
