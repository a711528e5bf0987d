"""The model card (``README.md``) written beside every trained LoRA.

It is built only from what the trainer records (``DraftKTrainer.metadata()`` and its held-out
evaluation history), so it says what trained the adapter, how, and how well it did on prompts the
training critic never scored. The YAML front matter follows the Hugging Face Hub's model-card
fields, so the folder can be pushed as is (``clinalign export-lora --push-to-hub``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clinalign.utils.io import atomic_write_text

MODEL_CARD_NAME = "README.md"
# a Hub repo id ("owner/name"); local paths are not recorded as the card's base_model
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def render_model_card(
    metadata: Mapping[str, Any],
    *,
    eval_history: Sequence[Mapping[str, float]] = (),
    weight_name: str = "pytorch_lora_weights.safetensors",
) -> str:
    """The Markdown text of the model card for a LoRA trained with ``metadata``.

    Args:
        metadata: the trainer's metadata (``base_model``, ``training_critic_identities``, ``rewards``,
            ``lora``, ``config``, ``steps``, ``class_names``, ``clinalign_version``); missing keys are
            left out of the card.
        eval_history: the held-out evaluations (``{"step", "eval/total", "eval/<reward>", ...}``) in order.
        weight_name: the weights file name inside the LoRA folder.
    """
    import yaml

    base = str(metadata.get("base_model") or "unknown")
    lora = dict(metadata.get("lora") or {})
    front: dict[str, Any] = {
        "library_name": "diffusers",
        "tags": ["lora", "text-to-image", "stable-diffusion", "clinalign", "medical-imaging"],
    }
    if _HUB_ID.match(base) and not Path(base).exists():
        front["base_model"] = base
    lines = ["---", yaml.safe_dump(front, sort_keys=True).strip(), "---", ""]
    lines += [f"# LoRA for {base}", ""]
    lines += [
        f"A LoRA on the UNet attention of `{base}`, trained with clinalign "
        f"{metadata.get('clinalign_version', '')} ({metadata.get('_class_name', 'trainer')}, "
        f"{metadata.get('steps', '?')} steps): clinical reward-aligned finetuning, where frozen "
        "vision-language critics score the generated images against their enriched prompts and class checklists.",
        "",
        "## How to load it",
        "",
        "```python",
        "from diffusers import StableDiffusionPipeline",
        "",
        f'pipe = StableDiffusionPipeline.from_pretrained("{base}")',
        'pipe.load_lora_weights("path/to/this/folder")  # or the Hub repo id',
        'image = pipe("an enriched prompt in the style it was trained on").images[0]',
        "```",
        "",
        f"The weights are `{weight_name}` in diffusers' LoRA format; its safetensors metadata repeats the "
        "provenance below (`clinalign.*` keys). `clinalign export-lora --format kohya` writes a copy with "
        "kohya/A1111 key names for ComfyUI and AUTOMATIC1111.",
        "",
        "## LoRA",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key in ("rank", "alpha", "dropout", "targets", "layers"):
        if key in lora:
            lines.append(f"| {key} | `{_inline(lora[key])}` |")
    lines += ["", "## Training critics and rewards", ""]
    critics = metadata.get("training_critic_identities") or [
        {"name": n} for n in metadata.get("training_critics") or []
    ]
    if critics:
        lines.append("Rewards were computed with these critics (weights fingerprints identify local copies):")
        lines.append("")
        lines += [f"- `{c.get('name')}` (fingerprint `{c.get('fingerprint') or 'unknown'}`)" for c in critics]
        lines.append("")
        lines.append(
            "Score the LoRA's images with a *different* evaluator (`clinalign score-cas --evaluator ...`): "
            "a training critic rates its own finetune too kindly."
        )
        lines.append("")
    rewards = metadata.get("rewards") or []
    if rewards:
        lines += ["| reward | weight | details |", "|---|---|---|"]
        for reward in rewards:
            details = {k: v for k, v in reward.items() if k not in ("name", "weight")}
            lines.append(f"| {reward.get('name')} | {reward.get('weight', '')} | `{_inline(details)}` |")
        lines.append("")
    else:
        lines += ["No reward: trained with the diffusion loss only (the LoRA baseline).", ""]
    class_names = metadata.get("class_names") or []
    if class_names:
        lines += [f"Classes: {', '.join(str(c) for c in class_names)}.", ""]
    lines += _evaluation_section(eval_history)
    config = metadata.get("config")
    if config:
        lines += [
            "## Training configuration",
            "",
            "```yaml",
            yaml.safe_dump(dict(config), sort_keys=False).strip(),
            "```",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _evaluation_section(eval_history: Sequence[Mapping[str, float]]) -> list[str]:
    lines = ["## Held-out evaluation", ""]
    if not eval_history:
        return [*lines, "No held-out evaluation was run (set `eval_data`, `eval_critic` and `eval_every`).", ""]
    columns = sorted({k for row in eval_history for k in row if k.startswith("eval/") and k != "eval/hacking"})
    lines.append(
        "Mean scores on held-out prompts by the evaluator critic (`eval/*`; `eval/train_critic_total` is "
        "the training critic's reward on the same images, for comparison):"
    )
    lines += ["", "| step | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in eval_history:
        cells = [_number(row.get(c)) for c in columns]
        lines.append(f"| {int(row.get('step', 0))} | " + " | ".join(cells) + " |")
    flagged = [int(r.get("step", 0)) for r in eval_history if r.get("eval/hacking")]
    if flagged:
        lines += ["", f"Possible reward hacking was flagged at step(s) {', '.join(map(str, flagged))}."]
    return [*lines, ""]


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return str(int(value)) if isinstance(value, float) else str(value)


def _inline(value: Any) -> str:
    """One-line rendering for table cells (no pipes, which would split the cell)."""
    import json

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text.replace("|", "\\|")


def write_model_card(
    directory: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    *,
    eval_history: Sequence[Mapping[str, float]] = (),
) -> Path:
    """Write ``README.md`` (see :func:`render_model_card`) into the LoRA folder ``directory``, atomically."""
    path = Path(directory) / MODEL_CARD_NAME
    weight_name = str((metadata.get("lora") or {}).get("weight_name") or "pytorch_lora_weights.safetensors")
    atomic_write_text(path, render_model_card(metadata, eval_history=eval_history, weight_name=weight_name))
    return path
