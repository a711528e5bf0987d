"""Enrichment of ToyDerm through the real enrichment machinery, with the generator as the "MLLM".

For a real dataset an MLLM looks at each image, constrained to its true label, and returns JSON that
the preset validates and renders to ``t_ep``. For ToyDerm the generator already knows what it drew:
its recorded attributes are exactly that JSON. They go through the same ``toyderm`` preset (closed
vocabularies, label-dependent rules, renderer, checklists) and are written in the same
``enriched.jsonl`` row format as ``clinalign enrich``, so everything downstream is exercised as it
would be on real data, with no network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from clinalign.errors import DataError

PRESET_NAME = "toyderm"
ORACLE_MODEL = "toyderm-generator-attributes"


def _register() -> None:
    from clinalign.enrich.presets import available_presets, register_preset

    if PRESET_NAME not in available_presets():
        register_preset(PRESET_NAME, str(resources.files("clinalign.toy").joinpath("toyderm.yaml")))


def toyderm_preset():
    """The ``toyderm`` enrichment preset (registered on first use)."""
    from clinalign.enrich.presets import get_preset

    _register()
    return get_preset(PRESET_NAME)


def attribute_fields(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's JSON fields for one image's recorded attributes (what a perfect MLLM would answer)."""
    return {
        "skin_tone": attributes["skin_tone"],
        "size": attributes["size"],
        "shape": attributes["shape"],
        "lesion_type": attributes["lesion_type"],
        "location": attributes["position"],
        "border": attributes["border"],
        "colours": list(attributes["colours"]),
        "texture": attributes["texture"],
    }


def render_enriched_prompt(attributes: Mapping[str, Any], label: str) -> str:
    """``t_ep`` for one image: its attribute fields validated by the preset and rendered by it."""
    preset = toyderm_preset()
    return preset.render(preset.validate(attribute_fields(attributes), label), label)


def enrich_toyderm(source: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Validate and render every row of a ToyDerm ``enriched.jsonl`` (from :func:`write_toyderm`).

    Writes ``out_dir/enriched.jsonl`` (the ``clinalign enrich`` row format, image paths relative to
    ``out_dir``) and ``out_dir/checklists.json``; a rerun with the same rows rewrites nothing.
    Returns the path of the enriched file.
    """
    import json

    from pydantic import ValidationError

    from clinalign.data.records import Record
    from clinalign.enrich.runner import enriched_row
    from clinalign.utils.io import atomic_open, read_jsonl, write_json

    source = Path(source)
    out = Path(out_dir)
    target = out / "enriched.jsonl"
    rows = read_jsonl(source)
    if target.is_file() and [r["id"] for r in read_jsonl(target)] == [r["id"] for r in rows]:
        return target
    preset = toyderm_preset()
    checklists = {label: preset.render_checklist(label, None) for label in preset.classes or []}
    lines = []
    for number, row in enumerate(rows, start=1):
        label = row["label"]
        try:
            fields = preset.validate(attribute_fields(row), label).model_dump(mode="json")
        except (KeyError, ValidationError) as exc:
            raise DataError(
                f"{source}, row {number} ('{row.get('id')}'): attributes fail the toyderm schema: {exc}"
            ) from exc
        image = Path(os.path.relpath(source.parent / row["image"], out))
        record = Record(
            id=row["id"], image=image, label=label, split=row.get("split"), patient_id=row.get("patient_id")
        )
        t_ep = preset.render(fields, label)
        lines.append(json.dumps(enriched_row(record, preset, fields, t_ep, checklists[label], model=ORACLE_MODEL)))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(target) as handle:
        handle.write("\n".join(lines) + "\n")
    write_json(out / "checklists.json", checklists)
    return target
