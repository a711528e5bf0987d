"""Presets: schemas, closed vocabularies, label-dependent rules, t_ep/t_c rendering, YAML presets, registry."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from clinalign.enrich import extract_json, get_preset, load_preset_file, register_preset
from clinalign.enrich.presets import available_presets, preset_from_dict
from clinalign.enrich.render import approx_token_count, clip_token_count, truncate_words
from clinalign.enrich.rules import count_words, find_negations, find_terms
from clinalign.enrich.testing import valid_fields
from clinalign.errors import ConfigError

BUILTIN = ["breakhis", "chexpert", "fitzpatrick17k", "generic", "origa"]


def _cxr(**overrides):
    data = {
        "view": "posteroanterior",
        "key_findings": ["clear lung fields", "sharp costophrenic angles"],
        "location": ["both lungs"],
        "devices": [],
        "description": "Clear, evenly lucent lungs with sharp costophrenic angles and a normal heart size.",
    }
    data.update(overrides)
    return data


def test_builtin_presets_registered():
    assert set(BUILTIN) <= set(available_presets())


@pytest.mark.parametrize("name", BUILTIN)
def test_schema_is_strict_and_documented(name):
    preset = get_preset(name)
    schema = preset.json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {f.name for f in preset.spec.fields}
    for field in preset.spec.fields:
        prop = schema["properties"][field.name]
        assert prop["description"].startswith(field.description)
        if field.type == "enum":
            assert prop["enum"] == field.values
        if field.type == "text":
            assert f"At most {field.max_words} words" in prop["description"]


@pytest.mark.parametrize("name", BUILTIN)
def test_valid_reply_for_every_class_validates_and_renders_within_budget(name):
    preset = get_preset(name)
    for label in preset.classes or list(preset.spec.checklists) or ["lesion"]:
        data = valid_fields(preset, label)
        output = preset.validate(data, label)
        t_ep = preset.render(output, label)
        assert label in t_ep
        assert clip_token_count(t_ep) <= preset.spec.render.max_tokens


@pytest.mark.parametrize("name", ["breakhis", "chexpert", "fitzpatrick17k", "origa"])
def test_builtin_checklists_complete_rule_clean_and_fit_untrimmed(name):
    preset = get_preset(name)
    assert preset.spec.checklists, "every dataset preset ships checklists"
    if preset.classes is not None:
        assert set(preset.spec.checklists) == set(preset.classes)
    for label, checklist in preset.spec.checklists.items():
        assert list(checklist) == preset.checklist_attributes
        assert preset.ruleset.violations(checklist, label) == [], label
        full = f"{label}. " + "; ".join(f"{k}: {v}" for k, v in checklist.items()) + "."
        assert preset.render_checklist(label) == full  # written to fit: no trimming needed
        assert clip_token_count(full) <= preset.spec.checklist_max_tokens
        preset.checklist_model.model_validate(
            {k: checklist[a] for k, a in preset.checklist_keys.items()}, context={"label": label}
        )


def test_fitzpatrick_has_twenty_condition_checklists():
    assert len(get_preset("fitzpatrick17k").spec.checklists) == 20


def test_no_finding_rejects_pathology_words():
    preset = get_preset("chexpert")
    bad = _cxr(description="Faint right basal opacity with a small effusion.")
    with pytest.raises(ValidationError) as info:
        preset.validate(bad, "No Finding")
    message = str(info.value)
    assert "opacit*" in message and "effusion" in message
    # the same words are fine for an effusion image
    preset.validate(bad | {"key_findings": ["blunted costophrenic angle"]}, "Pleural Effusion")


def test_no_finding_rejects_pathology_enum_values_too():
    preset = get_preset("chexpert")
    with pytest.raises(ValidationError, match="patchy airspace opacity"):
        preset.validate(_cxr(key_findings=["patchy airspace opacity"]), "No Finding")


def test_enum_violations_rejected():
    preset = get_preset("chexpert")
    with pytest.raises(ValidationError, match="view"):
        preset.validate(_cxr(view="lateral"), "No Finding")
    with pytest.raises(ValidationError, match="key_findings"):
        preset.validate(_cxr(key_findings=["ground glass"]), "No Finding")
    with pytest.raises(ValidationError, match="key_findings"):
        preset.validate(_cxr(key_findings=[]), "No Finding")  # min_items 1
    with pytest.raises(ValidationError, match="extra"):
        preset.validate(_cxr(diagnosis="normal"), "No Finding")
    with pytest.raises(ValidationError, match="devices"):
        preset.validate({k: v for k, v in _cxr().items() if k != "devices"}, "No Finding")


def test_negations_rejected_in_every_preset():
    for name in BUILTIN:
        preset = get_preset(name)
        data = valid_fields(preset, (preset.classes or ["lesion"])[0])
        text_field = next(f.name for f in preset.spec.fields if f.type == "text")
        data[text_field] = "there is no visible lesion"
        with pytest.raises(ValidationError, match="negation 'no'"):
            preset.validate(data, (preset.classes or ["lesion"])[0])


def test_other_diagnosis_words_rejected():
    preset = get_preset("chexpert")
    with pytest.raises(ValidationError, match="pneumonia"):
        preset.validate(_cxr(description="Enlarged heart, also pneumonia on the right."), "Cardiomegaly")
    breakhis = get_preset("breakhis")
    data = valid_fields(breakhis, "fibroadenoma")
    with pytest.raises(ValidationError, match="carcinoma"):
        breakhis.validate(data | {"description": "Looks like ductal carcinoma."}, "fibroadenoma")
    # the label's own name is allowed; "fibroadenoma" does not match "adenoma" of another class
    breakhis.validate(data | {"description": "Fibroadenoma with compressed ducts."}, "fibroadenoma")


def test_word_limits():
    preset = get_preset("chexpert")
    with pytest.raises(ValidationError, match="the limit is 35 words"):
        preset.validate(_cxr(description=" ".join(["clear"] * 36)), "No Finding")


def test_generic_preset_learns_dataset_classes():
    preset = get_preset("generic").with_classes(["melanoma", "nevus"])
    data = valid_fields(preset, "nevus")
    with pytest.raises(ValidationError, match="melanoma"):
        preset.validate(data | {"description": "Resembles melanoma."}, "nevus")
    assert preset.prompt_hash != get_preset("generic").prompt_hash


def test_system_prompt_states_label_as_constraint_and_lists_allowed_values():
    preset = get_preset("chexpert")
    prompt = preset.system_prompt("No Finding")
    assert 'confirmed label is "No Finding"' in prompt and "JSON" in prompt
    assert "patchy airspace opacity" not in prompt and "clear lung fields" in prompt
    assert "opacit*" in prompt  # label-specific forbidden words are announced


def test_render_trims_to_budget_keeping_the_first_segment():
    preset = get_preset("chexpert")
    data = _cxr(description=" ".join(["evenly lucent parenchyma"] * 11))
    text = preset.render(data, "No Finding", max_tokens=30)
    assert clip_token_count(text) <= 30
    assert text.startswith("posteroanterior chest X-ray, No Finding")
    # empty list fields drop their segment
    assert not preset.render(_cxr(), "No Finding").endswith("with")
    assert "with endotracheal tube" in preset.render(_cxr(devices=["endotracheal tube"]), "No Finding")


def test_checklist_trimming_keeps_every_attribute():
    preset = get_preset("chexpert")
    text = preset.render_checklist("Cardiomegaly", max_tokens=45)
    assert clip_token_count(text) <= 45
    assert all(f"{a}:" in text for a in preset.checklist_attributes)


def test_clip_token_count_matches_known_values():
    # reference counts from open_clip's SimpleTokenizer (+2 for start/end tokens)
    assert clip_token_count("a photo of a cat") == 7
    assert clip_token_count("") == 2
    long = clip_token_count("cardiothoracic ratio above one half, globular outline")
    assert 10 <= long <= 14
    assert approx_token_count("cardiomegaly") >= 3


@pytest.mark.slow
def test_clip_token_count_equals_open_clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    texts = [v for p in BUILTIN for f in get_preset(p).spec.fields for v in [f.description, *(f.values or [])]]
    texts += ["H&E breast tissue; 40X", "don't: 3.5 cm", "café au lait"]
    for text in texts:
        assert clip_token_count(text) == len(tokenizer.encode(text)) + 2, text


def test_truncate_words():
    assert truncate_words("a b c d e f", 5, lambda t: len(t.split()) + 2) == "a b c"


def test_rules_helpers():
    assert count_words("well-defined, can't stop") == 3
    assert find_negations("No effusion; lungs are not clear, can't see") == ["no", "not", "can't"]
    assert find_negations("normal nodes, notable knots") == []
    assert find_terms("Opacities in both bases", ["opacit*", "effusion"]) == ["opacit*"]
    assert find_terms("pleural effusions", ["effusion"]) == ["effusion"]
    assert find_terms("fibroadenoma", ["adenoma"]) == []


def test_extract_json_variants():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Here you go: {"a": {"b": "}"}} thanks') == {"a": {"b": "}"}}
    from clinalign.enrich import JSONExtractError

    with pytest.raises(JSONExtractError, match="not valid JSON"):
        extract_json('{"a": 1, "b": ')
    with pytest.raises(JSONExtractError, match="no JSON object"):
        extract_json("plain text")
    with pytest.raises(JSONExtractError, match="list"):
        extract_json("[1, 2]")


CUSTOM = """
name: toy_xray
version: "2"
modality: knee X-ray
classes: [osteoarthritis, normal]
fields:
  - name: joint_space
    type: enum
    values: [narrowed joint space, preserved joint space]
    description: Width of the tibiofemoral joint space.
  - name: features
    type: enum_list
    values: [osteophytes, subchondral sclerosis, smooth cortical outline]
    min_items: 1
    max_items: 2
    description: Visible bone features.
  - name: description
    type: text
    max_words: 20
    description: Short visual description.
