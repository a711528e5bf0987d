"""The declarative preset format: what a built-in or user YAML preset file contains.

A preset is data, not code: output fields (types, closed vocabularies, word limits), rules, prompts,
the ``t_ep`` renderer and the class checklists. :class:`clinalign.enrich.presets.Preset` turns a
:class:`PresetSpec` into a pydantic output model and prompt/render functions.
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")

DEFAULT_SYSTEM_PROMPT = """\
You describe medical images for a text-to-image training set. The image is a {modality}.
Its confirmed label is "{label}". Treat this label as ground truth: do not question, change or add a diagnosis.

Describe only what is visible in this image that is consistent with "{label}":
- describe what is seen in positive terms, never what is absent (say "sharp costophrenic angles" or "smooth, even
  skin", never "no effusion" or "no scale");
- never name any diagnosis other than "{label}"{forbidden_clause};
- use only the allowed values for fields with a fixed vocabulary, and respect every word limit.

Fields:
{fields}

Reply with a single JSON object with exactly these fields and nothing else (no prose, no code fences)."""

DEFAULT_USER_PROMPT = (
    'Describe the visible findings in this {modality}. Confirmed label: "{label}". Return the JSON object only.'
)

DEFAULT_CHECKLIST_PROMPT = """\
You write clinical checklists for a labelled medical image set of {modality} images.
For the class "{label}", list the visual attributes an image of this class shows, one short phrase per attribute,
in positive phrasing (describe what is seen; never write what is absent), naming no other diagnosis.
Attributes:
{fields}
Reply with a single JSON object with exactly these fields and nothing else."""

PROMPT_PLACEHOLDERS = {"label", "modality", "fields", "forbidden_clause", "classes"}


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class FieldSpec(BaseModel):
    """One field of the MLLM's JSON output."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="JSON key (lower_snake_case).")
    type: Literal["text", "enum", "enum_list", "text_list"] = Field(
        description="text: free text with a word limit; enum: one value of `values`; "
        "enum_list: several values of `values`; text_list: several short free-text phrases."
    )
    description: str = Field(description="Instruction for the model; it reaches the JSON schema.")
    values: list[str] | None = Field(default=None, description="Closed vocabulary (enum, enum_list).")
    max_words: int | None = Field(default=None, ge=1, description="Word limit per text value (text, text_list).")
    min_items: int = Field(default=0, ge=0, description="Minimum list length (enum_list, text_list).")
    max_items: int | None = Field(default=None, ge=1, description="Maximum list length (enum_list, text_list).")
    none_value: str | None = Field(
        default=None,
        description="A value meaning 'nothing of this kind is visible' (e.g. 'none' for support devices). It is "
        "accepted (as the only item of a list), is not a negated finding for the negation rule, and is left out "
        "of t_ep.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"field name must be lower_snake_case, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type in ("enum", "enum_list"):
            if not self.values:
                raise ValueError(f"field '{self.name}' has type {self.type} and needs a non-empty `values` list")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"field '{self.name}': `values` has duplicates")
        elif self.values is not None:
            raise ValueError(f"field '{self.name}': `values` only applies to enum and enum_list fields")
        if self.type in ("text", "text_list") and self.max_words is None:
            raise ValueError(f"field '{self.name}' is free text and needs `max_words`")
        if self.none_value is not None and not self.none_value.strip():
            raise ValueError(f"field '{self.name}': none_value must not be empty")
        if self.max_items is not None and self.max_items < self.min_items:
            raise ValueError(f"field '{self.name}': max_items ({self.max_items}) < min_items ({self.min_items})")
        return self


class RulesSpec(BaseModel):
    """Content rules checked on every reply (with the record's label)."""

    model_config = ConfigDict(extra="forbid")

    forbid_negations: bool = Field(default=True, description="Reject negated findings ('no effusion').")
    forbid_other_labels: bool = Field(
        default=True, description="Reject diagnosis terms of classes other than the record's label."
    )
    diagnosis_terms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per class, the words that name it (class name and synonyms; `word*` matches a prefix). "
        "Used by forbid_other_labels; a class without an entry uses its own name.",
    )
    forbidden_terms: list[str] = Field(default_factory=list, description="Terms rejected for every label.")
    forbidden_terms_by_label: dict[str, list[str]] = Field(
        default_factory=dict, description="Terms rejected for one label (e.g. pathology words for 'No Finding')."
    )
    plain_language: dict[str, str] = Field(
        default_factory=dict,
        description="Jargon term -> the plain wording to use instead (e.g. erythematous: red). A reply using a "
        "jargon term is rejected and the repair turn names the plain wording.",
    )


