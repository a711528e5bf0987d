"""A :class:`Preset`: the pydantic output model, prompts, ``t_ep`` renderer and checklists of one dataset."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, create_model, model_validator

from clinalign.enrich import rules as _rules
from clinalign.enrich.presets.spec import DEFAULT_CHECKLIST_PROMPT, FieldSpec, PresetSpec
from clinalign.enrich.render import TokenCounter, clip_token_count, truncate_words
from clinalign.errors import ConfigError


def _word_limit(limit: int):
    def check(value: str) -> str:
        value = value.strip()
        n = _rules.count_words(value)
        if n > limit:
            raise ValueError(f"has {n} words; the limit is {limit} words, shorten it")
        if n == 0:
            raise ValueError("is empty; write a short phrase")
        return value

    return check


def _vocabulary(spec: FieldSpec) -> list[str]:
    """The closed vocabulary of an enum field, its ``none_value`` included."""
    values = list(spec.values or [])
    if spec.none_value is not None and spec.none_value not in values:
        values.append(spec.none_value)
    return values


def _is_none_value(spec: FieldSpec | None, text: str) -> bool:
    return spec is not None and spec.none_value is not None and text.strip().lower() == spec.none_value.lower()


def _annotation(spec: FieldSpec) -> Any:
    """The pydantic type of one output field (``Field(description=...)`` reaches the JSON schema)."""
    description = spec.description
    if spec.none_value is not None:
        description += f' Write "{spec.none_value}" when nothing of this kind is visible.'
    if spec.type == "text":
        description += f" At most {spec.max_words} words."
        return Annotated[str, AfterValidator(_word_limit(spec.max_words or 0)), Field(description=description)]
    bounds: dict[str, Any] = {"min_length": spec.min_items}
    if spec.max_items is not None:
        bounds["max_length"] = spec.max_items
    vocabulary = tuple(_vocabulary(spec))
    if spec.type == "enum":
        return Annotated[Literal[vocabulary], Field(description=description)]  # type: ignore[misc]
    if spec.type == "enum_list":
        item = Literal[vocabulary]  # type: ignore[misc]
        return Annotated[list[item], Field(description=description, **bounds)]  # type: ignore[valid-type]
    description += f" Each item at most {spec.max_words} words."
    item = Annotated[str, AfterValidator(_word_limit(spec.max_words or 0))]
    return Annotated[list[item], Field(description=description, **bounds)]  # type: ignore[valid-type]


class RuleSet:
    """The content rules of a preset, evaluated on every string value of a reply."""

    def __init__(self, spec: PresetSpec) -> None:
        self.spec = spec
        self.rules = spec.rules
        classes = spec.classes or list(self.rules.diagnosis_terms)
        self._terms = {c: self.rules.diagnosis_terms.get(c) or [c] for c in classes}

    def forbidden_for(self, label: str | None) -> list[str]:
        """Terms that must not appear in a reply for ``label`` (beyond negations)."""
        terms = list(self.rules.forbidden_terms)
        if label is not None:
            terms += self.rules.forbidden_terms_by_label.get(label, [])
            if self.rules.forbid_other_labels:
                own = {t.lower() for t in self._terms.get(label, [label])}
                for other, words in self._terms.items():
                    if other != label:
                        terms += [w for w in words if w.lower() not in own]
        return list(dict.fromkeys(terms))

    def violations(self, values: Mapping[str, Any], label: str | None) -> list[str]:
        forbidden = self.forbidden_for(label)
        fields = {f.name: f for f in self.spec.fields}
        problems: list[str] = []
        for name, value in values.items():
            texts = value if isinstance(value, list) else [value]
            spec = fields.get(name)
            if len(texts) > 1 and any(isinstance(t, str) and _is_none_value(spec, t) for t in texts):
                problems.append(
                    f"field '{name}': '{spec.none_value}' means nothing of this kind is visible, so it must be "  # type: ignore[union-attr]
                    "the only item; drop it or drop the other items"
                )
            for text in texts:
                if not isinstance(text, str) or _is_none_value(spec, text):
                    continue
                for term in _rules.find_terms(text, self.rules.plain_language):
                    problems.append(
                        f"field '{name}': {text!r} uses the jargon term '{term}'; write plain words instead "
                        f"(e.g. '{self.rules.plain_language[term]}')"
                    )
                if self.rules.forbid_negations:
                    for cue in _rules.find_negations(text):
                        problems.append(
                            f"field '{name}': {text!r} uses the negation '{cue}'; describe what is visible in "
                            "positive terms instead (e.g. 'sharp costophrenic angles', not 'no effusion'; "
                            "'smooth skin', not 'no scale')"
                        )
                for term in _rules.find_terms(text, forbidden):
                    why = f"for the label '{label}'" if label is not None else "in this preset"
                    problems.append(
                        f"field '{name}': {text!r} contains '{term}', which is not allowed {why}; "
                        "describe only visible signs consistent with the given label"
                    )
        return problems


@dataclass(frozen=True)
class FittedChecklist:
    """A rendered ``t_c`` and what fitting it to the token budget changed.

    Attributes:
        text: the rendered ``t_c``.
        trimmed_attributes: attributes shortened (last phrase, then last word, longest first).
        dropped_attributes: attributes left out because even one word each did not fit (last first).
        fits: False only when the label and one one-word attribute alone exceed the budget.
    """

    text: str
    trimmed_attributes: list[str]
    dropped_attributes: list[str] = dataclasses.field(default_factory=list)
    fits: bool = True

    @property
    def changed(self) -> list[str]:
        """Every attribute trimmed or dropped."""
        return [*self.trimmed_attributes, *self.dropped_attributes]


class PresetOutput(BaseModel):
    """Base of every preset's output model: unknown keys rejected, content rules run after field checks.

    Validate with ``Model.model_validate(data, context={"label": label})`` so label-dependent rules
    apply; without a label only label-independent rules (negations, always-forbidden terms) run.
    """

    model_config = ConfigDict(extra="forbid")
    _ruleset: ClassVar[RuleSet | None] = None

    @model_validator(mode="after")
    def _content_rules(self, info: ValidationInfo) -> PresetOutput:
        ruleset = type(self)._ruleset
        if ruleset is not None:
            label = (info.context or {}).get("label")
            problems = ruleset.violations(self.model_dump(), label)
            if problems:
                raise ValueError("; ".join(problems))
        return self


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) or "Preset"


class Preset:
    """One dataset's enrichment contract, built from a :class:`PresetSpec`.

    Attributes:
        spec: the declarative spec (as loaded from YAML).
        output_model: the pydantic model replies are validated with (``Field(description=...)``
            instructions, closed vocabularies, word limits, label-dependent rules).
        checklist_model: the pydantic model for generated checklists (one field per attribute).
    """

    def __init__(self, spec: PresetSpec, *, source: str | None = None) -> None:
        self.spec = spec
        self.source = source
        self.ruleset = RuleSet(spec)
        fields = {f.name: (_annotation(f), ...) for f in spec.fields}
        model = create_model(f"{_title(spec.name)}Output", __base__=PresetOutput, **fields)  # type: ignore[call-overload]
        model._ruleset = self.ruleset
        self.output_model: type[PresetOutput] = model
        self._check_vocabulary()

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def classes(self) -> list[str] | None:
        return self.spec.classes

    @functools.cached_property
    def prompt_hash(self) -> str:
        """Hash of what the model is asked: prompts, schema and rules (a different hash means a different request)."""
        payload = {
            "system_prompt": self.spec.system_prompt,
            "user_prompt": self.spec.user_prompt,
            "schema": self.json_schema(),
            "rules": self.spec.rules.model_dump(mode="json"),
        }
        if not payload["rules"]["plain_language"]:  # added later: presets without it keep their earlier hash
            del payload["rules"]["plain_language"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _check_vocabulary(self) -> None:
        """A vocabulary value that breaks a rule would make valid replies impossible: refuse the preset."""
        for field in self.spec.fields:
            for value in field.values or []:
                if _is_none_value(field, value):
                    continue
                if self.spec.rules.forbid_negations and _rules.find_negations(value):
                    where = self.source or f"preset '{self.name}'"
                    raise ConfigError(
                        f"{where}, field '{field.name}': the allowed value {value!r} is a negation "
                        "the rules reject; rephrase it positively."
                    )

    # ------------------------------------------------------------------ schema and prompts
    def allowed_values(self, field: FieldSpec, label: str | None) -> list[str]:
        """The vocabulary of ``field`` minus values the rules reject for ``label`` (all values if none would remain)."""
        values = _vocabulary(field)
        if label is None:
            return values
        forbidden = self.ruleset.forbidden_for(label)
        kept = [v for v in values if _is_none_value(field, v) or not _rules.find_terms(v, forbidden)]
        return kept if any(not _is_none_value(field, v) for v in kept) else values

    def json_schema(self, label: str | None = None) -> dict[str, Any]:
        """The JSON schema of the reply (sent as ``response_format`` when the endpoint supports it).

        With ``label``, closed vocabularies are narrowed to the values allowed for that label, so
        constrained decoding cannot pick a value the label rules would reject.
        """
        schema = self.output_model.model_json_schema()
        if label is None:
            return schema
        for field in self.spec.fields:
            if field.type not in ("enum", "enum_list"):
                continue
            prop = schema["properties"][field.name]
            target = prop["items"] if field.type == "enum_list" else prop
            target["enum"] = self.allowed_values(field, label)
        return schema

    def with_classes(self, labels: list[str]) -> Preset:
        """For a preset without a class list: the same preset whose other-label rule knows ``labels``.

        Each label without ``diagnosis_terms`` gets its own name as term, so a reply for one class of
        the dataset cannot name another.
        """
        rules = self.spec.rules
        if self.spec.classes is not None or not rules.forbid_other_labels:
            return self
        added = {label: [label] for label in labels if label not in rules.diagnosis_terms}
        if not added:
            return self
        new_rules = rules.model_copy(update={"diagnosis_terms": {**rules.diagnosis_terms, **added}})
        return Preset(self.spec.model_copy(update={"rules": new_rules}), source=self.source)

    def check_label(self, label: str) -> None:
        if self.classes is not None and label not in self.classes:
            raise ConfigError(
                f"label {label!r} is not a class of preset '{self.name}' ({self.classes}). Use the matching "
                "dataset filter, the 'generic' preset, or a custom YAML preset listing this class."
            )

    def field_guide(self, label: str | None = None) -> str:
        lines = []
        for f in self.spec.fields:
            if f.type == "text":
                kind = f"text, at most {f.max_words} words"
            elif f.type == "enum":
                kind = "one of: " + ", ".join(self.allowed_values(f, label))
            elif f.type == "enum_list":
                count = f"{f.min_items}-{f.max_items}" if f.max_items else f"at least {f.min_items}"
                kind = f"list of {count} values from: " + ", ".join(self.allowed_values(f, label))
            else:
                count = f"{f.min_items}-{f.max_items}" if f.max_items else f"at least {f.min_items}"
                kind = f"list of {count} phrases, each at most {f.max_words} words"
            lines.append(f'- "{f.name}" ({kind}): {f.description}')
        return "\n".join(lines)

    def _format(self, template: str, label: str, fields: str) -> str:
        forbidden = self.ruleset.forbidden_for(label)
        clause = (" and do not use the words: " + ", ".join(forbidden) + " (* = any ending)") if forbidden else ""
        values = {
            "label": label,
            "modality": self.spec.modality,
            "fields": fields,
            "forbidden_clause": clause,
            "classes": ", ".join(self.classes or []),
        }
        return string.Formatter().vformat(template, (), values)

    def system_prompt(self, label: str) -> str:
        return self._format(self.spec.system_prompt, label, self.field_guide(label))

    def user_prompt(self, label: str) -> str:
        return self._format(self.spec.user_prompt, label, "")

    def validate(self, data: Any, label: str | None) -> PresetOutput:
        """Validate a parsed reply (dict) for ``label``; raises ``pydantic.ValidationError``."""
        return self.output_model.model_validate(data, context={"label": label})

    # ------------------------------------------------------------------ t_ep
    def render(
        self,
        values: Mapping[str, Any] | BaseModel,
        label: str,
        *,
        token_counter: TokenCounter | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """Render validated fields to the enriched prompt ``t_ep`` within the token budget.

        Segments are added in order; the first one that does not fit is shortened word by word and
        the rest dropped, so the most important content (first segments, the label) always survives.
        """
        if isinstance(values, BaseModel):
            values = values.model_dump()
        counter = token_counter or clip_token_count
        budget = max_tokens or self.spec.render.max_tokens
        fields = {f.name: f for f in self.spec.fields}
        rendered: list[str] = []
        for segment in self.spec.render.segments:
            names = [n for _, n, _, _ in string.Formatter().parse(segment) if n]
            data = {"label": label}
            for n in names:
                if n == "label":
                    continue
                value = values.get(n)
                spec = fields.get(n)
                if isinstance(value, list):
                    value = [v for v in value if not (isinstance(v, str) and _is_none_value(spec, v))]
                elif isinstance(value, str) and _is_none_value(spec, value):
                    value = None
                data[n] = ", ".join(value) if isinstance(value, list) else ("" if value is None else str(value))
            if names and all(data[n] == "" for n in names if n != "label") and any(n != "label" for n in names):
                continue
            rendered.append(string.Formatter().vformat(segment, (), data).strip())
        sep = self.spec.render.separator
        full = sep.join(rendered)
        if counter(full) <= budget:
            return full.strip()
        text = ""
        for part in rendered:
            candidate = f"{text}{sep}{part}" if text else part
            if counter(candidate) <= budget:
                text = candidate
                continue
            prefix = f"{text}{sep}" if text else ""
            room = truncate_words(candidate, budget, counter)
            if len(room) > len(prefix) + 3:  # keep a partial segment only when a few words of it fit
                text = room
            break
        return text.strip()

    # ------------------------------------------------------------------ t_c
    @property
    def checklist_attributes(self) -> list[str]:
        return self.spec.checklist_attributes

    def checklist(self, label: str) -> dict[str, str] | None:
        return self.spec.checklists.get(label)

    def render_checklist(
        self,
        label: str,
        checklist: Mapping[str, str] | None = None,
        *,
        token_counter: TokenCounter | None = None,
        max_tokens: int | None = None,
    ) -> str | None:
        """Render a class checklist to ``t_c`` ("Label. Location: ...; Lesion Type: ...") within the budget.

        Over budget, the longest attribute is shortened first (its last comma-separated phrase, else its
        last word), so every attribute stays represented. :meth:`fit_checklist` also says what was trimmed.
        """
        fitted = self.fit_checklist(label, checklist, token_counter=token_counter, max_tokens=max_tokens)
        return None if fitted is None else fitted.text

    def fit_checklist(
        self,
        label: str,
        checklist: Mapping[str, str] | None = None,
        *,
        token_counter: TokenCounter | None = None,
        max_tokens: int | None = None,
    ) -> FittedChecklist | None:
        """Like :meth:`render_checklist`, returning the text and the attributes shortened to fit."""
        checklist = dict(checklist if checklist is not None else (self.checklist(label) or {}))
        if not checklist:
            return None
        original = dict(checklist)
        counter = token_counter or clip_token_count
        budget = max_tokens or self.spec.checklist_max_tokens
        order = [a for a in self.checklist_attributes if a in checklist] + [
            a for a in checklist if a not in self.checklist_attributes
        ]

        def text() -> str:
            return f"{label}. " + "; ".join(f"{a}: {checklist[a]}" for a in order if checklist[a]) + "."

        dropped: list[str] = []
        while counter(text()) > budget:
            trimmable = [a for a in order if len(checklist[a].split()) > 1]
            if not trimmable:
                # every attribute is down to one word: drop attributes from the end, keep at least one
                if len(order) == 1:
                    break
                dropped.insert(0, order.pop())
                continue
            longest = max(trimmable, key=lambda a: counter(checklist[a]))
            phrases = [p.strip() for p in checklist[longest].split(",")]
            if len(phrases) > 1:
                checklist[longest] = ", ".join(phrases[:-1])
            else:
                checklist[longest] = " ".join(checklist[longest].split()[:-1]).rstrip(",;:")
        trimmed = [a for a in order if checklist[a] != original[a]]
        return FittedChecklist(
            text=text(), trimmed_attributes=trimmed, dropped_attributes=dropped, fits=counter(text()) <= budget
        )

    @functools.cached_property
    def checklist_keys(self) -> dict[str, str]:
        """JSON key (snake_case, safe for every endpoint's schema support) -> checklist attribute name."""
        keys: dict[str, str] = {}
        for attribute in self.checklist_attributes:
            key = "".join(ch if ch.isalnum() else "_" for ch in attribute.lower()).strip("_")
            keys[key] = attribute
        return keys

    @functools.cached_property
    def checklist_model(self) -> type[PresetOutput]:
        """The pydantic model of one generated checklist: one word-limited field per attribute."""
        limit = self.spec.checklist_max_words
        fields: dict[str, Any] = {
            key: (
                Annotated[
                    str,
                    AfterValidator(_word_limit(limit)),
                    Field(description=f"{attribute}: its typical visual appearance. At most {limit} words."),
                ],
                ...,
            )
            for key, attribute in self.checklist_keys.items()
        }
        model = create_model(f"{_title(self.name)}Checklist", __base__=PresetOutput, **fields)  # type: ignore[call-overload]
        model._ruleset = self.ruleset
        return model

    def checklist_from_output(self, output: BaseModel) -> dict[str, str]:
        """Attribute name -> text from a validated :attr:`checklist_model` instance."""
        data = output.model_dump()
        return {attribute: data[key] for key, attribute in self.checklist_keys.items()}

    def checklist_system_prompt(self, label: str) -> str:
        limit = self.spec.checklist_max_words
        guide = "\n".join(f'- "{k}" ({a}): at most {limit} words' for k, a in self.checklist_keys.items())
        return self._format(DEFAULT_CHECKLIST_PROMPT, label, guide)

    def __repr__(self) -> str:
        return f"Preset(name={self.name!r}, version={self.version!r}, fields={[f.name for f in self.spec.fields]})"
