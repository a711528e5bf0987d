"""`clinalign quickstart --fast` end to end on the shipped toy models, checked against its own CSVs."""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest
import torch

from clinalign.cli import main
from clinalign.toy.quickstart import QuickstartConfig, run_quickstart


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    # the suite's largest item: run it on both cores (the rest of the suite keeps one thread, see conftest), as a
    # user's `clinalign quickstart --fast` would; docs/toy.md's fast table has this setting (torch 2.14.1, 2 threads)
    out = tmp_path_factory.mktemp("quickstart")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        result = run_quickstart(QuickstartConfig(out_dir=str(out), fast=True, progress=False), log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return out, result


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_quickstart_writes_the_report(quickstart_run):
    out, result = quickstart_run
    for name in ("report.html", "summary.json", "cas/per_image.csv", "cas/real_per_image.csv", "cas/ecdf.png"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    # self-contained: every image is embedded
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) >= 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"real", "zero_shot", "lora", "craft"}
    for method in summary["methods"].values():
        for key in ("cas_mean", "frac_below_tau", "p10", "n", "vdc_mean", "ccs_mean", "dd_mean", "sfs_mean"):
            assert key in method
    assert summary["methods"]["zero_shot"]["n"] == result.summary["config"]["n_test"]
    # the evaluator's probe separates the classes on real test images, far above chance (0.25)
    assert summary["probe_accuracy_on_real_test"]["evaluator"] > 0.9
    assert summary["probe_accuracy_on_real_test"]["training_critic"] > 0.9
    assert summary["leakage"] == []


def test_summary_numbers_match_an_independent_computation(quickstart_run):
    out, result = quickstart_run
    summary = result.summary
    real = np.array([float(r["cas"]) for r in _rows(out / "cas" / "real_per_image.csv")])
    tau = float(np.quantile(real, 0.25))
    assert summary["tau"] == pytest.approx(tau, abs=1e-9)
    assert summary["methods"]["real"]["cas_mean"] == pytest.approx(real.mean(), abs=1e-9)
    by_method: dict[str, list[float]] = {}
    for row in _rows(out / "cas" / "per_image.csv"):
        by_method.setdefault(row["method"], []).append(float(row["cas"]))
    for method, values in by_method.items():
        values = np.array(values)
        stats = summary["methods"][method]
        assert stats["cas_mean"] == pytest.approx(values.mean(), abs=1e-9)
        assert stats["frac_below_tau"] == pytest.approx(float((values < tau).mean()), abs=1e-9)
        assert stats["p10"] == pytest.approx(float(np.percentile(values, 10)), abs=1e-9)


def test_rerun_resumes_and_cli_prints_the_summary(quickstart_run, capsys):
    out, result = quickstart_run
    with pytest.raises(SystemExit) as exit_info:
        main(["quickstart", "--fast", "--out", str(out), "--no-progress"])
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "CRAFT" in printed and "τ =" in printed and "report.html" in printed
    again = json.loads((out / "summary.json").read_text())
    for method in ("zero_shot", "lora", "craft"):
        assert again["methods"][method]["cas_mean"] == pytest.approx(result.summary["methods"][method]["cas_mean"])
    # nothing was retrained or regenerated
    assert again["timings_seconds"]["craft"] < 5 and again["timings_seconds"]["zero_shot"] < 5


def test_craft_beats_the_zero_shot_baseline_on_the_same_prompts(quickstart_run):
    out, result = quickstart_run
    summary = result.summary
    craft, zero = summary["methods"]["craft"], summary["methods"]["zero_shot"]
    gain = summary["paired_cas_gain"]["craft_vs_zero_shot"]
    print(
        f"\nevaluator CAS: zero-shot {zero['cas_mean']:.3f}, LoRA {summary['methods']['lora']['cas_mean']:.3f}, "
        f"CRAFT {craft['cas_mean']:.3f}; paired gain {gain['mean']:+.3f} CI {gain['ci']}"
    )
    # the paired gain, recomputed independently from the per-image CSV (same ref_id = same prompt)
    per_prompt: dict[str, dict[str, float]] = {}
    for row in _rows(out / "cas" / "per_image.csv"):
        per_prompt.setdefault(row["method"], {})[row["ref_id"]] = float(row["cas"])
    diffs = [per_prompt["craft"][ref] - per_prompt["zero_shot"][ref] for ref in per_prompt["zero_shot"]]
    assert gain["mean"] == pytest.approx(np.mean(diffs), abs=1e-9)
    assert gain["n_prompts"] == len(diffs) == summary["config"]["n_test"]
    assert craft["cas_mean"] > zero["cas_mean"]
    # not a coincidence of sampling noise: the 95% bootstrap interval over prompts excludes zero
    assert gain["ci"][0] > 0


