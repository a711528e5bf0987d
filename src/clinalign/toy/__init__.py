"""The embedded default: a procedurally generated toy clinical world (ToyDerm) and tiny shipped models.

``clinalign.toy`` lets everything run offline on a CPU: a seeded dermatology-like dataset with per-image
enriched prompts and class checklists (:mod:`clinalign.toy.dataset`), and a small text-to-image base
model plus two separately trained critics shipped as package data (:mod:`clinalign.toy.paths`), rebuilt
from scratch by ``python -m clinalign.toy.build_assets``.
"""

from clinalign.toy.dataset import (
    CHECKLIST_ATTRIBUTES,
    CLASSES,
    SKIN_TONES,
    ToyDerm,
    ToyDermAttributes,
    ToyDermFiles,
    ToyDermSample,
    checklist,
    checklist_attributes,
    checklists,
    enriched_prompt,
    generate_split,
    label_prompt,
    render_image,
    skin_tone_of,
    write_toyderm,
)
from clinalign.toy.paths import assets_dir, base_model_dir, evaluator_critic_dir, training_critic_dir

__all__ = [
    "CHECKLIST_ATTRIBUTES",
    "CLASSES",
    "SKIN_TONES",
    "ToyDerm",
    "ToyDermAttributes",
    "ToyDermFiles",
    "ToyDermSample",
    "assets_dir",
    "base_model_dir",
    "checklist",
    "checklist_attributes",
    "checklists",
    "enriched_prompt",
    "evaluator_critic_dir",
    "generate_split",
    "label_prompt",
    "render_image",
    "skin_tone_of",
    "training_critic_dir",
    "write_toyderm",
]
