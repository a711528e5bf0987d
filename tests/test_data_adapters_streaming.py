"""The row-by-row form of the dataset adapters and selections: same records as the lists, read lazily."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
from collections import defaultdict
from pathlib import Path

import pytest
from test_data_adapters import CHEXPERT_FINDINGS, _jpg, _write_csv

from clinalign.data import (
    DatasetStream,
    Record,
    iter_breakhis,
    iter_chexpert,
    iter_dataset,
    iter_fitzpatrick17k,
    iter_generic,
    iter_origa,
    load_breakhis,
    load_chexpert,
    load_dataset,
    load_fitzpatrick17k,
    load_generic,
    load_origa,
    patient_split,
    register_dataset,
)
from clinalign.data.split import assign_splits, patient_split_map
from clinalign.data.subsets import SplitManifest, select_records, select_streamed
from clinalign.errors import DataError


def reference_patient_split(records, fractions, seed):
    """The list-based patient split as clinalign 0.x wrote it (stratified, largest remainder), kept as the oracle."""
    total = sum(fractions.values())
    names, weights = list(fractions), [v / total for v in fractions.values()]
    groups = defaultdict(list)
    for index, record in enumerate(records):
        groups[record.patient_id if record.patient_id is not None else f"\0record:{record.id}"].append(index)
    strata = defaultdict(list)
    for patient, indices in groups.items():
        labels = [records[i].label for i in indices]
        strata[max(sorted(set(labels)), key=labels.count)].append(patient)
    rng = random.Random(seed)
    assignment = {}
    for key in sorted(strata):
        patients = sorted(strata[key])
        rng.shuffle(patients)
        quotas = [w * len(patients) for w in weights]
        counts = [math.floor(q) for q in quotas]
        order = sorted(range(len(names)), key=lambda i: quotas[i] - counts[i], reverse=True)
        for i in order[: len(patients) - sum(counts)]:
            counts[i] += 1
        start = 0
        for name, count in zip(names, counts, strict=True):
            for patient in patients[start : start + count]:
                assignment[patient] = name
            start += count
    out = list(records)
    for patient, indices in groups.items():
        for i in indices:
            out[i] = dataclasses.replace(records[i], split=assignment[patient])
    return out


def _random_records(rng: random.Random, n: int) -> list[Record]:
    patients = [None] + [f"p{j}" for j in range(rng.randint(1, max(1, n // 2)))]
    return [
        Record(id=f"r{i}", image=Path(f"{i}.png"), label=rng.choice("abcd"), patient_id=rng.choice(patients))
        for i in range(n)
    ]


def test_streamed_patient_split_equals_the_list_based_split():
    rng = random.Random(7)
    for trial in range(150):
        records = _random_records(rng, rng.randint(1, 60))
        fractions = rng.choice([{"train": 0.8, "val": 0.1, "test": 0.1}, {"a": 1.0, "b": 2.0}, {"train": 1.0}])
        seed = rng.randint(0, 9)
        expected = reference_patient_split(records, fractions, seed)
        # the map reads a one-shot generator: the records are never needed as a list
        assignment = patient_split_map((r for r in records), fractions, seed=seed)
        assert list(assign_splits(iter(records), assignment)) == expected, trial
        assert patient_split(records, fractions, seed=seed) == expected, trial


def test_majority_label_counts_every_record_of_a_patient():
    # p1 has a, a, a, b, b: majority a (a first-label-only count would tie and still say a; b, b, b, a, a says b)
    labels = ["a", "a", "a", "b", "b", "b", "b", "b", "a", "a"]
    records = [Record(id=f"r{i}", image=Path("x"), label=lab, patient_id=f"p{i // 5}") for i, lab in enumerate(labels)]
    records += [Record(id=f"s{i}", image=Path("x"), label="a", patient_id=f"q{i}") for i in range(6)]
    for seed in range(5):
        expected = reference_patient_split(records, {"train": 0.5, "test": 0.5}, seed)
        assert patient_split(records, {"train": 0.5, "test": 0.5}, seed=seed) == expected


# ------------------------------------------------------------------ every adapter: stream == list
def _chexpert(root: Path) -> Path:
    rows = []
    for patient, (view, findings, image) in enumerate(
        [
            ("Frontal", {"Cardiomegaly": "1.0"}, True),
            ("Lateral", {"Cardiomegaly": "1.0"}, True),
            ("Frontal", {"Pleural Effusion": "-1.0"}, True),
            ("Frontal", {"Pneumonia": "1.0"}, False),
            ("Frontal", {"No Finding": "1.0"}, True),
        ]
    ):
        rel = f"CheXpert-v1.0-small/train/patient{patient:05d}/study1/view1_{view.lower()}.jpg"
        if image:
            _jpg(root / rel)
        rows.append({"Path": rel, "Frontal/Lateral": view, "Sex": "Male", **findings})
    _write_csv(root / "train.csv", ["Path", "Sex", "Frontal/Lateral", *CHEXPERT_FINDINGS], rows)
    return root


def _fitzpatrick(root: Path) -> Path:
    rows = []
    for i, label in enumerate(["psoriasis"] * 3 + ["acne"] * 2 + ["eczema"]):
        md5 = f"{i % 5:032x}"  # the last row repeats the first md5
        if i != 2:
            _jpg(root / "images" / f"{md5}.jpg", "RGB")
        rows.append({"md5hash": md5, "label": label, "fitzpatrick_scale": str(i)})
    _write_csv(root / "fitzpatrick17k.csv", ["md5hash", "label", "fitzpatrick_scale"], rows)
    return root


def _breakhis(root: Path) -> Path:
    for subtype, patient, stem in [
        ("adenosis", "SOB_B_A_14-1", "B_A-14-1"),
        ("ductal_carcinoma", "SOB_M_DC_14-2", "M_DC-14-2"),
    ]:
        for mag in ("40X", "100X"):
            _jpg(root / "SOB" / subtype / patient / mag / f"SOB_{stem}-{mag[:-1]}-001.png", "RGB")
    return root


def _origa(root: Path) -> Path:
    for name in ("001.jpg", "002.jpg"):
        _jpg(root / "Images" / name, "RGB")
    rows = [{"Filename": n, "Glaucoma": g} for n, g in [("001.jpg", "1"), ("002.jpg", "0"), ("003.jpg", "0")]]
    _write_csv(root / "OrigaList.csv", ["Filename", "Glaucoma"], rows)
    return root


@pytest.mark.parametrize(
    ("build", "iterate", "load", "options"),
    [
        (_chexpert, iter_chexpert, load_chexpert, {}),
        (_fitzpatrick, iter_fitzpatrick17k, load_fitzpatrick17k, {}),
        (_fitzpatrick, iter_fitzpatrick17k, load_fitzpatrick17k, {"top_conditions": 1}),
        (_breakhis, iter_breakhis, load_breakhis, {"magnification": None}),
        (_origa, iter_origa, load_origa, {}),
    ],
)
def test_every_adapter_streams_the_records_of_its_list(tmp_path, build, iterate, load, options):
    root = build(tmp_path)
    loaded = load(root, **options)
    stream = iterate(root, **options)
    assert isinstance(stream, DatasetStream)
    assert list(stream) == loaded.records and len(loaded.records) >= 1
    assert list(stream) == loaded.records  # re-iterable: a second pass reads the source again
    assert stream.missing == loaded.missing and stream.n_missing == len(loaded.missing)
    assert stream.skipped == loaded.skipped
    assert stream.summary() == loaded.summary()


def test_generic_stream_equals_an_independent_reading_of_the_csv(tmp_path):
    rows = []
    for i in range(12):
        if i != 5:
            _jpg(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "label": "ab"[i % 2], "patient_id": f"p{i // 3}", "site": f"s{i % 2}"})
    manifest = _write_csv(tmp_path / "m.csv", ["image", "label", "patient_id", "site"], rows)
    with open(manifest, newline="") as handle:
        expected = [
            Record(
                id=row["image"],
                image=tmp_path / row["image"],
                label=row["label"],
                patient_id=row["patient_id"],
                metadata={"site": row["site"]},
            )
            for row in csv.DictReader(handle)
            if (tmp_path / row["image"]).is_file()
        ]
    stream = iter_dataset("generic", manifest=manifest)
    assert list(stream) == expected == load_dataset("generic", manifest=manifest).records
    assert stream.n_missing == 1 and stream.missing[0][0].endswith("img/5.png")
    assert stream.summary() == "11 records (a: 6, b: 5); 1 missing image files (first: " + stream.missing[0][0] + ")"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_bad_row_at_the_end_raises_only_when_the_iteration_reaches_it(tmp_path, suffix):
    _jpg(tmp_path / "a.png")
    rows = [{"image": "a.png", "label": "x", "id": f"r{i}"} for i in range(50)] + [{"image": "a.png", "id": "bad"}]
    manifest = tmp_path / f"m{suffix}"
    if suffix == ".csv":
        _write_csv(manifest, ["image", "label", "id"], rows)
    else:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stream = iter_generic(manifest=manifest)  # the file is checked, no row is read yet
    records = iter(stream)
    first = [next(records) for _ in range(50)]  # the 50 good rows come out before the bad one is read
    assert [r.id for r in first] == [f"r{i}" for i in range(50)]
    with pytest.raises(DataError, match=rf"m{suffix}, row at line 5[12]: missing 'label'"):
        next(records)
    with pytest.raises(DataError, match="missing 'label'"):
        load_generic(manifest=manifest)  # the list form fails the same way


def test_a_loader_registered_without_a_stream_is_streamed_from_its_list(tmp_path):
    held = [Record(id="a", image=tmp_path / "a.png", label="x"), Record(id="b", image=tmp_path / "b.png", label="y")]

    def loader(data_root, **options):
        from clinalign.data import DatasetLoad

        return DatasetLoad(records=held, missing=[("gone.png", "not found")], skipped={"filtered": 3})

    register_dataset("listonly-test", loader, overwrite=True)
    stream = iter_dataset("listonly-test", tmp_path)
    assert list(stream) == held
    assert stream.summary() == load_dataset("listonly-test", tmp_path).summary()


# ------------------------------------------------------------------ selections over a stream
class _CountingSource:
    """A re-iterable source that counts the records it has handed out."""

    def __init__(self, records: list[Record]) -> None:
        self.records, self.handed = records, 0

    def __iter__(self):
        for record in self.records:
            self.handed += 1
            yield record


def test_select_streamed_equals_select_records_and_reads_lazily():
    rng = random.Random(3)
    records = _random_records(rng, 200)
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    source = _CountingSource(records)
    selection, manifest = select_streamed(source, seed=4, classes=["b", "a"], fractions=fractions, dataset="d")
    expected = select_records(reference_patient_split(records, fractions, 4), classes=["b", "a"])
    assert list(selection) == expected
    assert manifest is not None
    assert manifest.to_dict() == SplitManifest.from_records(expected, seed=4, dataset="d").to_dict()
    assert selection.split_counts == {k: len(v) for k, v in manifest.ids.items()}
    # a further pass hands out records one at a time: the first selected record needs only a few source rows
    before = source.handed
    next(iter(selection.only_split("train")))
    assert source.handed - before < 20
    # without splits there is no split.json, and nothing but counting happened
    plain = [dataclasses.replace(r, split=None) for r in records]
    selection, manifest = select_streamed(_CountingSource(plain), classes=["a"])
    assert manifest is None and list(selection) == [r for r in plain if r.label == "a"]
    with pytest.raises(DataError, match=r"class\(es\) \['z'\]; labels present: \['a', 'b', 'c', 'd'\]"):
        select_streamed(_CountingSource(plain), classes=["a", "z"])


def test_a_duplicate_id_is_reported_with_both_lines_at_the_end_of_the_stream(tmp_path, monkeypatch):
    import clinalign.data.manifest as manifest_module

    _jpg(tmp_path / "a.png")
    ids = ["r0", "r1", "r2", "r1", "r3", "r2"]  # r1 repeats at line 5 (first line 3), r2 at line 7
    manifest = _write_csv(
        tmp_path / "m.csv", ["image", "label", "id"], [{"image": "a.png", "label": "x", "id": i} for i in ids]
    )
    message = r"m.csv, row at line 5: duplicate id 'r1' \(first at line 3\)"
    with pytest.raises(DataError, match=message):
        load_generic(manifest=manifest)  # the list form: at the row
    seen = []
    with pytest.raises(DataError, match=message):
        for record in iter_generic(manifest=manifest):
            seen.append(record.id)
    assert seen == ids  # the stream keeps 8 bytes per row and reports the duplicate once it has read the file
    # every id hashing alike: equal hashes are checked against the ids, so only a real duplicate is an error
    monkeypatch.setattr(manifest_module, "hash", lambda _: 7, raising=False)
    with pytest.raises(DataError, match=message):
        list(iter_generic(manifest=manifest))
    unique = _write_csv(
        tmp_path / "u.csv",
        ["image", "label", "id"],
        [{"image": "a.png", "label": "x", "id": f"u{i}"} for i in range(5)],
    )
    assert [r.id for r in iter_generic(manifest=unique)] == [f"u{i}" for i in range(5)]


@pytest.mark.parametrize(
    "options",
    [
        {"per_class": 3},
        {"shots": 2},
        {"per_class": 4, "shots": 1},
        {"split_file": True},
        {"split_file": True, "per_class": 2},
    ],
)
def test_sampling_selections_over_a_stream_equal_select_records(tmp_path, options):
    rng = random.Random(11)
    records = _random_records(rng, 300)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    options = dict(options)
    if options.pop("split_file", False):
        pinned = tmp_path / "pinned.csv"
        chosen = rng.sample([r for r in records if r.label != "d"], 120)
        pinned.write_text("id,split\n" + "".join(f"{r.id},{rng.choice(['train', 'test'])}\n" for r in chosen))
        options["split_file"] = pinned
    expected = select_records(
        reference_patient_split(records, fractions, 5), seed=5, classes=["a", "b", "c"], **options
    )
    source = _CountingSource(records)
    selection, manifest = select_streamed(
        source, seed=5, classes=["a", "b", "c"], fractions=fractions, dataset="d", **options
    )
    assert list(selection) == expected
    assert manifest is not None
    assert manifest.to_dict() == SplitManifest.from_records(expected, seed=5, dataset="d").to_dict()
    assert selection.split_counts == {k: len(v) for k, v in manifest.ids.items()}
    assert len(expected) < len(records)