def test_every_printed_check_holds_on_the_fast_run(quickstart_run):
    # the four conclusions the console prints, each recomputed from the per-image CSVs: CRAFT's mean CAS is above
    # both baselines' and fewer of its images fall below τ (the real test images' 0.25-quantile)
    out, result = quickstart_run
    real = np.array([float(r["cas"]) for r in _rows(out / "cas" / "real_per_image.csv")])
    tau = float(np.quantile(real, 0.25))
    cas: dict[str, list[float]] = {}
    for row in _rows(out / "cas" / "per_image.csv"):
        cas.setdefault(row["method"], []).append(float(row["cas"]))
    mean = {m: float(np.mean(v)) for m, v in cas.items()}
    below = {m: float((np.array(v) < tau).mean()) for m, v in cas.items()}
    print(f"\nimages at or above τ: { {m: int(sum(x >= tau for x in v)) for m, v in cas.items()} }")
    expected = {
        "craft_cas_above_zero_shot": mean["craft"] > mean["zero_shot"],
        "craft_cas_above_lora": mean["craft"] > mean["lora"],
        "craft_frac_below_tau_under_zero_shot": below["craft"] < below["zero_shot"],
        "craft_frac_below_tau_under_lora": below["craft"] < below["lora"],
    }
    assert result.summary["checks"] == expected
    assert all(expected.values()), expected


def test_quickstart_runs_the_evaluation_checks(quickstart_run):
    from clinalign.critics import load_critic
    from clinalign.critics.embed import embed_image_files
    from clinalign.evaluation.functional import frechet_distance
    from clinalign.toy import paths

    out, result = quickstart_run
    evaluation = result.summary["evaluation"]
    assert set(evaluation) == {"fd", "diversity", "memorization", "silhouette"}
    assert {r["method"] for r in evaluation["fd"]} == {"zero_shot", "lora", "craft"}
    assert {r["set"] for r in evaluation["silhouette"]} == {"real", "zero_shot", "lora", "craft"}
    assert all(r["distance"] == "embedding_cosine" and r["samples_per_prompt"] == 4 for r in evaluation["diversity"])
    assert "Evaluation beyond CAS" in (out / "report.html").read_text()
    assert "## Evaluation beyond CAS" in (out / "cas" / "tables.md").read_text()
    # FD recomputed from scratch: the evaluator embeds the real test images and the zero-shot set
    evaluator = load_critic(paths.evaluator_critic_dir(), device="cpu")
    real = [r["image"] for r in _rows_jsonl(out / "enrich" / "test_prompts.jsonl")]
    gen_dir = out / "methods" / "zero_shot" / "gen"
    generated = [gen_dir / r["file"] for r in _rows_jsonl(gen_dir / "manifest.jsonl")]
    expected = frechet_distance(
        embed_image_files(evaluator, real, progress=False), embed_image_files(evaluator, generated, progress=False)
    )
    fd = next(r["fd"] for r in evaluation["fd"] if r["method"] == "zero_shot")
    assert fd == pytest.approx(expected, rel=1e-4)


def _rows_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("craft", "scheduler"), [(True, "cosine"), (True, "constant"), (False, "cosine")])
def test_craft_lr_schedule_reaches_the_trainer(craft, scheduler, tmp_path, monkeypatch):
    # the schedule (with a warmup of a tenth of the steps) applies to CRAFT only; the LoRA baseline stays constant
    import clinalign.training
    from clinalign.toy import quickstart as qs

    seen = {}

    class Recorder:
        def __init__(self, *, model, rewards, config, train_data):
            seen["config"] = config
            raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(clinalign.training, "DraftKTrainer", Recorder)
    cfg = QuickstartConfig(out_dir=str(tmp_path), fast=True, craft_steps=40, craft_lr_scheduler=scheduler).resolved()
    with pytest.raises(KeyboardInterrupt):
        qs._train_lora(cfg, name="m", seed=0, rewards=[] if craft else None, train_rows=[], out=tmp_path / "m")
    config = seen["config"]
    if craft:
        assert config.lr_scheduler == scheduler
        assert config.lr_warmup_steps == (4 if scheduler == "cosine" else 0)
        assert config.learning_rate == cfg.craft_learning_rate
    else:
        assert (config.lr_scheduler, config.lr_warmup_steps) == ("constant", 0)
        assert config.learning_rate == cfg.lora_learning_rate


def test_a_rerun_with_other_settings_is_refused_before_any_work(tmp_path, capsys):
    # a folder from an earlier run with other settings (here: the 60-step --fast of earlier releases) would have its
    # finished steps reused under the new settings; the rerun is refused, naming each changed setting
    from clinalign.errors import ConfigError
    from clinalign.toy.quickstart import _check_same_settings

    cfg = QuickstartConfig(out_dir=str(tmp_path), fast=True, progress=False)
    saved = cfg.resolved().model_dump()
    saved.update(craft_steps=60, lora_steps=60)
    (tmp_path / "quickstart_config.json").write_text(json.dumps(saved))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match=r"craft_steps: 60 -> 120; lora_steps: 60 -> 120\)"):
        run_quickstart(cfg, log=lambda _: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["quickstart", "--fast", "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "craft_steps: 60 -> 120" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # how the run is shown, or adding the extra baselines, is no reason to refuse
    same = cfg.resolved().model_copy(update={"progress": True, "baselines": "all"})
    (tmp_path / "quickstart_config.json").write_text(json.dumps(cfg.resolved().model_dump()))
    _check_same_settings(tmp_path / "quickstart_config.json", same)
