"""The metadata of a trained artifact (LoRA, textual-inversion embeddings): one type, written and read everywhere.

Trainers write it as ``clinalign_meta.json`` beside their weights, ``clinalign generate`` copies it
beside the images it made, and scoring reads it to detect evaluation leakage (the evaluator being a
critic that trained the generator). Keeping one type with one reader means a field written under one
name can no longer be looked for under another.

On disk the keys are sorted and stamped with the class name and clinalign version; unknown keys from
newer versions are kept and passed through.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

META_NAME = "clinalign_meta.json"


@dataclass(frozen=True)
class ClassPromptRule:
    """The prompt a textual-inversion model expects for a row: ``template`` filled with the row's class token.

    A TI (or TI+LoRA) model was trained on prompts such as ``"<melanoma>, a photo of ..."``; generating
    from the plain enriched prompt would leave its tokens unused. ``render`` writes the prompt the model
    sees, while the manifest keeps the enriched prompt (what scoring reads).

    Attributes:
        tokens: class name -> placeholder token.
        template: with ``{token}``, ``{label}`` and ``{prompt}`` fields, e.g. ``"{token}, {prompt}"``.
    """

    tokens: dict[str, str]
    template: str

    def render(self, prompt: str, label: str | int | None, *, where: str = "prompt") -> str:
        """The model prompt of one row; a prompt that already holds a placeholder token is left as it is.

        Raises:
            DataError: the row has no label, or a label without a token.
        """
        from clinalign.errors import DataError

        if any(token in prompt for token in self.tokens.values()):
            return prompt
        token = self.tokens.get(str(label)) if label is not None else None
        if token is None:
            what = "has no label" if label is None else f"has label {label!r}, which has no token"
            raise DataError(
                f"{where} {what}, so its textual-inversion token cannot be added (tokens for "
                f"{sorted(self.tokens)}). Give every row a trained class label, write the token into the prompt "
                "yourself, or pass --raw-prompts to generate from the prompts as they are."
            )
        return self.template.format(token=token, label=label, prompt=prompt)


@dataclass
class ArtifactMeta:
    """What produced a trained artifact.

    Attributes:
        trainer: the trainer's class name (``_class_name`` on disk), e.g. ``"DraftKTrainer"``.
        method: the training method (``craft``, ``lora``, ``ti``, ``ti_lora``, ``dpo``).
        clinalign_version: version that wrote it.
        base_model: hub id or directory of the base diffusion model.
        training_critics: names of the critics whose rewards trained it.
        training_critic_identities: ``{"name", "fingerprint"}`` of those critics (fingerprints catch a
            local copy of the same weights under another name or path).
        rewards: the rewards' descriptions.
        class_names: classes the labels index into.
        steps: optimiser steps done.
        config_changes: config changes allowed on resume.
        lora: LoRA shape (rank, alpha, dropout, targets, layers, weight_name), if the artifact has one.
        textual_inversion: placeholder tokens and files, if the artifact has them.
        init: what training started from (``init_lora``, ``textual_inversion`` folders), if anything.
        config: the full training config.
        extra: keys this version does not know, kept as they were.
    """

    trainer: str | None = None
    method: str | None = None
    clinalign_version: str | None = None
    base_model: str | None = None
    training_critics: list[str] = field(default_factory=list)
    training_critic_identities: list[dict[str, str]] = field(default_factory=list)
    rewards: list[Any] = field(default_factory=list)
    class_names: list[str] | None = None
    steps: int | None = None
    config_changes: list[dict[str, Any]] = field(default_factory=list)
    lora: dict[str, Any] | None = None
    textual_inversion: dict[str, Any] | None = None
    init: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ role separation
    def critic_records(self) -> list[dict[str, str] | str]:
        """Every recorded training critic: identity dicts (with fingerprints) first, then names not covered."""
        records: list[dict[str, str] | str] = [dict(i) for i in self.training_critic_identities if isinstance(i, dict)]
        covered = {r["name"] for r in records if isinstance(r, dict) and "name" in r}
        for entry in self.training_critics:
            if isinstance(entry, dict):
                if entry.get("name") not in covered:
                    records.append(dict(entry))
            elif isinstance(entry, str) and entry not in covered:
                records.append(entry)
        return records

    def class_prompt_rule(self) -> ClassPromptRule | None:
        """How prompts were written when the artifact trained on textual-inversion tokens (``None`` otherwise)."""
        ti = self.textual_inversion or {}
        tokens = ti.get("placeholder_tokens")
        if not isinstance(tokens, Mapping) or not tokens:
            return None
        return ClassPromptRule(
            tokens={str(k): str(v) for k, v in tokens.items()}, template=str(ti.get("prompt_template") or "{token}")
        )

    # ------------------------------------------------------------------ dict / file
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name in ("extra", "trainer"):
                continue
            value = getattr(self, f.name)
            if value is None and f.name in ("lora", "textual_inversion", "init", "method"):
                continue
            out[f.name] = value
        out["_class_name"] = self.trainer
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactMeta:
        known = {f.name for f in fields(cls)} - {"extra", "trainer"}
        values: dict[str, Any] = {k: data[k] for k in known if k in data and data[k] is not None}
        critics = values.get("training_critics")
        if isinstance(critics, (str, dict)):
            values["training_critics"] = [critics]
        extra = {k: v for k, v in data.items() if k not in known and k != "_class_name"}
        return cls(trainer=data.get("_class_name"), extra=extra, **values)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``clinalign_meta.json`` into ``directory`` atomically; returns its path."""
        from clinalign.utils.io import write_json

        path = Path(directory) / META_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ArtifactMeta | None:
        """Read the metadata of an artifact folder (or a ``clinalign_meta.json`` path).

        Falls back to the provenance stored inside the LoRA file's safetensors metadata when the JSON
        is missing (a LoRA copied away from its folder). ``None`` when neither exists.
        """
        from clinalign.utils.io import read_json

        path = Path(directory).expanduser()
        candidate = path if path.is_file() and path.suffix == ".json" else path / META_NAME
        if candidate.is_file():
            data = read_json(candidate)
            if isinstance(data, dict):
                return cls.from_dict(data)
            warnings.warn(f"{candidate}: not a JSON object; ignored.", UserWarning, stacklevel=2)
            return None
        from clinalign.diffusion.lora import LORA_WEIGHT_NAME

        weights = path if path.suffix == ".safetensors" else path / LORA_WEIGHT_NAME
        if weights.is_file():
            from clinalign.diffusion.lora import read_lora_metadata

            meta = read_lora_metadata(weights)
            if meta:
                critics = meta.get("training_critics") or []
                return cls(
                    trainer=meta.get("trainer"),
                    clinalign_version=meta.get("version"),
                    base_model=meta.get("base_model"),
                    training_critics=[c["name"] if isinstance(c, dict) else str(c) for c in critics],
                    training_critic_identities=[c for c in critics if isinstance(c, dict)],
                    rewards=meta.get("rewards") or [],
                    class_names=meta.get("class_names"),
                    steps=meta.get("steps"),
                )
        return None


