"""The one enriched-row reader and checklist loader (clinalign.data.enriched) and the commands that use it."""

from __future__ import annotations

import json

import pytest

from clinalign.data.enriched import (
    checklist_attributes,
    checklist_texts,
    iter_enriched_rows,
    part_name,
    read_enriched,
    write_index,
)
from clinalign.errors import DataError


def _row(i: int, **extra) -> dict:
    return {"id": f"r{i}", "image": f"img{i}.png", "label": "ab"[i % 2], "t_ep": f"prompt {i}", "t_c": "c", **extra}


def _part_set(folder, sizes):
    parts = folder / "enriched"
    parts.mkdir(parents=True)
    n, listed = 0, []
    for k, size in enumerate(sizes):
        rows = [_row(n + j) for j in range(size)]
        (parts / part_name(k)).write_text("".join(json.dumps(r) + "\n" for r in rows))
        listed.append((part_name(k), size))
        n += size
    write_index(parts, listed)
    return folder


def test_part_files_read_as_one_set_in_index_order(tmp_path):
    out = _part_set(tmp_path / "out", [3, 0, 2])
    ids = [row.id for row in read_enriched(out)]
    assert ids == ["r0", "r1", "r2", "r3", "r4"]
    # the same set through the index file, the parts folder, and every command's reader
    assert [r.id for r in read_enriched(out / "enriched" / "index.json")] == ids
    assert [r.id for r in read_enriched(out / "enriched")] == ids
    from clinalign.diffusion.generate import read_prompts
    from clinalign.training.data import load_examples

    prompts = read_prompts(out)
    assert [(p.prompt, p.ref_id, p.checklist, p.label) for p in prompts][:2] == [
        ("prompt 0", "r0", "c", "a"),
        ("prompt 1", "r1", "c", "b"),
    ]
    for i in range(5):
        (tmp_path / f"img{i}.png").write_bytes(b"")
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # enriched rows keep image paths as the adapter saw them (here: relative to the cwd)
    try:
        examples = load_examples(out)
    finally:
        os.chdir(cwd)
    assert [(e.id, e.prompt, e.checklist) for e in examples][-1] == ("r4", "prompt 4", "c")


def test_prompt_field_precedence_and_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "t_ep": "t", "checklist": "", "t_c": "tc"}) + "\n")
    row = next(read_enriched(path))
    assert (row.prompt, row.checklist) == ("p", "tc")  # 'prompt' before 't_ep'; empty text counts as absent
    path.write_text(json.dumps(_row(0)) + "\n" + json.dumps({"id": "x", "label": "a"}) + "\n")
    with pytest.raises(DataError, match=r"rows\.jsonl, line 2: missing 'prompt' \(or 't_ep'\): to generate"):
        list(read_enriched(path, require="to generate"))
    path.write_text(json.dumps(_row(0, t_ep=3)) + "\n")
    with pytest.raises(DataError, match=r"rows\.jsonl, line 1: field 't_ep' must be text, got int"):
        list(read_enriched(path))
    path.write_text(json.dumps(_row(0)) + "\n[1]\n")
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        list(iter_enriched_rows(path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no enriched rows here"):
        list(read_enriched(tmp_path / "empty"))
    out = _part_set(tmp_path / "out", [1, 1])
    (out / "enriched" / part_name(1)).unlink()
    with pytest.raises(DataError, match="lists part files that do not exist"):
        list(read_enriched(out))


def test_one_checklist_loader_for_every_layout(tmp_path):
    written = tmp_path / "checklists.json"  # `clinalign checklists` output
    entry = {"attributes": {"Colour": "red", "Shape": "round"}, "t_c": "Colour: red lesion.", "source": "builtin"}
    written.write_text(json.dumps({"checklists": {"a": entry}, "failures": {}, "missing": []}))
    assert checklist_texts(written) == {"a": "Colour: red lesion."}
    assert checklist_attributes(written) == {"a": {"Colour": "red", "Shape": "round"}}
    preset_block = tmp_path / "c.yaml"
    preset_block.write_text("checklists:\n  a:\n    Location: left\n    Colour: red\n  b: 'Size: small; flat'\n")
    assert checklist_texts(preset_block) == {"a": "Location: left; Colour: red", "b": "Size: small; flat"}
    assert checklist_attributes(preset_block)["b"] == {"Size": "small", "item 2": "flat"}
    assert checklist_texts({"a": ["x", "y"]}) == {"a": "x; y"}
    with pytest.raises(DataError, match="checklist for class 'a' is empty"):
        checklist_texts({"a": ""})
    with pytest.raises(DataError, match="must be text, a list or a mapping"):
        checklist_texts({"a": 3})
    # the four former loaders are this one
    from clinalign.enrich.checklists import load_checklists_file
    from clinalign.evaluation.judge import read_checklist_attributes
    from clinalign.scoring.sets import read_checklists
    from clinalign.training.data import load_checklists

    assert read_checklists(preset_block) == load_checklists(preset_block) == checklist_texts(preset_block)
    assert load_checklists_file(written) == read_checklist_attributes(written) == checklist_attributes(written)
