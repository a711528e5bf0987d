"""CAS evaluation: per-image Clinical Alignment Score, low-tail analysis, comparison tables and plots.

>>> scorer = CASScorer(evaluator, probe)              # evaluator: a Critic; probe in its space
>>> scores = scorer.score(images, prompts, checklists, labels, references=None)
>>> tail = tail_analysis(scores.cas, real_scores.cas, q=0.25)
>>> report = evaluate_cas(ScoreCASConfig(methods={"craft": ["runs/craft/gen"]}, ...))   # `clinalign score-cas`
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
from clinalign.scoring.plots import plot_ecdf, plot_lowest, plot_primitives
from clinalign.scoring.report import CASReport, ScoreCASConfig, evaluate_cas, write_report
from clinalign.scoring.scorer import CASScorer, CASScores, describe_cas
from clinalign.scoring.sets import (
    EvaluationLeakageWarning,
    GeneratedSet,
    ImageSet,
    check_leakage,
    read_checklists,
    read_generated_set,
    read_real_set,
    scan_generated_set,
)
from clinalign.scoring.tables import Table, comparison_table, per_class_table, tail_table
from clinalign.scoring.tail import TailAnalysis, average_tails, tail_analysis

__all__ = [
    "DD_MODES",
    "PRIMITIVES",
    "CASReport",
    "CASScorer",
    "CASScores",
    "EvaluationLeakageWarning",
    "GeneratedSet",
    "ImageSet",
    "ScoreCASConfig",
    "Table",
    "TailAnalysis",
    "average_tails",
    "bootstrap_ci",
    "cas_from_primitives",
    "check_leakage",
    "comparison_table",
    "dd_scores",
    "describe_cas",
    "evaluate_cas",
    "fraction_below",
    "per_class_table",
    "plot_ecdf",
    "plot_lowest",
    "plot_primitives",
    "read_checklists",
    "read_generated_set",
    "read_real_set",
    "row_cosine",
    "scan_generated_set",
    "tail_analysis",
    "tail_table",
    "tail_threshold",
    "write_report",
]
