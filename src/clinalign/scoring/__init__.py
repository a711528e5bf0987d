"""CAS evaluation: per-image Clinical Alignment Score, low-tail analysis, comparison tables and plots.

>>> scorer = CASScorer(evaluator, probe)              # evaluator: a Critic; probe in its space
>>> scores = scorer.score(images, prompts, checklists, labels, references=None)
>>> tail = tail_analysis(scores.cas, real_scores.cas, q=0.25)
"""

from clinalign.scoring.functional import (
    DD_MODES,
    PRIMITIVES,
    bootstrap_ci,
    cas_from_primitives,
    dd_scores,
    fraction_below,
    row_cosine,
    tail_threshold,
)
from clinalign.scoring.scorer import CASScorer, CASScores, describe_cas
from clinalign.scoring.tail import TailAnalysis, tail_analysis

__all__ = [
    "DD_MODES",
    "PRIMITIVES",
    "CASScorer",
    "CASScores",
    "TailAnalysis",
    "bootstrap_ci",
    "cas_from_primitives",
    "dd_scores",
    "describe_cas",
    "fraction_below",
    "row_cosine",
    "tail_analysis",
    "tail_threshold",
]
