"""Dataset adapters on small on-disk fixtures laid out like the real datasets."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clinalign.data import (
    ImageLoadError,
    Record,
    available_datasets,
    load_breakhis,
    load_chexpert,
    load_dataset,
    load_fitzpatrick17k,
    load_generic,
    load_image,
    load_origa,
    patient_split,
)
from clinalign.errors import ConfigError, DataError

CHEXPERT_FINDINGS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def _jpg(path: Path, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (16, 16), 128 if mode == "L" else (120, 60, 30)).save(path)
    return path


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in header})
    return path


@pytest.fixture
def chexpert_root(tmp_path: Path) -> Path:
    release = tmp_path / "CheXpert-v1.0-small"
    rows = []

    def add(patient: int, view: str, findings: dict, *, image: bool = True, study: int = 1):
        rel = f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/view1_{view.lower()}.jpg"
        if image:
            _jpg(tmp_path / rel)
        row = {
            "Path": rel,
            "Sex": "Female",
            "Age": "60",
            "Frontal/Lateral": view,
            "AP/PA": "AP" if view == "Frontal" else "",
        }
        row.update({k: str(v) for k, v in findings.items()})
        rows.append(row)

    add(1, "Frontal", {"Cardiomegaly": "1.0", "Edema": "1.0"})  # kept: one of the 4 classes
    add(1, "Lateral", {"Cardiomegaly": "1.0"})  # lateral view: skipped
    add(2, "Frontal", {"Pleural Effusion": "-1.0"})  # uncertain
    add(3, "Frontal", {"Pneumonia": "1.0", "Pleural Effusion": "1.0"})  # two classes: not single-label
    add(4, "Frontal", {"No Finding": "1.0", "Support Devices": "1.0"})
    add(5, "Frontal", {"Edema": "1.0"})  # none of the 4
    add(6, "Frontal", {"Pneumonia": "1.0", "Cardiomegaly": "0.0"})
    add(7, "Frontal", {"Cardiomegaly": "1.0"}, image=False)  # image missing on disk
    add(8, "Frontal", {"Pneumonia": "1.0", "Cardiomegaly": "-1.0"})  # uncertain other class
    _write_csv(release / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS], rows)
    return tmp_path


def test_chexpert_single_label_frontal_subset(chexpert_root: Path):
    loaded = load_chexpert(chexpert_root, csv_path="CheXpert-v1.0-small/train.csv")
    by_patient = {r.patient_id: r.label for r in loaded.records}
    assert by_patient == {"patient00001": "Cardiomegaly", "patient00004": "No Finding", "patient00006": "Pneumonia"}
    assert all(r.split == "train" for r in loaded.records)
    assert loaded.records[0].metadata["AP/PA"] == "AP"
    assert loaded.skipped == {"lateral view": 1, "uncertain": 2, "not single-label": 1, "none of the classes": 1}
    assert len(loaded.missing) == 1 and "patient00007" in loaded.missing[0][0]
    assert "3 records" in loaded.summary()


def test_chexpert_uncertain_policies_and_release_folder_as_root(chexpert_root: Path):
    release = chexpert_root / "CheXpert-v1.0-small"
    positive = load_chexpert(release, uncertain="positive")  # data root = the release folder itself
    labels = {r.patient_id: r.label for r in positive.records}
    assert labels["patient00002"] == "Pleural Effusion"
    assert "patient00008" not in labels  # U-Ones makes it two-positive
    negative = load_chexpert(release, uncertain="negative")
    labels = {r.patient_id: r.label for r in negative.records}
    assert "patient00002" not in labels and labels["patient00008"] == "Pneumonia"
    with pytest.raises(ConfigError, match="uncertain"):
        load_chexpert(release, uncertain="maybe")


def test_chexpert_bad_cell_and_missing_column(tmp_path: Path):
    _write_csv(
        tmp_path / "train.csv",
        ["Path", "Frontal/Lateral", *CHEXPERT_FINDINGS],
        [{"Path": "x.jpg", "Frontal/Lateral": "Frontal", "Cardiomegaly": "yes"}],
    )
    with pytest.raises(DataError, match=r"line 2, column 'Cardiomegaly'.*'yes'"):
        load_chexpert(tmp_path)
    _write_csv(tmp_path / "bad.csv", ["Path", "Frontal/Lateral"], [])
    with pytest.raises(DataError, match="missing column"):
        load_chexpert(tmp_path, csv_path=tmp_path / "bad.csv")


def test_fitzpatrick17k(tmp_path: Path):
    header = [
        "md5hash",
        "fitzpatrick_scale",
        "fitzpatrick_centaur",
        "label",
        "nine_partition_label",
        "three_partition_label",
        "qc",
        "url",
        "url_alphanum",
    ]
    rows = []
    for i, label in enumerate(["psoriasis"] * 3 + ["lichen planus"] * 2 + ["acne"]):
        md5 = f"{i:032x}"
        if i != 2:
            _jpg(tmp_path / "images" / f"{md5}.jpg", "RGB")
        rows.append({"md5hash": md5, "label": label, "fitzpatrick_scale": str(i % 6 + 1), "three_partition_label": "x"})
    _write_csv(tmp_path / "fitzpatrick17k.csv", header, rows)
    everything = load_fitzpatrick17k(tmp_path)
    assert Counter(r.label for r in everything.records) == {"psoriasis": 2, "lichen planus": 2, "acne": 1}
    assert everything.records[0].metadata["fitzpatrick_scale"] == "1"
    assert len(everything.missing) == 1
    top = load_fitzpatrick17k(tmp_path, top_conditions=2)
    assert {r.label for r in top.records} == {"psoriasis", "lichen planus"}
    assert top.skipped == {"other condition": 1}
    chosen = load_dataset("fitzpatrick17k", tmp_path, classes=["acne"])
    assert [r.label for r in chosen.records] == ["acne"]


def test_breakhis_tree(tmp_path: Path):
    root = tmp_path / "BreaKHis_v1" / "histology_slides" / "breast"
    layout = [
        ("benign", "adenosis", "SOB_B_A_14-22549AB", "B_A-14-22549AB"),
        ("benign", "phyllodes_tumor", "SOB_B_PT_14-21998AB", "B_PT-14-21998AB"),
        ("malignant", "ductal_carcinoma", "SOB_M_DC_14-10926", "M_DC-14-10926"),
    ]
    for kind, subtype, patient, stem in layout:
        for mag in ("40X", "100X"):
            for n in (1, 2):
                number = mag.removesuffix("X")
                _jpg(root / kind / "SOB" / subtype / patient / mag / f"SOB_{stem}-{number}-{n:03d}.png", "RGB")
    (root / "README.txt").write_text("not an image")
    loaded = load_breakhis(tmp_path / "BreaKHis_v1")
    assert len(loaded.records) == 6
    assert Counter(r.label for r in loaded.records) == {"adenosis": 2, "phyllodes tumor": 2, "ductal carcinoma": 2}
    assert {r.metadata["magnification"] for r in loaded.records} == {"100X"}
    dc = next(r for r in loaded.records if r.label == "ductal carcinoma")
    assert dc.patient_id == "SOB_M_DC_14-10926" and dc.metadata["tumor_class"] == "malignant"
    assert len(load_breakhis(tmp_path, magnification=None).records) == 12
    with pytest.raises(ConfigError, match="magnification"):
        load_breakhis(tmp_path, magnification="50X")


def test_origa(tmp_path: Path):
    rows = [
        {"Eye": "OD", "Filename": "001.jpg", "ExpCDR": "0.7", "Set": "A", "Glaucoma": "1"},
        {"Eye": "OS", "Filename": "002.jpg", "ExpCDR": "0.4", "Set": "A", "Glaucoma": "0"},
        {"Eye": "OS", "Filename": "003", "ExpCDR": "0.4", "Set": "B", "Glaucoma": "0"},
        {"Eye": "OD", "Filename": "004.jpg", "ExpCDR": "0.5", "Set": "B", "Glaucoma": "0"},
    ]
    for name in ("001.jpg", "002.jpg", "003.png"):
        _jpg(tmp_path / "Images" / name, "RGB")
    _write_csv(tmp_path / "OrigaList.csv", ["Eye", "Filename", "ExpCDR", "Set", "Glaucoma"], rows)
    loaded = load_origa(tmp_path)
    assert [(r.id, r.label) for r in loaded.records] == [("001", "glaucoma"), ("002", "normal"), ("003", "normal")]
    assert loaded.records[0].metadata["ExpCDR"] == "0.7"
    assert len(loaded.missing) == 1
    rows[0]["Glaucoma"] = "maybe"
    _write_csv(tmp_path / "OrigaList.csv", ["Eye", "Filename", "ExpCDR", "Set", "Glaucoma"], rows)
    with pytest.raises(DataError, match=r"line 2, column 'Glaucoma'.*'maybe'"):
        load_origa(tmp_path)


def test_generic_manifest_csv_and_jsonl(tmp_path: Path):
    _jpg(tmp_path / "a.png")
    _jpg(tmp_path / "b.png")
    _write_csv(
        tmp_path / "m.csv",
        ["image", "label", "split", "patient_id", "site"],
        [
            {"image": "a.png", "label": "x", "split": "train", "patient_id": "p1", "site": "s"},
            {"image": "b.png", "label": "y"},
            {"image": "gone.png", "label": "y"},
        ],
    )
    loaded = load_generic(manifest=tmp_path / "m.csv")
    assert [(r.label, r.split, r.patient_id) for r in loaded.records] == [("x", "train", "p1"), ("y", None, None)]
    assert loaded.records[0].metadata == {"site": "s"}
    assert loaded.missing[0][0].endswith("gone.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in [{"image": "a.png", "label": "x"}]) + "\n")
    assert load_dataset("generic", manifest=tmp_path / "m.jsonl").records[0].label == "x"
    with pytest.raises(ConfigError, match="manifest"):
        load_dataset("generic")
    with pytest.raises(ConfigError, match="data_root"):
        load_dataset("origa")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("mnist", tmp_path)
    assert {"chexpert", "fitzpatrick17k", "breakhis", "origa", "generic"} <= set(available_datasets())


def test_no_usable_records_is_an_error(tmp_path: Path):
    _write_csv(tmp_path / "OrigaList.csv", ["Filename", "Glaucoma"], [{"Filename": "x.jpg", "Glaucoma": "1"}])
    with pytest.raises(DataError, match="no usable records"):
        load_origa(tmp_path)


def test_images_are_converted_robustly(tmp_path: Path):
    sixteen = tmp_path / "xray16.png"
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).save(sixteen)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(rgba)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)
    for path in (sixteen, rgba, cmyk):
        image = load_image(path)
        assert image.mode == "RGB"
    array = np.asarray(load_image(sixteen))
    assert array.min() == 0 and array.max() == 255  # the 16-bit range is rescaled, not clipped
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError, match=r"broken\.png"):
        load_image(broken)


def _records(n_patients: int, per_patient: int) -> list[Record]:
    return [
        Record(id=f"{p}-{i}", image=Path(f"{p}-{i}.png"), label="ab"[p % 2], patient_id=f"p{p}")
        for p in range(n_patients)
        for i in range(per_patient)
    ]


def test_patient_split_keeps_patients_together_and_is_seeded():
    records = [*_records(40, 3), Record(id="solo", image=Path("s.png"), label="a")]
    split = patient_split(records, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    assert [r.id for r in split] == [r.id for r in records]
    by_patient: dict[str, set[str]] = {}
    for r in split:
        by_patient.setdefault(r.patient_id or r.id, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())
    counts = Counter(r.split for r in split if r.patient_id)
    assert counts == {"train": 84, "val": 18, "test": 18}  # 14/3/3 patients per label, 3 images each
    again = patient_split(records, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    assert [r.split for r in again] == [r.split for r in split]
    other = patient_split(records, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=2)
    assert [r.split for r in other] != [r.split for r in split]
    with pytest.raises(ConfigError):
        patient_split(records, {"train": -1})