class RenderSpec(BaseModel):
    """How validated fields become the enriched prompt ``t_ep``."""

    model_config = ConfigDict(extra="forbid")

    segments: list[str] = Field(
        min_length=1,
        description="Format strings joined in order, most important first; `{field}` inserts a field "
        "(lists joined with ', '), `{label}` the label. A segment whose fields are all empty is left out; "
        "over the token budget, later segments are shortened or dropped first.",
    )
    separator: str = Field(default=". ", description="Text between segments.")
    max_tokens: int = Field(default=77, ge=8, description="Token budget of the diffusion text encoder (CLIP: 77).")


class PresetSpec(BaseModel):
    """A whole preset, as written in YAML."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registry name (lower_snake_case).")
    version: str = Field(default="1", description="Bump when fields, rules or prompts change.")
    description: str = Field(default="", description="One line shown in listings.")
    modality: str = Field(description="What the images are, e.g. 'frontal chest X-ray'.")
    classes: list[str] | None = Field(
        default=None, description="The allowed labels; None accepts any label (generic presets)."
    )
    assumptions: list[str] = Field(
        default_factory=list,
        description="Values in this preset that its source (e.g. a paper) does not publish and that are our own "
        "choice; listed so users know what to edit.",
    )
    fields: list[FieldSpec] = Field(min_length=1)
    rules: RulesSpec = Field(default_factory=RulesSpec)
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT)
    user_prompt: str = Field(default=DEFAULT_USER_PROMPT)
    render: RenderSpec
    checklist_attributes: list[str] = Field(
        default_factory=lambda: ["Location", "Lesion Type", "Shape/Size", "Color", "Texture"],
        description="Attributes of the class checklist t_c (DESIGN.md).",
    )
    checklist_partial: bool = Field(
        default=False,
        description="Allow a class checklist to use only some of checklist_attributes (the CRAFT paper's "
        "Erythema Multiforme has no Texture); otherwise every checklist has exactly these attributes.",
    )
    checklist_max_words: int = Field(default=12, ge=1, description="Word limit per checklist attribute.")
    checklist_max_tokens: int = Field(default=64, ge=8, description="Token budget of the critic's text encoder.")
    checklists: dict[str, dict[str, str]] = Field(default_factory=dict, description="Class -> attribute -> text.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"preset name must be lower_snake_case, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PresetSpec:
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate field names {duplicates}")
        for which, template in (("system_prompt", self.system_prompt), ("user_prompt", self.user_prompt)):
            unknown = _placeholders(template) - PROMPT_PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"{which} uses unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(PROMPT_PLACEHOLDERS)} "
                    "(write {{ and }} for literal braces)"
                )
        allowed = set(names) | {"label"}
        for segment in self.render.segments:
            unknown = _placeholders(segment) - allowed
            if unknown:
                raise ValueError(f"render segment {segment!r} uses unknown field(s) {sorted(unknown)}")
        if self.classes is not None:
            known = set(self.classes)
            for where, keys in (
                ("checklists", self.checklists),
                ("rules.diagnosis_terms", self.rules.diagnosis_terms),
                ("rules.forbidden_terms_by_label", self.rules.forbidden_terms_by_label),
            ):
                stray = sorted(set(keys) - known)
                if stray:
                    raise ValueError(f"{where} names class(es) {stray} that are not in classes {self.classes}")
        attributes = set(self.checklist_attributes)
        for label, checklist in self.checklists.items():
            if self.checklist_partial:
                stray = sorted(set(checklist) - attributes)
                if stray or not checklist:
                    raise ValueError(
                        f"checklist for {label!r} has attributes {sorted(checklist)}; "
                        f"use a non-empty subset of {self.checklist_attributes}"
                    )
                continue
            if set(checklist) != attributes:
                raise ValueError(
                    f"checklist for {label!r} has attributes {sorted(checklist)}; "
                    f"expected exactly {self.checklist_attributes}"
                )
        return self
