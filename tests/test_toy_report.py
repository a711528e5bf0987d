"""The quickstart summary's paired CAS gain: pairing by prompt, means over seeds, bootstrap interval."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from clinalign.toy.report import paired_gain


def _run(refs, cas):
    return SimpleNamespace(scores=SimpleNamespace(extra={"ref_id": list(refs)}, cas=np.asarray(cas, dtype=float)))


def test_pairs_by_prompt_not_by_position_and_drops_unpaired():
    baseline = [_run(["a", "b", "c"], [0.5, 0.6, 0.7])]
    method = [_run(["c", "a", "b", "x"], [0.9, 0.4, 0.8, 0.0])]  # x has no baseline image
    gain = paired_gain(method, baseline, n_boot=500, seed=0)
    diffs = np.array([0.4 - 0.5, 0.8 - 0.6, 0.9 - 0.7])
    assert gain["n_prompts"] == 3
    assert gain["mean"] == pytest.approx(diffs.mean())
    assert gain["frac_prompts_improved"] == pytest.approx(2 / 3)
    lo, hi = gain["ci"]
    assert diffs.min() <= lo <= gain["mean"] <= hi <= diffs.max()


def test_seeds_are_averaged_per_prompt_before_differencing():
    baseline = [_run(["a", "b"], [0.5, 0.5])]
    method = [_run(["a", "b"], [0.7, 0.5]), _run(["a", "b"], [0.5, 0.9])]  # per prompt: a 0.6, b 0.7
    gain = paired_gain(method, baseline, n_boot=200, seed=0)
    assert gain["mean"] == pytest.approx(((0.6 - 0.5) + (0.7 - 0.5)) / 2)
    assert gain["frac_prompts_improved"] == 1.0


def test_constant_gain_has_a_degenerate_interval_and_no_pairs_give_none():
    refs = [f"r{i}" for i in range(50)]
    base = np.linspace(0.2, 0.8, 50)
    gain = paired_gain([_run(refs, base + 0.05)], [_run(refs, base)], n_boot=300, seed=1)
    assert gain["ci"] == pytest.approx([0.05, 0.05])
    assert paired_gain([_run(["a"], [1.0])], [_run(["b"], [0.0])]) is None
