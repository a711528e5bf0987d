"""``preference``: a blinded ranking study kit and its analysis.

``export`` picks, for each case (a held-out prompt every method generated for), one image per method,
shuffles them under letters A, B, C, ... and writes one grid per case, a ranking sheet to fill in and a
**sealed** answer key (kept apart from what raters see; the kit records its SHA-256 so the import can check
it was not swapped). ``import`` reads the filled strict rankings (one row per rater × case), un-blinds them
with the key, and reports per method the top-1 rate and the Bradley–Terry score, each with a 95%
bootstrap CI over cases, plus the correlation of BT scores with method CAS (from a ``score-cas``
``summary.json``) when given.
"""

from __future__ import annotations

import csv
import hashlib
import re
import string
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clinalign import __version__
from clinalign.errors import ConfigError, DataError
from clinalign.evaluation.common import CheckResult, figure, save_figure, write_result, write_rows
from clinalign.evaluation.functional import bradley_terry_ci, correlations, top1_rates
from clinalign.evaluation.inputs import MethodImages, read_methods
from clinalign.utils.io import atomic_write_text, read_json, write_json

KEY_NAME = "answer_key.json"
KIT_NAME = "kit.json"
SHEET_NAME = "rankings.csv"


class PreferenceExportConfig(BaseModel):
    """Settings of ``clinalign evaluate preference export``."""

    model_config = ConfigDict(extra="forbid")

    methods: dict[str, list[str]] = Field(
        description="Method name -> generated sets (the first image per case is used)."
    )
    n_cases: int | None = Field(None, ge=1, description="Cases to sample (default: every case all methods share).")
    raters: list[str] = Field(default_factory=lambda: ["rater1"], description="Rater ids pre-filled in the sheet.")
    seed: int = Field(0, description="Seed of the case sample and the letter shuffles.")
    tile: int = Field(256, ge=32, description="Side of each image in a grid, in pixels.")
    out: str = Field(description="Output directory (the kit); the key goes to OUT/sealed/.")


class PreferenceImportConfig(BaseModel):
    """Settings of ``clinalign evaluate preference import``."""

    model_config = ConfigDict(extra="forbid")

    rankings: str = Field(description="Filled rankings CSV: rater, case, ranking (e.g. 'C>A>B>E>D').")
    key: str = Field(description="The sealed answer_key.json written by export.")
    cas_summary: str | None = Field(None, description="A score-cas summary.json: correlate BT scores with CAS.")
    n_boot: int = Field(1000, ge=2, description="Bootstrap resamples (over cases).")
    seed: int = Field(0, description="Bootstrap seed.")
    out: str = Field(description="Output directory.")


def _case_keys(group: MethodImages) -> dict[str, int]:
    """Case key -> first image index: the paired real image (ref_id) when every image has one, else the prompt."""
    keyed: dict[str, int] = {}
    use_ref = all(r is not None for r in group.ref_ids)
    for i, (ref, prompt) in enumerate(zip(group.ref_ids, group.prompts, strict=True)):
        keyed.setdefault(f"ref:{ref}" if use_ref else f"prompt:{prompt}", i)
    return keyed


