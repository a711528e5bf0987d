"""Pure reward functions on embeddings; the reward classes are thin wrappers around these."""

from __future__ import annotations

import torch


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of [B,D] and [B,D] (or [1,D], broadcast) -> [B].

    Inputs need not be normalised; critics already return unit vectors, so this is then a dot product.
    """
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return (a * b).sum(dim=-1)


def true_class_log_prob(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pick ``log_probs[i, labels[i]]``: [B,C], [B] -> [B]."""
    return log_probs.gather(1, labels.to(log_probs.device).long().view(-1, 1)).squeeze(1)


def weighted_sum(components: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Σ w_i r_i over the named per-sample components -> [B] (no normalisation by Σ w_i)."""
    return torch.stack([components[name] * weights[name] for name in components]).sum(dim=0)


def weighted_mean(components: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Σ w_i r_i / Σ w_i over the named per-sample components -> [B]."""
    total_weight = sum(weights[name] for name in components)
    stacked = torch.stack([components[name] * weights[name] for name in components])
    return stacked.sum(dim=0) / total_weight