def class_prompt_rule_for(
    textual_inversion: str | os.PathLike[str] | None, lora: str | os.PathLike[str] | None = None
) -> ClassPromptRule | None:
    """The class-token prompt rule of a TI folder used alone or with a LoRA.

    The LoRA's metadata wins (a TI+LoRA run records the template its LoRA was trained with); a LoRA without
    TI metadata next to a TI folder falls back to the folder's own rule. ``None`` without textual inversion
    or for plain diffusers TI files (their prompts carry the tokens themselves).
    """
    if textual_inversion is None:
        return None
    meta = load_artifact_meta(textual_inversion, lora)
    rule = meta.class_prompt_rule() if meta is not None else None
    if rule is None and lora is not None:
        ti_meta = ArtifactMeta.load(textual_inversion)
        rule = ti_meta.class_prompt_rule() if ti_meta is not None else None
    return rule


def load_artifact_meta(*directories: str | os.PathLike[str] | None) -> ArtifactMeta | None:
    """Merge the metadata of several artifacts used together (e.g. a TI folder and a LoRA folder)."""
    found = [m for m in (ArtifactMeta.load(d) for d in directories if d) if m is not None]
    if not found:
        return None
    merged = found[-1]
    for other in found[:-1]:
        for name in other.training_critics:
            if name not in merged.training_critics:
                merged.training_critics.append(name)
        for identity in other.training_critic_identities:
            if identity not in merged.training_critic_identities:
                merged.training_critic_identities.append(identity)
    return merged