def shared_cases(methods: dict[str, MethodImages]) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Per method: case key -> first image index; and the sorted case keys every method has."""
    keyed = {m: _case_keys(g) for m, g in methods.items()}
    common = sorted(set.intersection(*(set(k) for k in keyed.values())))
    if not common:
        raise DataError(
            "the methods share no case (no ref_id or prompt every method generated for); comparing methods needs "
            "the same held-out prompts in every set."
        )
    return keyed, common


def _grid(paths: list[Path], tile: int, letters: list[str]):
    from PIL import Image, ImageDraw

    from clinalign.data.images import load_image

    pad, caption = 8, 28
    canvas = Image.new("RGB", (len(paths) * (tile + pad) + pad, tile + caption + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (path, letter) in enumerate(zip(paths, letters, strict=True)):
        image = load_image(path).resize((tile, tile), Image.Resampling.LANCZOS)
        x = pad + i * (tile + pad)
        canvas.paste(image, (x, pad))
        draw.text((x + tile // 2 - 4, pad + tile + 6), letter, fill="black")
    return canvas


def export_preference_kit(config: PreferenceExportConfig) -> CheckResult:
    """Write the blinded kit: grids/case_XXX.png, cases.csv, rankings.csv (to fill), kit.json and
    sealed/answer_key.json."""
    methods = read_methods(config.methods)
    if len(methods) < 2:
        raise ConfigError(f"a preference study compares at least 2 methods, got {len(methods)}.")
    if len(methods) > 26:
        raise ConfigError(f"at most 26 methods fit the letters A..Z, got {len(methods)}.")
    keyed, common = shared_cases(methods)
    rng = np.random.default_rng(config.seed)
    chosen = list(rng.permutation(len(common)))
    if config.n_cases is not None:
        chosen = chosen[: config.n_cases]
    out = Path(config.out)
    letters = list(string.ascii_uppercase[: len(methods)])
    names = list(methods)
    key: dict[str, dict[str, str]] = {}
    cases: list[dict[str, Any]] = []
    for number, index in enumerate(chosen, start=1):
        case = f"case_{number:03d}"
        order = [names[j] for j in rng.permutation(len(names))]
        paths = [methods[m].paths[keyed[m][common[index]]] for m in order]
        prompt = methods[order[0]].prompts[keyed[order[0]][common[index]]]
        grid_path = out / "grids" / f"{case}.png"
        from clinalign.utils.io import atomic_open

        with atomic_open(grid_path, "wb", encoding=None) as handle:
            _grid(paths, config.tile, letters).save(handle, format="PNG")
        key[case] = dict(zip(letters, order, strict=True))
        cases.append({"case": case, "prompt": prompt, "grid": f"grids/{case}.png"})
    write_rows(out / "cases.csv", cases)
    sheet = [{"rater": r, "case": c["case"], "ranking": ""} for r in config.raters for c in cases]
    write_rows(out / SHEET_NAME, sheet)
    key_payload = {"_clinalign_version": __version__, "letters": letters, "methods": names, "cases": key}
    key_path = out / "sealed" / KEY_NAME
    write_json(key_path, key_payload)
    digest = hashlib.sha256(key_path.read_bytes()).hexdigest()
    kit = {
        "_clinalign_version": __version__,
        "n_cases": len(cases),
        "letters": letters,
        "answer_key_sha256": digest,
        "instructions": (
            f"For each case, look at grids/<case>.png and rank all {len(letters)} images from best to worst "
            f"clinical match to the prompt in cases.csv, e.g. '{'>'.join(letters[::-1])}'. No ties; use every letter "
            "once. Do not open sealed/ (hand the kit out without it)."
        ),
    }
    write_json(out / KIT_NAME, kit)
    atomic_write_text(out / "README.txt", kit["instructions"] + "\n")
    summary = {"n_cases": len(cases), "methods": names, "answer_key": str(key_path), "answer_key_sha256": digest}
    result = CheckResult("preference_kit", cases, summary, out)
    result.files.update({"cases": out / "cases.csv", "sheet": out / SHEET_NAME, "key": key_path, "kit": out / KIT_NAME})
    return result


_SEPARATORS = re.compile(r"\s*[>,;\s]\s*")


def parse_ranking(text: str, letters: list[str], where: str) -> list[str]:
    """'C>A>B', 'C,A,B', 'C A B' or 'CAB' -> ['C', 'A', 'B']; ties, repeats, unknown or missing letters are errors."""
    text = (text or "").strip().upper()
    if not text:
        raise DataError(f"{where}: the ranking is empty; rank every letter {letters}, best first (e.g. 'B>A>C').")
    if "=" in text:
        raise DataError(f"{where}: ranking '{text}' has a tie ('='); rankings must be strict orders.")
    parts = [p for p in _SEPARATORS.split(text) if p]
    if len(parts) == 1 and len(parts[0]) > 1:
        parts = list(parts[0])
    unknown = [p for p in parts if p not in letters]
    if unknown:
        raise DataError(f"{where}: ranking '{text}' has unknown letters {unknown}; this case uses {letters}.")
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise DataError(f"{where}: ranking '{text}' lists {repeated} more than once (a tie); rank each letter once.")
    missing = [p for p in letters if p not in parts]
    if missing:
        raise DataError(f"{where}: ranking '{text}' is missing letters {missing}; rank all of {letters}.")
    return parts


def read_rankings(path: str | Path, key: dict[str, Any]) -> tuple[list[list[int]], list[str], list[str]]:
    """Rankings as method indices (best first), with the case and rater of each, un-blinded with ``key``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: rankings file not found.")
    methods: list[str] = key["methods"]
    cases: dict[str, dict[str, str]] = key["cases"]
    rankings, groups, raters = [], [], []
    seen: dict[tuple[str, str], int] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"rater", "case", "ranking"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}; expected rater, case, ranking.")
        for number, row in enumerate(reader, start=2):
            where = f"{path}, row {number}"
            case = (row.get("case") or "").strip()
            rater = (row.get("rater") or "").strip()
            if case not in cases:
                raise DataError(f"{where}: unknown case '{case}'; the answer key has cases like {sorted(cases)[:3]}.")
            if (rater, case) in seen:
                raise DataError(
                    f"{where}: rater '{rater}' ranked case '{case}' twice (first at row {seen[rater, case]})."
                )
            seen[rater, case] = number
            letters = sorted(cases[case])
            order = parse_ranking(row.get("ranking") or "", letters, where)
            rankings.append([methods.index(cases[case][letter]) for letter in order])
            groups.append(case)
            raters.append(rater)
    if not rankings:
        raise DataError(f"{path}: no rankings; fill in the 'ranking' column.")
    return rankings, groups, raters


