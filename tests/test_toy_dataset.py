"""ToyDerm generator: deterministic by seed, balanced, attributes and texts consistent, files written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clinalign.data import read_manifest
from clinalign.errors import ConfigError
from clinalign.toy import (
    CHECKLIST_ATTRIBUTES,
    CLASSES,
    SKIN_TONES,
    ToyDerm,
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
from clinalign.toy.enrich import toyderm_preset


def test_same_seed_same_images_and_prompts():
    a = generate_split("train", 12, seed=3)
    b = generate_split("train", 12, seed=3)
    assert [s.id for s in a] == [s.id for s in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert [s.prompt for s in a] == [s.prompt for s in b]


def test_different_seed_or_split_differs():
    a = generate_split("train", 8, seed=0)
    b = generate_split("train", 8, seed=1)
    c = generate_split("test", 8, seed=0)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))


def test_samples_do_not_depend_on_chunking():
    whole = generate_split("test", 10, seed=5)
    part = generate_split("test", 3, seed=5, start=4)
    for x, y in zip(whole[4:7], part, strict=True):
        assert x.id == y.id
        assert np.array_equal(x.image, y.image)


def test_classes_balanced_and_image_shape():
    samples = generate_split("train", 40, seed=0)
    counts = {c: sum(s.label == c for s in samples) for c in CLASSES}
    assert set(counts.values()) == {10}
    assert samples[0].image.shape == (32, 32, 3)
    assert samples[0].image.dtype == np.uint8
    big = generate_split("train", 1, seed=0, size=48)[0]
    assert big.image.shape == (48, 48, 3)


def test_patients_share_skin_tone_within_split():
    samples = generate_split("train", 20, seed=2)
    by_patient: dict[str, set[str]] = {}
    for s in samples:
        by_patient.setdefault(s.patient_id, set()).add(s.attributes.skin_tone)
    assert all(len(tones) == 1 for tones in by_patient.values())
    assert all(s.patient_id.startswith("train-") for s in samples)


@pytest.mark.parametrize("label", CLASSES)
def test_attributes_follow_class_criteria(label):
    diameters, n_colours = [], []
    for seed in range(12):
        image, attrs = render_image(label, seed)
        assert attrs.label == label
        assert image.shape == (32, 32, 3)
        diameters.append(attrs.diameter_frac)
        n_colours.append(len(attrs.colours))
    if label == "benign nevus":
        assert max(diameters) < 0.32
        assert set(n_colours) == {1}
    if label == "melanoma":
        assert min(diameters) > 0.4
        assert min(n_colours) >= 3
    if label == "erythema multiforme":
        assert render_image(label, 0)[1].rings == 3


def test_lesion_colours_differ_from_skin_the_expected_way():
    # vitiligo is lighter than its surroundings, melanoma darker: the criteria are in the pixels
    def centre_minus_corner(label):
        out = []
        for seed in range(8):
            image, attrs = render_image(label, seed, skin_tone="medium")
            if attrs.position != "centre":
                continue
            img = image.astype(float).mean(-1)
            out.append(img[14:18, 14:18].mean() - img[:3, :3].mean())
        return out

    assert all(d > 20 for d in centre_minus_corner("vitiligo"))
    assert all(d < -20 for d in centre_minus_corner("melanoma"))


def test_enriched_prompts_come_from_the_preset():
    # one source of truth: the row's t_ep is the toyderm preset's rendering of the recorded attributes
    preset = toyderm_preset()
    for sample in generate_split("train", 40, seed=1):
        text = sample.prompt
        attrs = sample.attributes
        fields = {
            "skin_tone": attrs.skin_tone, "size": attrs.size, "shape": attrs.shape, "lesion_type": attrs.lesion_type,
            "location": attrs.position, "border": attrs.border, "colours": list(attrs.colours),
            "texture": attrs.texture,
        }  # fmt: skip
        assert text == preset.render(preset.validate(fields, attrs.label), attrs.label)
        assert enriched_prompt(attrs) == text
        assert not re.search(r"\b(no|not|without|absent|absence)\b", text), text
        # the diagnosis is named once (the generator's label prompt is its prefix), no other class is
        assert text.startswith(f"{label_prompt(attrs.label)}, {attrs.skin_tone} skin, {attrs.size} "), text
        for name in CLASSES:
            assert (name in text) == (name == attrs.label), text
        assert f"in the {attrs.position}" in text and attrs.border in text


def test_checklists_have_all_attributes():
    lists = checklists()
    preset = toyderm_preset()
    assert list(lists) == list(CLASSES)
    assert list(CHECKLIST_ATTRIBUTES) == preset.checklist_attributes
    for label, text in lists.items():
        assert text == preset.render_checklist(label, None)
        assert text.startswith(f"{label}. ")
        for attribute in CHECKLIST_ATTRIBUTES:
            assert f"{attribute}: {checklist_attributes(label)[attribute]}" in text
        assert checklist(label) == text
        assert not re.search(r"\b(no|not|without)\b", text)
    with pytest.raises(ConfigError, match="label must be one of"):
        checklist("eczema")


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="split must be one of"):
        generate_split("validation", 2)
    with pytest.raises(ConfigError, match="size must be at least 16"):
        render_image("melanoma", 0, size=8)


def test_tensors_from_dataset():
    data = ToyDerm.generate(n_train=8, n_test=4, seed=0)
    images = data.images("train")
    assert images.shape == (8, 3, 32, 32)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert data.labels("test").tolist() == [s.label_index for s in data.test]
    assert len(data.prompts("test")) == 4


def test_write_toyderm_files_and_rerun_identical(tmp_path):
    files = write_toyderm(tmp_path, n_train=8, n_test=4, seed=0)
    records = read_manifest(files.manifest)
    assert len(records) == 12
    assert {r.split for r in records} == {"train", "test"}
    assert all(r.image.is_file() and r.patient_id for r in records)
    rows = [json.loads(line) for line in files.enriched.read_text().splitlines()]
    assert len(rows) == 12
    for row in rows:
        for key in ("id", "image", "label", "t_ep", "checklist", "skin_tone", "border", "colours", "split"):
            assert key in row
        assert (tmp_path / row["image"]).is_file()
    assert json.loads(files.checklists.read_text()) == checklists()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    write_toyderm(tmp_path, n_train=8, n_test=4, seed=0)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after


def test_skin_tone_of_reads_the_recorded_tone():
    samples = generate_split("test", 120, seed=5)
    read = [skin_tone_of(s.image) for s in samples]
    assert np.mean([r == s.attributes.skin_tone for r, s in zip(read, samples, strict=True)]) > 0.9
    assert set(read) == set(SKIN_TONES)
    # an image drawn with a forced tone reads as that tone, whatever the class
    for label in CLASSES:
        for tone in ("very light", "dark"):
            image, _ = render_image(label, 99, skin_tone=tone)
            assert skin_tone_of(image) == tone
            assert skin_tone_of(image.astype(np.float32) / 255) == tone
    with pytest.raises(ConfigError, match="RGB image"):
        skin_tone_of(np.zeros((8, 8)))
