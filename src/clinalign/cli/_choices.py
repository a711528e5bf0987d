"""Fixed-value options shared by several commands, as Enums so ``--help`` lists the choices."""

from __future__ import annotations

from enum import Enum


class Dtype(str, Enum):
    """Weights dtype of a critic or diffusion model."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class DDMode(str, Enum):
    """Per-image DD at evaluation: 1/0 probe correct, or the probe's probability of the true class."""

    accuracy = "accuracy"
    probability = "probability"