rules:
  forbidden_terms_by_label:
    normal: [narrowed, osteophyte*, sclerosis]
system_prompt: "Describe this {modality}. The label is \\"{label}\\". Fields:\\n{fields}\\nJSON only."
render:
  segments: ["knee X-ray, {label}", "{joint_space}", "{features}", "{description}"]
  max_tokens: 40
checklist_attributes: [Location, Lesion Type, Shape/Size, Opacity/Density, Texture]
checklists:
  osteoarthritis:
    Location: medial tibiofemoral compartment
    Lesion Type: marginal osteophytes
    Shape/Size: asymmetric joint space narrowing
    Opacity/Density: subchondral sclerosis
    Texture: irregular articular margins
"""


def test_custom_yaml_preset_without_code(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(CUSTOM)
    preset = get_preset(str(path))
    assert preset.name == "toy_xray" and preset.version == "2"
    ok = {"joint_space": "preserved joint space", "features": ["smooth cortical outline"], "description": "Even gaps."}
    assert preset.render(preset.validate(ok, "normal"), "normal").startswith("knee X-ray, normal")
    with pytest.raises(ValidationError, match="narrowed"):
        preset.validate(ok | {"joint_space": "narrowed joint space"}, "normal")
    with pytest.raises(ValidationError, match="osteoarthritis"):  # other label named
        preset.validate(ok | {"description": "Early osteoarthritis."}, "normal")
    assert 'The label is "normal"' in preset.system_prompt("normal")
    assert preset.json_schema("normal")["properties"]["joint_space"]["enum"] == ["preserved joint space"]
    assert preset.render_checklist("osteoarthritis").startswith("osteoarthritis. Location:")
    assert preset.render_checklist("normal") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["fields"][0].pop("values"), "needs a non-empty `values`"),
        (lambda d: d["fields"][2].pop("max_words"), "needs `max_words`"),
        (lambda d: d.update(system_prompt="Label {lable}"), "unknown placeholder"),
        (lambda d: d["render"].update(segments=["{nope}"]), "unknown field"),
        (lambda d: d["checklists"]["osteoarthritis"].pop("Texture"), "expected exactly"),
        (lambda d: d["rules"]["forbidden_terms_by_label"].update(fracture=["x"]), "not in classes"),
        (lambda d: d["fields"][0]["values"].append("no joint space"), "negation"),
        (lambda d: d.update(colour="blue"), "colour"),
    ],
)
def test_invalid_yaml_presets_name_the_problem(tmp_path, change, message):
    import yaml

    data = yaml.safe_load(CUSTOM)
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as info:
        load_preset_file(path)
    assert str(path) in str(info.value)


def test_register_preset_for_other_modules(tmp_path):
    import yaml

    data = yaml.safe_load(CUSTOM) | {"name": "toyderm_test"}
    register_preset("toyderm_test", lambda: preset_from_dict(data, source="test"))
    try:
        assert get_preset("toyderm_test").name == "toyderm_test"
        with pytest.raises(ConfigError, match="already registered"):
            register_preset("toyderm_test", lambda: None)
    finally:
        from clinalign.enrich import presets

        presets._FACTORIES.pop("toyderm_test", None)
        presets._CACHE.pop("toyderm_test", None)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="chexpert"):
        get_preset("nope")


def test_prompt_hash_is_stable_and_json_schema_serialisable():
    a = get_preset("origa")
    assert a.prompt_hash == preset_from_dict(a.spec.model_dump(), source="copy").prompt_hash
    json.dumps(a.json_schema("normal"))
