"""`clinalign quickstart --baselines all`: the other Table-1 rows (TI, TI+LoRA, Diffusion-DPO) on the toy, tiny."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clinalign.toy.quickstart import QuickstartConfig, run_quickstart


@pytest.fixture(scope="module")
def baselines_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs_baselines") / "run"
    config = QuickstartConfig(
        out_dir=str(out),
        fast=True,
        progress=False,
        baselines="all",
        n_train=32,
        n_test=8,
        craft_steps=2,
        ti_steps=2,
        dpo_steps=2,
        dpo_prompts=4,
        dpo_samples=3,
        craft_seeds=[0],
        n_boot=20,
        evaluation=False,
    )
    return run_quickstart(config, log=lambda _: None)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_table1_row_is_scored_with_paired_gains(baselines_run):
    summary = baselines_run.summary
    assert list(summary["methods"]) == ["real", "zero_shot", "lora", "ti", "ti_lora", "dpo", "craft"]
    gains = summary["paired_cas_gain"]
    per_image = list(csv.DictReader((baselines_run.out_dir / "cas" / "per_image.csv").open()))
    for baseline in ("ti", "ti_lora", "dpo"):
        assert summary["methods"][baseline]["n"] == 8
        # the paired gain equals an independent computation from the per-image CAS
        cas = {m: {r["ref_id"]: float(r["cas"]) for r in per_image if r["method"] == m} for m in ("craft", baseline)}
        expected = np.mean([cas["craft"][ref] - cas[baseline][ref] for ref in cas["craft"]])
        assert gains[f"craft_vs_{baseline}"]["mean"] == pytest.approx(expected, abs=1e-9)
        assert gains[f"craft_vs_{baseline}"]["n_prompts"] == 8


def test_ti_methods_generate_with_their_class_tokens(baselines_run):
    methods = baselines_run.out_dir / "methods"
    meta = json.loads((methods / "ti" / "textual_inversion" / "clinalign_meta.json").read_text())
    tokens = meta["textual_inversion"]["placeholder_tokens"]
    assert sorted(tokens) == sorted({r["label"] for r in _rows(methods / "ti" / "gen" / "manifest.jsonl")})
    for method in ("ti", "ti_lora"):
        for row in _rows(methods / method / "gen" / "manifest.jsonl"):
            # the model saw the class token; scoring reads the enriched prompt, as for every other method
            assert row["model_prompt"] == f"{tokens[row['label']]}, {row['prompt']}"
    assert (methods / "ti_lora" / "lora" / "textual_inversion").is_dir()
    assert json.loads((methods / "ti_lora" / "lora" / "clinalign_meta.json").read_text())["method"] == "ti_lora"


def test_dpo_pairs_prefer_the_higher_judged_sample(baselines_run):
    methods = baselines_run.out_dir / "methods"
    pairs = _rows(methods / "dpo" / "pairs" / "pairs.jsonl")
    assert 1 <= len(pairs) <= 4
    for pair in pairs:
        assert pair["chosen_score"] > pair["rejected_score"]
        assert pair["chosen"] != pair["rejected"]
    assert json.loads((methods / "dpo" / "lora" / "clinalign_meta.json").read_text())["method"] == "dpo"
