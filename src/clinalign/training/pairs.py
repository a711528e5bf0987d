"""Preference pairs for Diffusion-DPO: generate N seed-varied samples per prompt, rank them with a judge.

>>> make_preference_pairs(model, prompts, "runs/pairs", judge=build_rewards(["ccs"], critic=...)[0], n_per_prompt=4)

Samples go to ``OUT/samples`` (``clinalign generate``'s layout, resumable); each prompt's best and worst
sample under the judge become one pair in ``OUT/pairs.jsonl`` (``prompt``, ``chosen``, ``rejected``
relative to the file, ``label``, ``id``, both scores and the judge's name), the format
:class:`~clinalign.training.dpo.DiffusionDPOTrainer` reads. Prompts whose samples tie are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from clinalign.errors import ConfigError, DataError

PAIRS_NAME = "pairs.jsonl"


def _score_images(judge: Any, files: list[Path], rows: list[dict[str, Any]], class_names: list[str] | None):
    from clinalign.data import load_image
    from clinalign.data.images import pil_to_tensor
    from clinalign.rewards import RewardBatch

    images = torch.stack([pil_to_tensor(load_image(f).convert("RGB")) for f in files])
    labels = []
    for row in rows:
        label = row.get("label")
        if class_names is not None and label is not None and str(label) in class_names:
            labels.append(class_names.index(str(label)))
        else:
            labels.append(0)
    batch = RewardBatch(
        prompts=[str(r["prompt"]) for r in rows],
        checklists=[str(r.get("checklist") or "") for r in rows],
        labels=torch.tensor(labels, dtype=torch.long),
    )
    with torch.no_grad():
        values = judge(images, batch)
    # a CompositeReward returns its weighted total with the components
    return [float(v) for v in getattr(values, "total", values)]


def make_preference_pairs(
    model: Any,
    prompts: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    judge: Any,
    n_per_prompt: int = 4,
    seed: int = 0,
    resolution: int = 512,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    eta: float = 0.0,
    batch_size: int = 8,
    class_names: list[str] | None = None,
    progress_bar: bool = True,
) -> Path:
    """Generate, judge and pair; returns the pairs JSONL path.

    Args:
        model: the :class:`~clinalign.diffusion.DiffusionModel` to sample from.
        prompts: :class:`~clinalign.diffusion.PromptRow` rows (``checklist`` needed by a CCS judge).
        out_dir: output folder.
        judge: a reward object (``name`` + ``__call__(images, batch) -> [B]``, higher = preferred) or a
            :class:`~clinalign.rewards.CompositeReward` (its total decides).
        n_per_prompt: samples per prompt (at least 2).
        class_names: the class list labels index into (needed by a DD judge).
    """
    from clinalign.diffusion import generate_to_dir
    from clinalign.utils.io import atomic_write_text, read_jsonl

    if n_per_prompt < 2:
        raise ConfigError(f"n_per_prompt must be at least 2 to form a pair, got {n_per_prompt}.")
    if getattr(judge, "name", None) == "sfs":
        raise ConfigError("the 'sfs' reward needs a real reference image per sample; judge with vdc, ccs or dd.")
    if getattr(judge, "name", None) == "ccs":
        missing = [i for i, p in enumerate(prompts, start=1) if not getattr(p, "checklist", None)]
        if missing:
            raise DataError(
                f"prompt rows {missing[:5]} have no checklist, which the 'ccs' judge needs: give the prompts "
                "file a 'checklist' (or 't_c') field, or pass --checklists."
            )
    out = Path(out_dir)
    samples = out / "samples"
    manifest = generate_to_dir(
        model, prompts, samples, n_per_prompt=n_per_prompt, seed=seed, resolution=resolution,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, eta=eta, batch_size=batch_size,
        progress_bar=progress_bar,
    )  # fmt: skip
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for row in read_jsonl(manifest):
        by_prompt.setdefault(int(row["prompt_index"]), []).append(row)
    lines = []
    import json

    for index in sorted(by_prompt):
        rows = sorted(by_prompt[index], key=lambda r: int(r["sample_index"]))
        scores = _score_images(judge, [samples / r["file"] for r in rows], rows, class_names)
        best = max(range(len(rows)), key=lambda i: scores[i])
        worst = min(range(len(rows)), key=lambda i: scores[i])
        if scores[best] == scores[worst]:
            continue
        lines.append(
            json.dumps(
                {
                    "id": f"prompt{index:06d}",
                    "prompt": rows[best]["prompt"],
                    "label": rows[best].get("label"),
                    "chosen": f"samples/{rows[best]['file']}",
                    "rejected": f"samples/{rows[worst]['file']}",
                    "chosen_score": scores[best],
                    "rejected_score": scores[worst],
                    "judge": f"reward:{getattr(judge, 'name', type(judge).__name__)}",
                },
                sort_keys=True,
            )
        )
    path = out / PAIRS_NAME
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path
