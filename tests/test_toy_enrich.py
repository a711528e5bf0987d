"""The toyderm preset: generator attributes go through the real enrichment schema, rules and renderer."""

from __future__ import annotations

import json

import pytest

from clinalign.errors import DataError
from clinalign.toy import write_toyderm
from clinalign.toy.enrich import attribute_fields, enrich_toyderm, toyderm_preset


def test_enrich_toyderm_validates_and_renders(tmp_path):
    files = write_toyderm(tmp_path / "data", n_train=12, n_test=4, seed=3)
    target = enrich_toyderm(files.enriched, tmp_path / "enrich")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    source = [json.loads(line) for line in files.enriched.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    preset = toyderm_preset()
    for row, src in zip(rows, source, strict=True):
        assert row["fields"] == attribute_fields(src)
        assert row["t_ep"] == preset.render(row["fields"], row["label"]) == row["prompt"]
        assert row["t_ep"].startswith(f"dermatology photo of {row['label']}, {src['skin_tone']} skin")
        assert f"in the {src['position']}" in row["t_ep"]
        assert row["t_c"] == row["checklist"] and row["t_c"].startswith(row["label"])
        assert row["preset"] == "toyderm" and (tmp_path / "enrich" / row["image"]).is_file()
    mtime = target.stat().st_mtime_ns
    enrich_toyderm(files.enriched, tmp_path / "enrich")  # rerun: nothing to do
    assert target.stat().st_mtime_ns == mtime


def test_enrich_toyderm_rejects_attributes_outside_the_schema(tmp_path):
    files = write_toyderm(tmp_path / "data", n_train=4, n_test=4, seed=0)
    rows = [json.loads(line) for line in files.enriched.read_text().splitlines()]
    rows[2]["colours"] = ["melanoma brown"]
    files.enriched.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"row 3 .*toyderm schema"):
        enrich_toyderm(files.enriched, tmp_path / "enrich")
    assert not (tmp_path / "enrich" / "enriched.jsonl").exists()


def test_toyderm_rules_reject_other_diagnoses():
    preset = toyderm_preset()
    fields = {
        "skin_tone": "olive",
        "size": "large",
        "shape": "asymmetric",
        "lesion_type": "pigmented plaque",
        "location": "centre",
        "border": "irregular notched border",
        "colours": ["black", "red"],
        "texture": "mottled",
    }
    preset.validate(fields, "melanoma")
    with pytest.raises(ValueError, match="vitiligo"):
        preset.validate({**fields, "lesion_type": "vitiligo"}, "melanoma")