def _method_cas(path: str | Path) -> dict[str, float]:
    summary = read_json(path)
    try:
        return {m: float(v["tail"]["mean"]) for m, v in summary["methods"].items()}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a score-cas summary.json (methods -> tail -> mean missing).") from None


def import_preference(config: PreferenceImportConfig) -> CheckResult:
    """Top-1 rates and Bradley–Terry scores per method with bootstrap CIs over cases (and the CAS–BT
    correlation); writes preference.csv/json/png."""
    key_path = Path(config.key)
    key = read_json(key_path)
    if not isinstance(key, dict) or not {"methods", "cases"} <= set(key):
        raise DataError(f"{key_path}: not an answer key written by `clinalign evaluate preference export`.")
    kit_path = Path(config.rankings).parent / KIT_NAME
    if kit_path.is_file():
        expected = read_json(kit_path).get("answer_key_sha256")
        actual = hashlib.sha256(key_path.read_bytes()).hexdigest()
        if expected and expected != actual:
            raise DataError(
                f"{key_path}: this answer key does not belong to the kit at {kit_path} (SHA-256 differs); "
                "use the key written with this kit."
            )
    rankings, groups, raters = read_rankings(config.rankings, key)
    methods: list[str] = key["methods"]
    n = len(methods)
    top1 = top1_rates(rankings, n, groups=groups, n_boot=config.n_boot, seed=config.seed)
    bt = bradley_terry_ci(rankings, n, groups=groups, n_boot=config.n_boot, seed=config.seed)
    rows = [
        {
            "method": m,
            "top1_rate": float(top1.estimate[i]),
            "top1_ci_low": float(top1.lower[i]),
            "top1_ci_high": float(top1.upper[i]),
            "bt_score": float(bt.estimate[i]),
            "bt_ci_low": float(bt.lower[i]),
            "bt_ci_high": float(bt.upper[i]),
        }
        for i, m in enumerate(methods)
    ]
    correlation = None
    if config.cas_summary is not None:
        cas = _method_cas(config.cas_summary)
        unknown = [m for m in methods if m not in cas]
        if unknown:
            raise DataError(f"{config.cas_summary}: no CAS for methods {unknown} (it has {sorted(cas)}).")
        for row in rows:
            row["cas_mean"] = cas[row["method"]]
        if n >= 3:
            correlation = correlations([cas[m] for m in methods], bt.estimate)
    summary = {
        "n_rankings": len(rankings),
        "n_cases": len(set(groups)),
        "n_raters": len(set(raters)),
        "ci": f"{bt.level:.0%} percentile bootstrap over cases ({config.n_boot} resamples)",
        "bt_definition": "Bradley–Terry log-strengths (mean 0, higher = preferred), MM fit on the pairwise wins "
        "each strict ranking implies, 0.1 virtual wins per pair and direction",
        "results": rows,
        "cas_bt_correlation": correlation,
    }
    out = Path(config.out)
    result = write_result(CheckResult("preference", rows, summary, out), config)
    fig = figure(8.0, 3.4)
    for p, (key_name, low, high, title) in enumerate(
        (("top1_rate", "top1_ci_low", "top1_ci_high", "top-1 rate"), ("bt_score", "bt_ci_low", "bt_ci_high", "BT"))
    ):
        ax = fig.add_subplot(1, 2, p + 1)
        values = np.array([r[key_name] for r in rows])
        errors = np.array([[r[key_name] - r[low] for r in rows], [r[high] - r[key_name] for r in rows]])
        ax.bar(np.arange(n), values, yerr=np.clip(errors, 0, None), capsize=3)
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels(methods)
        ax.set_title(f"{title} (95% CI over cases)", fontsize=9)
    result.files["png"] = save_figure(fig, out / "preference.png")
    return result
