"""Protocol subsets and splits on synthetic manifests: determinism, group integrity, counts per class."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from clinalign.data.records import Record
from clinalign.data.subsets import (
    SplitManifest,
    even_quotas,
    few_shot,
    group_by_image_hash,
    grouped_split,
    image_hash,
    read_split_file,
    sample_per_class,
)
from clinalign.errors import ConfigError, DataError
from clinalign.protocols import get_protocol, prepare_records

PAPER = get_protocol("craft-paper")


def _records(n_groups: int, classes: list[str], *, per_group: int = 3, seed: int = 1) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for g in range(n_groups):
        label = classes[g % len(classes)]
        for k in range(rng.randint(1, per_group)):
            out.append(Record(id=f"g{g}-{k}", image=Path(f"/x/g{g}-{k}.png"), label=label, patient_id=f"p{g}"))
    return out


def _groups_by_split(records):
    sides: dict[str, set[str]] = {}
    for r in records:
        sides.setdefault(r.patient_id, set()).add(r.split)
    return sides


def test_grouped_split_is_deterministic_and_groups_never_straddle():
    records = _records(60, ["a", "b", "c"])
    first = grouped_split(records, {"train": 0.5, "test": 0.5}, seed=3)
    again = grouped_split(records, {"train": 0.5, "test": 0.5}, seed=3)
    other = grouped_split(records, {"train": 0.5, "test": 0.5}, seed=4)
    assert [r.split for r in first] == [r.split for r in again]
    assert [r.split for r in first] != [r.split for r in other]
    assert all(len(s) == 1 for s in _groups_by_split(first).values())
    # stratified by group label: each class's groups are dealt 50/50 (10 groups per class -> 5/5)
    groups = {(r.patient_id, r.label, r.split) for r in first}
    per = Counter((label, split) for _, label, split in groups)
    assert all(per[(c, s)] == 10 for c in "abc" for s in ("train", "test"))


def test_sample_per_class_counts_and_determinism():
    records = grouped_split(_records(80, ["a", "b"], per_group=4), {"train": 0.5, "test": 0.5}, seed=0)
    picked = sample_per_class(records, 7, seed=5)
    counts = Counter((r.split, r.label) for r in picked)
    assert counts == {("train", "a"): 7, ("train", "b"): 7, ("test", "a"): 7, ("test", "b"): 7}
    assert [r.id for r in picked] == [r.id for r in sample_per_class(records, 7, seed=5)]
    with pytest.raises(DataError, match="class 'a' has"):
        sample_per_class(records, 10_000, seed=0)


def test_few_shot_only_touches_train():
    records = grouped_split(_records(80, ["a", "b"]), {"train": 0.5, "test": 0.5}, seed=0)
    shots = few_shot(records, 10, seed=0)
    counts = Counter((r.split, r.label) for r in shots)
    assert counts[("train", "a")] == 10 and counts[("train", "b")] == 10
    assert sum(1 for r in shots if r.split == "test") == sum(1 for r in records if r.split == "test")


def test_even_quotas():
    assert even_quotas(495, ["d", "c", "b", "a"]) == {"a": 124, "b": 124, "c": 124, "d": 123}


def test_chexpert_protocol_495_495_patient_disjoint():
    classes = ["Cardiomegaly", "Pleural Effusion", "Pneumonia", "No Finding"]
    records = _records(2400, classes, per_group=2, seed=7)
    prepared = prepare_records(records, PAPER, "chexpert", seed=0)
    counts = prepared.split.counts
    assert {k: sum(v.values()) for k, v in counts.items()} == {"test": 495, "train": 495}
    assert sorted(counts["train"].values()) == [123, 124, 124, 124]
    assert all(len(s) == 1 for s in _groups_by_split(prepared.records).values())
    again = prepare_records(records, PAPER, "chexpert", seed=0)
    assert again.split.ids == prepared.split.ids
    # --per-class overrides the design; --shots keeps K per class in train
    small = prepare_records(records, PAPER, "chexpert", seed=0, per_class=20, shots=10)
    assert all(n == 20 for n in small.split.counts["test"].values())
    assert all(n == 10 for n in small.split.counts["train"].values())
    assert small.split.design["per_class"] == 20 and small.split.design["shots"] == 10


def test_breakhis_protocol_groups_by_patient_code_in_file_name():
    records = []
    codes = {"adenosis": "B_A", "ductal carcinoma": "M_DC"}
    for p in range(12):
        label = "adenosis" if p % 2 else "ductal carcinoma"
        for k in range(4):
            name = f"SOB_{codes[label]}-14-{1000 + p}AB-100-{k:03d}.png"
            # folder-based patient ids differ per image here on purpose: the file name must win
            records.append(Record(id=name, image=Path("/bh") / name, label=label, patient_id=f"folder{p}-{k}"))
    prepared = prepare_records(records, PAPER, "breakhis", seed=2, classes=["adenosis", "ductal carcinoma"])
    sides: dict[str, set[str]] = {}
    for r in prepared.records:
        sides.setdefault(r.id.split("-")[2], set()).add(r.split)
    assert len(sides) == 12 and all(len(s) == 1 for s in sides.values())
    assert prepared.split.design["split"]["grouped_by"] == "breakhis-filename"
    assert {k: sum(v.values()) for k, v in prepared.split.counts.items()} == {"test": 24, "train": 24}


def test_fitzpatrick_near_duplicates_stay_together(tmp_path):
    rng = random.Random(0)
    records = []
    for i in range(16):
        colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(4)]
        base = Image.new("RGB", (64, 64))
        for q, colour in enumerate(colours):
            base.paste(colour, (32 * (q % 2), 32 * (q // 2), 32 * (q % 2) + 32, 32 * (q // 2) + 32))
        label = PAPER.datasets["fitzpatrick17k"].subset.classes[i % 2]
        for copy in range(2):  # a resized re-upload of the same photograph
            path = tmp_path / f"{i}_{copy}.png"
            (base if copy == 0 else base.resize((48, 48))).save(path)
            records.append(Record(id=f"{i}_{copy}", image=path, label=label))
    assert image_hash(records[0].image) == image_hash(records[1].image)
    assert group_by_image_hash(records[0]) != group_by_image_hash(records[2])
    classes = list(PAPER.datasets["fitzpatrick17k"].subset.classes[:2])
    prepared = prepare_records(records, PAPER, "fitzpatrick17k", seed=0, classes=classes)
    by_photo: dict[str, set[str]] = {}
    for r in prepared.records:
        by_photo.setdefault(r.id.split("_")[0], set()).add(r.split)
    assert all(len(s) == 1 for s in by_photo.values())
    assert prepared.split.design["split"]["grouped_by"] == "image-hash"
    # a `group` column in the CSV wins over the image hash
    grouped = [Record(id=r.id, image=r.image, label=r.label, metadata={"group": r.id[0]}) for r in records]
    assert prepare_records(grouped, PAPER, "fitzpatrick17k", classes=classes).split.design["split"]["grouped_by"] == (
        "column:group"
    )


def test_origa_requires_the_split_file_and_renames_normal(tmp_path):
    records = [
        Record(id=f"{i:03d}", image=Path(f"/o/{i:03d}.jpg"), label=("glaucoma", "normal")[i % 2]) for i in range(8)
    ]
    with pytest.raises(DataError, match=r"origa_split\.csv"):
        prepare_records(records, PAPER, "origa", data_root=tmp_path)
    (tmp_path / "origa_split.csv").write_text(
        "id,split\n" + "".join(f"{i:03d},{'train' if i < 6 else 'test'}\n" for i in range(8))
    )
    prepared = prepare_records(records, PAPER, "origa", data_root=tmp_path)
    assert prepared.split.counts == {
        "test": {"glaucoma": 1, "non-glaucoma": 1},
        "train": {"glaucoma": 3, "non-glaucoma": 3},
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("id,split\n999,train\n")
    with pytest.raises(DataError, match="not in the dataset"):
        prepare_records(records, PAPER, "origa", split_file=bad)


def test_split_file_pins_ids_and_split_json_round_trip(tmp_path):
    records = _records(40, ["Cardiomegaly", "No Finding"], per_group=1)
    pinned = tmp_path / "ids.csv"
    pinned.write_text(
        "id,split\n" + "".join(f"{r.id},{'train' if i % 2 else 'test'}\n" for i, r in enumerate(records[:10]))
    )
    prepared = prepare_records(
        records, PAPER, "chexpert", classes=["Cardiomegaly", "No Finding"], split_file=pinned, per_class=2, seed=1
    )
    assert {r.id for r in prepared.records} <= set(read_split_file(pinned))
    path = prepared.split.write(tmp_path)
    back = SplitManifest.read(path)
    assert back.ids == prepared.split.ids and back.counts == prepared.split.counts and back.seed == 1
    assert back.protocol == "craft-paper" and back.dataset == "chexpert"
    fresh = [Record(id=r.id, image=r.image, label=r.label) for r in prepared.records]
    reassigned = back.assign(fresh)
    assert {r.id: r.split for r in reassigned} == {r.id: r.split for r in prepared.records}
    # a subset of the ids (an enrich run of one split) reads back; a record from another run does not
    assert [r.split for r in back.assign(fresh[:1])] == [prepared.records[0].split]
    with pytest.raises(DataError, match=r"not in this split\.json"):
        back.assign([Record(id="stranger", image=Path("/x/s.png"), label="No Finding")])


def test_protocol_option_errors():
    records = _records(10, ["Cardiomegaly"])
    with pytest.raises(ConfigError, match="not classes of protocol"):
        prepare_records(records, PAPER, "chexpert", classes=["Edema"])
    with pytest.raises(ConfigError, match="covers the datasets"):
        prepare_records(records, PAPER, "generic")
    with pytest.raises(DataError, match="no records of class"):
        prepare_records(records, PAPER, "chexpert", classes=["Pneumonia"])
