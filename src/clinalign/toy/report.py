"""The quickstart's ``summary.json`` and self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from clinalign.utils.io import atomic_write_text, write_json

PRIMITIVES = ("vdc", "ccs", "dd", "sfs")
_LABELS = {
    "real": "real test images",
    "zero_shot": "zero-shot base model",
    "lora": "LoRA baseline",
    "ti": "textual inversion",
    "ti_lora": "TI+LoRA",
    "dpo": "Diffusion-DPO",
    "craft": "CRAFT",
}
#: the Table-1 baselines besides zero-shot and LoRA (``clinalign quickstart --baselines all``)
_EXTRA_BASELINES = ("ti", "ti_lora", "dpo")


def _stats(scores: Any, tail: Any | None) -> dict[str, Any]:
    means = scores.means()
    out: dict[str, Any] = {"n": len(scores), "cas_mean": float(np.mean(scores.cas))}
    for name in PRIMITIVES:
        out[f"{name}_mean"] = means.get(name)
    if tail is not None:
        out.update(
            frac_below_tau=tail.frac_below,
            frac_below_tau_ci=list(tail.frac_below_ci),
            p10=tail.p10,
            p10_ci=list(tail.p10_ci),
            cas_mean_ci=list(tail.mean_ci),
        )
    return out


def _per_prompt_cas(runs: list[Any]) -> dict[str, float]:
    """Mean CAS per paired real image (``ref_id``) over a method's runs (seeds)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for ref, cas in zip(run.scores.extra.get("ref_id", []), run.scores.cas, strict=True):
            if ref:
                values.setdefault(str(ref), []).append(float(cas))
    return {ref: float(np.mean(v)) for ref, v in values.items()}


def paired_gain(
    runs: list[Any], baseline_runs: list[Any], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any] | None:
    """CAS of a method minus a baseline's on the *same* held-out prompts, with a bootstrap CI over prompts.

    Both methods generate for the same prompts, so the per-prompt difference removes the variation
    between prompts that dominates the two methods' separate intervals. ``None`` when no prompts pair up.
    """
    method, baseline = _per_prompt_cas(runs), _per_prompt_cas(baseline_runs)
    common = sorted(set(method) & set(baseline))
    if not common:
        return None
    from clinalign.scoring.functional import bootstrap_ci

    diffs = np.array([method[r] - baseline[r] for r in common])
    ci = bootstrap_ci(lambda d: d.mean(axis=1), [diffs], n_boot=n_boot, seed=seed, level=level)
    return {
        "mean": float(diffs.mean()),
        "ci": list(ci),
        "ci_level": level,
        "n_prompts": len(common),
        "frac_prompts_improved": float(np.mean(diffs > 0)),
    }


