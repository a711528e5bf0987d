"""The evaluation suite beyond CAS: fidelity (FD/KID), diversity, memorization, class separability and
blinded preference studies, as pure functions (:mod:`clinalign.evaluation.functional`) and checks that
read the generated sets ``clinalign generate`` writes and write CSV + JSON + PNG (``clinalign evaluate``).
"""

from __future__ import annotations

from clinalign.evaluation.common import CheckResult, SetsConfig
from clinalign.evaluation.distribution import DistributionConfig, evaluate_fd, evaluate_kid
from clinalign.evaluation.diversity import DiversityConfig, evaluate_diversity
from clinalign.evaluation.functional import (
    bradley_terry,
    frechet_distance,
    hamming_distance,
    kernel_inception_distance,
    nearest_neighbors,
    phash,
    silhouette,
    ssim,
    top1_rates,
)
from clinalign.evaluation.memorization import MemorizationConfig, evaluate_memorization
from clinalign.evaluation.preference import (
    PreferenceExportConfig,
    PreferenceImportConfig,
    export_preference_kit,
    import_preference,
)
from clinalign.evaluation.separability import SilhouetteConfig, evaluate_silhouette

__all__ = [
    "CheckResult",
    "DistributionConfig",
    "DiversityConfig",
    "MemorizationConfig",
    "PreferenceExportConfig",
    "PreferenceImportConfig",
    "SetsConfig",
    "SilhouetteConfig",
    "bradley_terry",
    "evaluate_diversity",
    "evaluate_fd",
    "evaluate_kid",
    "evaluate_memorization",
    "evaluate_silhouette",
    "export_preference_kit",
    "frechet_distance",
    "hamming_distance",
    "import_preference",
    "kernel_inception_distance",
    "nearest_neighbors",
    "phash",
    "silhouette",
    "ssim",
    "top1_rates",
]
