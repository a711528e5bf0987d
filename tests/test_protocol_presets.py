"""The CRAFT paper protocol's presets: JSON schemas and rules against hand-written valid and invalid replies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clinalign.enrich import get_preset
from clinalign.enrich.presets import preset_from_dict
from clinalign.enrich.render import clip_token_count
from clinalign.enrich.testing import valid_fields
from clinalign.errors import ConfigError

PAPER = ["chexpert_craft_paper", "fitzpatrick17k_craft_paper", "breakhis_craft_paper", "origa_craft_paper"]


def _errors(name: str, data: dict, label: str) -> str:
    with pytest.raises(ValidationError) as info:
        get_preset(name).validate(data, label)
    return str(info.value)


# ----------------------------------------------------------------------------------------------- all four
@pytest.mark.parametrize("name", PAPER)
def test_paper_preset_fields_schema_and_assumptions(name):
    preset = get_preset(name)
    expected = {
        "chexpert_craft_paper": ["devices", "key_findings", "visual_summary"],
        "fitzpatrick17k_craft_paper": ["body_part", "lesion_features", "skin_type"],
        "breakhis_craft_paper": ["tissue_context", "key_findings", "visual_summary"],
        "origa_craft_paper": ["disc_appearance", "key_findings", "visual_summary"],
    }[name]
    assert [f.name for f in preset.spec.fields] == expected
    schema = preset.json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(expected)
    # every unpublished value is declared as our assumption, never as the paper's
    assert preset.spec.assumptions
    assert all(" ours" in a or "our assumption" in a or "our reading" in a for a in preset.spec.assumptions)


@pytest.mark.parametrize("name", PAPER)
def test_paper_preset_valid_reply_per_class_renders_within_budget(name):
    preset = get_preset(name)
    for label in preset.classes:
        data = valid_fields(preset, label)
        output = preset.validate(data, label)
        t_ep = preset.render(output, label)
        assert label in t_ep
        assert clip_token_count(t_ep) <= 77
        assert preset.render_checklist(label) is not None


@pytest.mark.parametrize("name", PAPER)
def test_paper_system_prompt_has_label_as_ground_truth_and_describe_not_predict(name):
    preset = get_preset(name)
    label = preset.classes[0]
    prompt = preset.system_prompt(label)
    assert f'"{label}"' in prompt and "ground truth" in prompt and "Describe, do not predict" in prompt


# ----------------------------------------------------------------------------------------------- CheXpert
def _cxr(**overrides):
    data = {
        "devices": ["none"],
        "key_findings": ["clear lung fields", "sharp costophrenic angles"],
        "visual_summary": "Clear, evenly lucent lungs with sharp costophrenic angles and a normal heart size.",
    }
    data.update(overrides)
    return data


def test_chexpert_devices_none_is_accepted_and_left_out_of_t_ep():
    preset = get_preset("chexpert_craft_paper")
    output = preset.validate(_cxr(), "No Finding")
    t_ep = preset.render(output, "No Finding")
    assert "none" not in t_ep.lower().split()
    with_device = preset.render(preset.validate(_cxr(devices=["pacemaker", "PICC line"]), "No Finding"), "No Finding")
    assert with_device.endswith("with pacemaker, PICC line")


def test_chexpert_devices_none_with_another_device_or_negated_device_rejected():
    assert "must be the only item" in _errors("chexpert_craft_paper", _cxr(devices=["none", "pacemaker"]), "No Finding")
    assert "negation 'no'" in _errors("chexpert_craft_paper", _cxr(devices=["no devices"]), "No Finding")


def test_chexpert_no_finding_forbids_pathology_terms():
    reply = _cxr(visual_summary="Faint opacity at the right base with clear upper zones.")
    assert "'opacit*'" in _errors("chexpert_craft_paper", reply, "No Finding")
    # the same sentence is fine for a pathology label
    get_preset("chexpert_craft_paper").validate(
        _cxr(key_findings=["patchy airspace opacity"], visual_summary=reply["visual_summary"]), "Pneumonia"
    )


def test_chexpert_key_findings_pool_word_limit_and_negations():
    assert "key_findings" in _errors("chexpert_craft_paper", _cxr(key_findings=["a heart the size of a melon"]), "X")
    long = " ".join(["dense"] * 17)
    assert "limit is 16 words" in _errors("chexpert_craft_paper", _cxr(visual_summary=long), "Cardiomegaly")
    negated = _cxr(key_findings=["enlarged cardiac silhouette"], visual_summary="Enlarged heart without effusion.")
    assert "negation 'without'" in _errors("chexpert_craft_paper", negated, "Cardiomegaly")


def test_chexpert_schema_for_no_finding_narrows_the_pool():
    preset = get_preset("chexpert_craft_paper")
    pool = preset.json_schema("No Finding")["properties"]["key_findings"]["items"]["enum"]
    assert "clear lung fields" in pool
    assert "patchy airspace opacity" not in pool and "enlarged cardiac silhouette" not in pool


# ------------------------------------------------------------------------------------------- Fitzpatrick
def _derm(**overrides):
    data = {"body_part": "arm", "lesion_features": "round red scaly patches", "skin_type": "fair"}
    data.update(overrides)
    return data


def test_fitzpatrick_jargon_rejected_with_plain_wording_in_the_message():
    message = _errors("fitzpatrick17k_craft_paper", _derm(lesion_features="erythematous scaly plaques"), "psoriasis")
    assert "jargon term 'erythematous'" in message and "'red'" in message
    get_preset("fitzpatrick17k_craft_paper").validate(_derm(), "psoriasis")


def test_fitzpatrick_closed_lists_and_word_limit():
    assert "skin_type" in _errors("fitzpatrick17k_craft_paper", _derm(skin_type="olive"), "psoriasis")
    assert "body_part" in _errors("fitzpatrick17k_craft_paper", _derm(body_part="left elbow"), "psoriasis")
    long = " ".join(["red"] * 21)
    assert "limit is 20 words" in _errors("fitzpatrick17k_craft_paper", _derm(lesion_features=long), "psoriasis")
    assert get_preset("fitzpatrick17k_craft_paper").spec.fields[2].values == ["fair", "brown", "dark"]


def test_fitzpatrick_other_diagnosis_rejected():
    message = _errors("fitzpatrick17k_craft_paper", _derm(lesion_features="scaly patches like psoriasis"), "eczema")
    assert "'psoria*'" in message


def test_fitzpatrick_checklists_twenty_classes_erythema_multiforme_without_texture():
    preset = get_preset("fitzpatrick17k_craft_paper")
    assert len(preset.classes) == 20
    for name in ("actinic keratosis", "eczema", "erythema multiforme", "scabies"):
        assert name in preset.classes
    assert set(preset.checklist("erythema multiforme")) == {"Location", "Lesion Type", "Shape/Size", "Color"}
    assert all(len(preset.checklist(c)) == 5 for c in preset.classes if c != "erythema multiforme")


def test_repair_turn_fixes_jargon(tmp_path, monkeypatch):
    """Through the real client: a jargon reply gets a repair turn naming the plain wording, then validates."""
    import json

    from enrich_fixtures import fast_config
    from PIL import Image

    from clinalign.data.records import Record
    from clinalign.enrich import enrich
    from clinalign.enrich.testing import LoopbackServer, ScriptedResponse, chat_completion

    monkeypatch.setenv("CLINALIGN_TEST_KEY", "test-key")
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 120, 110)).save(image)
    seen: list[dict] = []

    def handle(body, number):
        seen.append(body)
        text = "erythematous scaly plaques" if len(seen) == 1 else "red scaly plaques"
        return ScriptedResponse(body=chat_completion(json.dumps(_derm(lesion_features=text))))

    with LoopbackServer(handle) as server:
        result = enrich(
            [Record(id="a", image=image, label="psoriasis")],
            get_preset("fitzpatrick17k_craft_paper"),
            fast_config(server.url, concurrency=1),
            tmp_path / "out",
        )
    assert result.succeeded == 1 and result.repairs == 1 and len(seen) == 2
    repair = json.dumps(seen[1]["messages"][2:])
    assert "jargon term 'erythematous'" in repair and "'red'" in repair
    row = json.loads((tmp_path / "out" / "enriched.jsonl").read_text().splitlines()[0])
    assert row["fields"]["lesion_features"] == "red scaly plaques"
    assert row["t_ep"] == "clinical photograph of psoriasis on the arm, fair skin. red scaly plaques"


# ----------------------------------------------------------------------------------------------- BreakHis
def _hist(**overrides):
    data = {
        "tissue_context": "fibroepithelial",
        "key_findings": ["compressed slit-like ducts"],
        "visual_summary": "Pale pink loose stroma surrounds compressed ducts lined by two cell layers.",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "text, term",
    [
        ("Tumour cells strongly positive for HER2 receptors.", "her2"),
        ("Nuclei suggest a high grade lesion.", "grade"),
        ("A high mitotic rate in the nests.", "mitotic rate"),
        ("Good prognosis after excision.", "prognos*"),
    ],
)
def test_breakhis_forbids_biomarkers_grade_mitotic_rate_prognosis(text, term):
    assert f"'{term}'" in _errors("breakhis_craft_paper", _hist(visual_summary=text), "fibroadenoma")


def test_breakhis_tissue_context_closed_set_and_valid_reply():
    get_preset("breakhis_craft_paper").validate(_hist(), "fibroadenoma")
    assert "tissue_context" in _errors("breakhis_craft_paper", _hist(tissue_context="adipose"), "fibroadenoma")
    values = get_preset("breakhis_craft_paper").spec.fields[0].values
    assert values == ["glandular", "fibroepithelial", "stromal", "papillary", "mucinous", "infiltrative", "mixed"]
    assert "limit is 18 words" in _errors(
        "breakhis_craft_paper", _hist(visual_summary=" ".join(["pink"] * 19)), "fibroadenoma"
    )


# -------------------------------------------------------------------------------------------------- ORIGA
def _fundus(**overrides):
    data = {
        "disc_appearance": "enlarged cup",
        "key_findings": ["large cup", "thin inferior rim"],
        "visual_summary": "A large pale cup with a thin inferior rim and bayoneting vessels.",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "text, term",
    [
        ("Large cup matching a superior visual field defect.", "visual field*"),
        ("Large cup, raised IOP likely.", "iop"),
        ("Large cup with thinning seen on OCT.", "oct"),
        ("Large cup that needs treatment soon.", "treatment*"),
    ],
)
def test_origa_forbids_visual_field_iop_oct_treatment(text, term):
    assert f"'{term}'" in _errors("origa_craft_paper", _fundus(visual_summary=text), "glaucoma")


def test_origa_disc_appearance_closed_set_and_label_rules():
    preset = get_preset("origa_craft_paper")
    preset.validate(_fundus(), "glaucoma")
    assert preset.spec.fields[0].values == [
        "normal disc",
        "enlarged cup",
        "rim thinning",
        "notched rim",
        "glaucomatous disc",
    ]
    assert "disc_appearance" in _errors("origa_craft_paper", _fundus(disc_appearance="pale disc"), "glaucoma")
    # a non-glaucoma eye is not described with glaucomatous signs
    assert "'enlarged cup'" in _errors("origa_craft_paper", _fundus(key_findings=["small central cup"]), "non-glaucoma")
    assert preset.json_schema("non-glaucoma")["properties"]["disc_appearance"]["enum"] == ["normal disc"]


# ------------------------------------------------------------------------------------------ spec additions
def _spec(**extra):
    base = {
        "name": "mini",
        "modality": "photo",
        "classes": ["a", "b"],
        "fields": [{"name": "text", "type": "text", "max_words": 5, "description": "d"}],
        "render": {"segments": ["{label}", "{text}"]},
        "checklist_attributes": ["Location", "Texture"],
    }
    base.update(extra)
    return base


def test_partial_checklists_need_checklist_partial():
    checklists = {"a": {"Location": "arm"}}
    with pytest.raises(ConfigError, match="expected exactly"):
        preset_from_dict(_spec(checklists=checklists))
    assert preset_from_dict(_spec(checklists=checklists, checklist_partial=True)).checklist("a") == {"Location": "arm"}
    with pytest.raises(ConfigError, match="non-empty subset"):
        preset_from_dict(_spec(checklists={"a": {"Colour": "red"}}, checklist_partial=True))


def test_existing_presets_keep_their_prompt_hash_shape():
    # plain_language was added later: a preset without it hashes its rules as before (no 'plain_language' key)
    preset = get_preset("chexpert")
    assert preset.spec.rules.plain_language == {}
    assert len(preset.prompt_hash) == 16


@pytest.mark.parametrize("dataset", ["chexpert", "fitzpatrick17k", "breakhis", "origa"])
def test_paper_example_configs_load_and_use_the_protocol_defaults(dataset):
    from pathlib import Path

    from clinalign import TrainConfig
    from clinalign.protocols import get_protocol

    path = Path(__file__).resolve().parents[1] / "examples" / f"craft_paper_{dataset}.yaml"
    config = TrainConfig.from_file(path)
    protocol = get_protocol("craft-paper")
    assert config.eval_critic == protocol.scoring.evaluator
    assert (config.train_split, config.eval_split) == ("train", "test")
    assert (config.lambda_diff, config.lambda_reward, config.num_inference_steps, config.k, config.repeats) == (
        0.2,
        0.8,
        20,
        1,
        2,
    )
    assert f"--dataset {dataset}" in path.read_text() and "--protocol craft-paper" in path.read_text()
