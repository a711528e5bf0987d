"""The "evaluation beyond CAS" section of the ``score-cas`` and quickstart reports.

The checks write ``<check>.json`` (with a ``_check`` stamp) into their ``--out`` folders; the reports
look for them under one folder (``OUT/evaluation/<check>/`` by convention) and show one small table
per check found, so a report includes the checks that were run and nothing else.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

# check -> (title, columns shown: (key, header)), in report order
_TABLES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "fd": (
        "Fréchet distance to the real test images (lower is closer)",
        [
            ("method", "method"),
            ("encoder", "encoder"),
            ("n_generated", "n"),
            ("fd", "FD"),
            ("image_image_cosine_sfs", "img–img cos (SFS)"),
            ("prompt_image_cosine_vdc", "prompt–img cos (VDC)"),
        ],
    ),
    "kid": (
        "Kernel distance (KID) to the real test images (lower is closer)",
        [("method", "method"), ("encoder", "encoder"), ("kid_mean", "KID"), ("kid_std", "± std")],
    ),
    "diversity": (
        "Prompt-level diversity (higher is more diverse)",
        [
            ("method", "method"),
            ("distance", "distance"),
            ("n_prompts", "prompts"),
            ("samples_per_prompt", "samples/prompt"),
            ("diversity_mean", "mean"),
            ("diversity_std", "std"),
        ],
    ),
    "memorization": (
        "Memorization: nearest training image",
        [
            ("method", "method"),
            ("n", "n"),
            ("n_flagged", "flagged"),
            ("max_ssim", "max SSIM"),
            ("min_phash_hamming", "min pHash dist."),
            ("mean_d_train", "d_train"),
            ("mean_d_test", "d_test"),
            ("delta_d", "Δ = d_test − d_train"),
        ],
    ),
    "silhouette": (
        "Class separability: cosine silhouette of evaluator embeddings (higher is better separated)",
        [("set", "set"), ("n", "n"), ("n_classes", "classes"), ("silhouette_cosine", "silhouette")],
    ),
    "preference": (
        "Preference study: top-1 rate and Bradley–Terry score (95% CI over cases)",
        [
            ("method", "method"),
            ("top1_rate", "top-1"),
            ("top1_ci_low", "low"),
            ("top1_ci_high", "high"),
            ("bt_score", "BT"),
            ("bt_ci_low", "low"),
            ("bt_ci_high", "high"),
        ],
    ),
    "downstream": (
        "Downstream utility: linear head, real + synthetic training data",
        [
            ("method", "method"),
            ("scale", "real fraction"),
            ("accuracy_mean", "accuracy"),
            ("macro_f1_mean", "macro-F1"),
            ("accuracy_gain_vs_real_only", "gain vs real only"),
        ],
    ),
    "judge": (
        "MLLM judge: checklist pass rates",
        [("method", "method"), ("label", "class"), ("attribute", "attribute"), ("pass_rate", "pass rate")],
    ),
}


def collect_results(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Check name -> its JSON summary, for every ``<check>.json`` in ``folder`` or one level below it."""
    folder = Path(folder)
    found: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return found
    for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        if path.stem not in _TABLES:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a damaged or foreign file is left out of the report, never fatal
        if isinstance(data, dict) and data.get("_check") == path.stem:
            data["_path"] = str(path)
            found[path.stem] = data
    return {check: found[check] for check in _TABLES if check in found}


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table_rows(check: str, summary: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    title, columns = _TABLES[check]
    rows = summary.get("results") or []
    if check == "judge" and "audit" in summary:
        rows = [
            {"method": m, "label": "all", "attribute": "all", "pass_rate": r}
            for m, r in summary["audit"]["pass_rate_per_method"].items()
        ]
    return title, [h for _, h in columns], [[_cell(row.get(k)) for k, _ in columns] for row in rows]


def _notes(check: str, summary: dict[str, Any]) -> list[str]:
    notes = []
    for key in ("definition", "search"):
        if summary.get(key):
            notes.append(str(summary[key]))
    for key in ("cas_bt_correlation", "cas_gain_correlation"):
        corr = summary.get(key)
        if corr:
            notes.append(
                f"{'CAS vs BT' if key == 'cas_bt_correlation' else 'CAS vs accuracy gain'}: Pearson r = "
                f"{corr['pearson_r']:.3f} (p = {corr['pearson_p']:.3g}), Spearman ρ = {corr['spearman_rho']:.3f} "
                f"(p = {corr['spearman_p']:.3g}), n = {corr['n']} methods"
            )
    return notes


def evaluation_markdown(results: dict[str, dict[str, Any]]) -> str:
    """The section as Markdown (empty string when there are no results)."""
    if not results:
        return ""
    parts = ["## Evaluation beyond CAS", ""]
    for check, summary in results.items():
        title, header, rows = _table_rows(check, summary)
        parts += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        parts += ["| " + " | ".join(r) + " |" for r in rows]
        parts += [""] + [f"- {n}" for n in _notes(check, summary)] + [""]
    return "\n".join(parts)


def evaluation_html(results: dict[str, dict[str, Any]], *, embed_png: bool = True) -> str:
    """The section as HTML, each check's PNG embedded (the quickstart report is one self-contained file)."""
    if not results:
        return ""
    import base64

    parts = ["<h2>Evaluation beyond CAS</h2>"]
    for check, summary in results.items():
        title, header, rows = _table_rows(check, summary)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        parts.append(f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(check, summary))
        if notes:
            parts.append(f"<ul>{notes}</ul>")
        png = Path(summary["_path"]).with_suffix(".png")
        if embed_png and png.is_file():
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}"></figure>')
    return "\n".join(parts)