def summarize(
    report: Any,
    *,
    probe_accuracy: dict[str, float | None],
    config: dict[str, Any],
    timings: dict[str, float],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The numbers a reader of the quickstart wants, from a :class:`~clinalign.scoring.CASReport`."""
    from clinalign.scoring import CASScores

    methods: dict[str, Any] = {"real": _stats(report.real, report.real_tail)}
    seeds: dict[str, list[dict[str, Any]]] = {}
    per_class: dict[str, dict[str, float]] = {}
    for method, runs in report.runs.items():
        pooled = CASScores.concat([run.scores for run in runs])
        methods[method] = _stats(pooled, report.tails.get(method))
        seeds[method] = [{"run": run.run, **_stats(run.scores, None)} for run in runs]
        if len(runs) > 1:
            per_seed = np.array([np.mean(run.scores.cas) for run in runs])
            methods[method]["cas_mean_over_seeds"] = float(per_seed.mean())
            methods[method]["cas_std_over_seeds"] = float(per_seed.std(ddof=1))
            methods[method]["n_seeds"] = len(runs)
        labels = np.array(pooled.labels)
        per_class[method] = {c: float(np.mean(pooled.cas[labels == c])) for c in sorted(set(pooled.labels))}
    real_labels = np.array(report.real.labels)
    per_class["real"] = {c: float(np.mean(report.real.cas[real_labels == c])) for c in sorted(set(report.real.labels))}
    craft, zero, lora = methods.get("craft"), methods.get("zero_shot"), methods.get("lora")
    checks = {}
    if craft and zero and lora:
        checks = {
            "craft_cas_above_zero_shot": craft["cas_mean"] > zero["cas_mean"],
            "craft_cas_above_lora": craft["cas_mean"] > lora["cas_mean"],
            "craft_frac_below_tau_under_zero_shot": craft["frac_below_tau"] < zero["frac_below_tau"],
            "craft_frac_below_tau_under_lora": craft["frac_below_tau"] < lora["frac_below_tau"],
        }
    paired: dict[str, Any] = {}
    comparisons = [("lora", "zero_shot"), ("craft", "zero_shot"), ("craft", "lora")]
    comparisons += [("craft", b) for b in _EXTRA_BASELINES]
    for method, baseline in comparisons:
        if method in report.runs and baseline in report.runs:
            gain = paired_gain(report.runs[method], report.runs[baseline], n_boot=n_boot, seed=seed)
            if gain is not None:
                paired[f"{method}_vs_{baseline}"] = gain
    return {
        "tau": report.tau,
        "tau_quantile": report.real_tail.q,
        "cas_definition": report.cas_definition,
        "notes": list(report.notes),
        "leakage": list(report.leakage),
        "evaluator": report.evaluator,
        "probe_accuracy_on_real_test": probe_accuracy,
        "methods": methods,
        "seeds": seeds,
        "per_class_cas": per_class,
        "paired_cas_gain": paired,
        "checks": checks,
        "timings_seconds": timings,
        "config": config,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The one-screen console table of a quickstart summary."""
    lines = [
        f"{'method':<22}{'n':>5}{'VDC':>8}{'CCS':>8}{'DD':>8}{'SFS':>8}{'CAS':>16}{'< τ':>8}{'P10':>8}",
        "-" * 91,
    ]
    for name, m in summary["methods"].items():
        cas = f"{m['cas_mean']:.3f}"
        if "cas_std_over_seeds" in m:
            cas += f" ± {m['cas_std_over_seeds']:.3f}"
        values = [_fmt(m.get(f"{p}_mean")) for p in PRIMITIVES]
        lines.append(
            f"{_LABELS.get(name, name):<22}{m['n']:>5}{values[0]:>8}{values[1]:>8}{values[2]:>8}{values[3]:>8}"
            f"{cas:>16}{_fmt(m.get('frac_below_tau')):>8}{_fmt(m.get('p10')):>8}"
        )
    lines.append(f"τ = {summary['tau']:.4f} ({summary['tau_quantile']:.2f}-quantile of the real test images' CAS)")
    for key, gain in summary.get("paired_cas_gain", {}).items():
        method, baseline = key.split("_vs_")
        lo, hi = gain["ci"]
        lines.append(
            f"CAS gain of {_LABELS.get(method, method)} over {_LABELS.get(baseline, baseline)} on the same "
            f"{gain['n_prompts']} prompts: {gain['mean']:+.3f} ({gain['ci_level']:.0%} CI {lo:+.3f} to {hi:+.3f})"
        )
    for check, passed in summary.get("checks", {}).items():
        lines.append(f"{check.replace('_', ' ')}: {'yes' if passed else 'NO'}")
    lines += _evaluation_lines(summary.get("evaluation") or {})
    return "\n".join(lines)


def _evaluation_lines(evaluation: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per evaluation check in the console summary (the report has the full tables)."""
    lines = []
    if "fd" in evaluation:
        lines.append(
            "FD to real test images (evaluator space): "
            + ", ".join(f"{_LABELS.get(r['method'], r['method'])} {r['fd']:.4f}" for r in evaluation["fd"])
        )
    if "diversity" in evaluation:
        rows = evaluation["diversity"]
        kind = "LPIPS" if rows and rows[0]["distance"].startswith("lpips") else "embedding cosine distance"
        lines.append(
            f"prompt-level diversity ({kind}): "
            + ", ".join(f"{_LABELS.get(r['method'], r['method'])} {r['diversity_mean']:.4f}" for r in rows)
        )
    if "memorization" in evaluation:
        lines.append(
            "memorization (SSIM > 0.95 or pHash ≤ 5 to a training image): "
            + ", ".join(
                f"{_LABELS.get(r['method'], r['method'])} {r['n_flagged']}/{r['n']} flagged, "
                f"max SSIM {r['max_ssim']:.3f}"
                for r in evaluation["memorization"]
            )
        )
    if "silhouette" in evaluation:
        lines.append(
            "class silhouette (cosine, evaluator space): "
            + ", ".join(
                f"{_LABELS.get(r['set'], r['set'])} {r['silhouette_cosine']:.3f}" for r in evaluation["silhouette"]
            )
        )
    return lines


def _png_data_uri(path_or_image: Any) -> str:
    if isinstance(path_or_image, (str, Path)):
        data = Path(path_or_image).read_bytes()
    else:
        buffer = io.BytesIO()
        path_or_image.save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def class_grid(
    sets: dict[str, tuple[list[Path], list[str]]], classes: list[str], *, per_class: int = 6, scale: int = 3
):
    """One PNG: a row per class, a block of ``per_class`` images per set (real, then each method)."""
    from PIL import Image, ImageDraw

    images = {}
    tile = None
    for name, (paths, labels) in sets.items():
        for label in classes:
            chosen = [p for p, lab in zip(paths, labels, strict=True) if lab == label][:per_class]
            loaded = [Image.open(p).convert("RGB") for p in chosen]
            if loaded and tile is None:
                tile = loaded[0].size[0] * scale
            images[(name, label)] = loaded
    tile = tile or 32 * scale
    gap, label_w, head_h = 6, 150, 22
    block = per_class * tile + gap
    width = label_w + block * len(sets)
    height = head_h + len(classes) * (tile + gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(sets):
        draw.text((label_w + j * block + 4, 4), _LABELS.get(name, name), fill="black")
    for i, label in enumerate(classes):
        y = head_h + i * (tile + gap)
        draw.text((4, y + tile // 2 - 6), label, fill="black")
        for j, name in enumerate(sets):
            for k, image in enumerate(images.get((name, label), [])):
                canvas.paste(image.resize((tile, tile), Image.Resampling.NEAREST), (label_w + j * block + k * tile, y))
    return canvas


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(values: Any) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]" if values else ""


def write_report(
    report: Any, summary: dict[str, Any], out_dir: str | Path, *, real_images: tuple[list[Path], list[str]]
) -> Path:
    """Write ``report.html`` (images embedded, no external files) and ``summary.json`` into ``out_dir``.

    ``real_images`` are the real test images (paths, labels) shown beside the samples of each method.
    """
    out = Path(out_dir)
    methods = summary["methods"]
    known = ("real", "zero_shot", "lora", *_EXTRA_BASELINES, "craft")
    order = [m for m in known if m in methods] + [m for m in methods if m not in known]
    rows = []
    for name in order:
        m = methods[name]
        cas = _fmt(m["cas_mean"])
        if "cas_std_over_seeds" in m:
            cas += f" ± {m['cas_std_over_seeds']:.3f} ({m['n_seeds']} seeds)"
        rows.append(
            [
                _LABELS.get(name, name),
                str(m["n"]),
                *[_fmt(m.get(f"{p}_mean")) for p in PRIMITIVES],
                cas,
                _fmt(m.get("frac_below_tau")) + " " + _ci(m.get("frac_below_tau_ci")),
                _fmt(m.get("p10")),
            ]
        )
    main_table = _table(rows, ["method", "n", "VDC", "CCS", "DD", "SFS", "CAS", "fraction < τ (95% CI)", "P10"])
    classes = sorted(summary["per_class_cas"].get("real", {}))
    class_rows = [
        [_LABELS.get(name, name), *[_fmt(summary["per_class_cas"][name].get(c)) for c in classes]] for name in order
    ]
    class_table = _table(class_rows, ["method", *classes])

    sets = {"real": real_images}
    for name in order:
        if name == "real":
            continue
        first = report.runs[name][0]
        sets[name] = (list(first.image_set.paths), list(first.image_set.labels))
    grid = class_grid(sets, classes)
    figures = []
    for key, caption in (
        ("ecdf", "Empirical CDF of per-image CAS; the shaded region lies below τ."),
        ("primitives", "Per-primitive distributions."),
        ("lowest", "Lowest-CAS samples per method: the failure cases to look at."),
    ):
        path = report.files.get(key)
        if path and Path(path).is_file():
            figures.append(f'<figure><img src="{_png_data_uri(path)}"><figcaption>{caption}</figcaption></figure>')
    checks = summary.get("checks", {})
    verdict = ""
    if checks:
        ok = all(checks.values())
        items = "".join(
            f"<li>{html.escape(k.replace('_', ' '))}: <b>{'yes' if v else 'no'}</b></li>" for k, v in checks.items()
        )
        verdict = f'<div class="{"ok" if ok else "bad"}"><ul>{items}</ul></div>'
    gain_rows = []
    for key, gain in summary.get("paired_cas_gain", {}).items():
        method, baseline = key.split("_vs_")
        gain_rows.append(
            [
                f"{_LABELS.get(method, method)} − {_LABELS.get(baseline, baseline)}",
                str(gain["n_prompts"]),
                f"{gain['mean']:+.3f}",
                f"[{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]",
                _fmt(gain["frac_prompts_improved"]),
            ]
        )
    gain_table = (
        "<h2>Paired CAS gains (same held-out prompts)</h2>"
        + _table(gain_rows, ["comparison", "prompts", "mean CAS gain", "95% CI", "fraction of prompts improved"])
        if gain_rows
        else ""
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes", []) + summary.get("leakage", []))
    probe = summary.get("probe_accuracy_on_real_test", {})
    # checks the quickstart ran with `clinalign.evaluation` (written under cas/evaluation/<check>/)
    from clinalign.evaluation.report import collect_results, evaluation_html

    evaluation_section = evaluation_html(collect_results(out / "cas" / "evaluation"))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clinalign quickstart report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }} figure img {{ max-width: 100%; }}
.ok {{ background: #e8f6e8; padding: .2em 1em; }} .bad {{ background: #fbeaea; padding: .2em 1em; }}
code {{ background: #f4f4f4; padding: 1px 3px; }}
</style></head><body>
<h1>clinalign quickstart: CRAFT on the toy clinical world</h1>
<p>Generated images for {methods.get("real", {}).get("n", "?")} held-out test prompts, scored with the
<b>evaluator</b> critic (<code>{html.escape(str(summary["evaluator"].get("name")))}</code>),
which never trained the generator.
τ = {summary["tau"]:.4f} is the {summary["tau_quantile"]:.2f}-quantile of the real test images' CAS.
{html.escape(summary["cas_definition"])}.</p>
<p>DD probe accuracy on real test images: training critic {_fmt(probe.get("training_critic"))},
evaluator {_fmt(probe.get("evaluator"))}.</p>
{verdict}
<h2>Methods</h2>{main_table}
{gain_table}
<h2>CAS per class</h2>{class_table}
<h2>Real images and samples per class</h2>
<figure><img src="{_png_data_uri(grid)}"><figcaption>Each row a class; blocks left to right:
{", ".join(_LABELS.get(n, n) for n in sets)}.</figcaption></figure>
{"".join(figures)}
{evaluation_section}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<p>Numbers: <code>summary.json</code>; per-image scores: <code>cas/per_image.csv</code>;
tables: <code>cas/tables.md</code>.</p>
</body></html>
"""
    path = out / "report.html"
    atomic_write_text(path, page)
    write_json(out / "summary.json", summary)
    return path
