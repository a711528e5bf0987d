"""clinalign: clinical reward-aligned finetuning (CRAFT) of text-to-image diffusion models.

The public API is re-exported here lazily, so ``import clinalign`` stays light: heavy
dependencies (diffusers, transformers, openai) load only when the names that need them are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "load_critic": "clinalign.critics",
    "Critic": "clinalign.critics",
    "LinearProbe": "clinalign.probe",
    "RewardBatch": "clinalign.rewards",
    "CompositeReward": "clinalign.rewards",
    "VDCReward": "clinalign.rewards",
    "CCSReward": "clinalign.rewards",
    "DDReward": "clinalign.rewards",
    "SFSReward": "clinalign.rewards",
    "ClinAlignError": "clinalign.errors",
    "DraftKTrainer": "clinalign.training",
    "TrainConfig": "clinalign.training",
    "TextualInversionTrainer": "clinalign.training",
    "TIConfig": "clinalign.training",
    "DiffusionDPOTrainer": "clinalign.training",
    "DPOConfig": "clinalign.training",
    "CASScorer": "clinalign.scoring",
}

__all__ = [  # noqa: RUF022 - grouped by role, kept in step with _LAZY
    "__version__",
    "load_critic",
    "Critic",
    "LinearProbe",
    "RewardBatch",
    "CompositeReward",
    "VDCReward",
    "CCSReward",
    "DDReward",
    "SFSReward",
    "ClinAlignError",
    "DraftKTrainer",
    "TrainConfig",
    "TextualInversionTrainer",
    "TIConfig",
    "DiffusionDPOTrainer",
    "DPOConfig",
    "CASScorer",
]

if TYPE_CHECKING:  # pragma: no cover
    from clinalign.critics import Critic, load_critic
    from clinalign.errors import ClinAlignError
    from clinalign.probe import LinearProbe
    from clinalign.rewards import (
        CCSReward,
        CompositeReward,
        DDReward,
        RewardBatch,
        SFSReward,
        VDCReward,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clinalign' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
