"""Reward-hacking detection from the held-out evaluation history (a pure function, no trainer state).

Reward hacking shows as the training critic's held-out score rising while an independent evaluator's
score falls. Held-out scores wobble from one evaluation to the next, so a single small dip is not a
signal: the detector compares each evaluation with the evaluator's *best* evaluation so far and reports
hacking only when the evaluator stayed more than ``tolerance`` below that best for ``patience``
evaluations in a row while the training critic's score stayed above its value at that best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EVAL_KEY = "eval/total"
TRAIN_KEY = "eval/train_critic_total"


@dataclass(frozen=True)
class HackingVerdict:
    """Outcome of :func:`detect_reward_hacking` for the latest evaluation.

    Attributes:
        hacking: the latest ``streak`` evaluations (at least ``patience``) show the pattern.
        streak: trailing evaluations in a row that show it (0 when the latest does not).
        best_index: index in the history of the evaluator's best evaluation so far.
        new: True exactly when the streak has just reached ``patience`` (warn once per streak).
    """

    hacking: bool
    streak: int
    best_index: int
    new: bool


def detect_reward_hacking(
    history: Sequence[Mapping[str, float]], *, tolerance: float = 0.01, patience: int = 2
) -> HackingVerdict:
    """Judge the last entry of ``history`` (dicts with ``eval/total`` and ``eval/train_critic_total``).

    An evaluation *counts* when, relative to the evaluator's best evaluation before it, the evaluator's
    score is lower by more than ``tolerance`` and the training critic's score is higher. ``hacking`` is
    True when the last ``patience`` (or more) evaluations all count.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if not history:
        return HackingVerdict(hacking=False, streak=0, best_index=-1, new=False)
    best = 0
    streak = 0
    for i, entry in enumerate(history):
        if i == 0:
            continue
        reference = history[best]
        counts = (
            TRAIN_KEY in entry
            and TRAIN_KEY in reference
            and entry[EVAL_KEY] < reference[EVAL_KEY] - tolerance
            and entry[TRAIN_KEY] > reference[TRAIN_KEY]
        )
        streak = streak + 1 if counts else 0
        if entry[EVAL_KEY] > reference[EVAL_KEY]:
            best = i
    return HackingVerdict(hacking=streak >= patience, streak=streak, best_index=best, new=streak == patience)
