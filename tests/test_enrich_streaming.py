"""`clinalign enrich --mode export` reads the dataset row by row: same split.json and requests as the list path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import run
from enrich_fixtures import make_records
from test_data_adapters_streaming import reference_patient_split

from clinalign.data import load_generic
from clinalign.data.subsets import SplitManifest
from clinalign.enrich import EnrichConfig, get_preset
from clinalign.enrich.batch import export_requests

LABELS = ["melanoma", "nevus", "keratosis"]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLINALIGN_TRACEBACK", raising=False)


def _manifest(tmp_path: Path, n: int, *, split_column: bool) -> Path:
    records = make_records(tmp_path / "img", [LABELS[i % 3] for i in range(n)], size=8)
    header = "image,label,patient_id" + (",split" if split_column else "")
    lines = [header]
    for i, r in enumerate(records):
        # patients of 1 to 3 images, some images without a patient (their own group)
        patient = f"p{i // 3}" if i % 7 else ""
        lines.append(
            f"img/{Path(r.image).name},{r.label},{patient}"
            + (f",{'train' if i % 4 else 'test'}" if split_column else "")
        )
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _export_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    head = ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--model", "m", "--mode", "export"]
    return [*head, *extra, "--no-progress", "--out", str(out)]


def _requests(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((out / "batch").glob("requests-*.jsonl"))]


def _reference_export(records, tmp_path: Path, classes: list[str]) -> list[bytes]:
    """The request files of the same records given to the library as a list."""
    preset = get_preset("generic").with_classes(sorted(classes))
    out = tmp_path / "reference"
    export_requests(records, preset, EnrichConfig(model="m", progress=False), out)
    return _requests(out)


def test_export_with_split_fractions_equals_the_list_based_selection(tmp_path, capsys):
    manifest = _manifest(tmp_path, 40, split_column=False)
    out = tmp_path / "out"
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    args = _export_args(
        manifest, out, "--split-fractions", "train=0.6,val=0.2,test=0.2", "--seed", "3", "--classes", "melanoma"
    )
    code, stdout, err = run([*args, "--classes", "nevus", "--split", "train"], capsys)
    assert code == 0, err
    # independent computation: the whole manifest as a list, the list-based split, the class filter
    everything = reference_patient_split(load_generic(manifest=manifest).records, fractions, 3)
    selected = [r for r in everything if r.label in ("melanoma", "nevus")]
    written = json.loads((out / "split.json").read_text())
    assert written == SplitManifest.from_records(selected, seed=3, dataset="generic").to_dict()
    train = [r for r in selected if r.split == "train"]
    assert 0 < len(train) < len(selected)
    assert _requests(out) == _reference_export(train, tmp_path, ["melanoma", "nevus"])
    assert f"Records by status: submitted: {len(train)}." in stdout
    assert "generic: 40 records (keratosis: 13, melanoma: 14, nevus: 13)" in err


def test_export_of_a_manifest_with_its_own_splits(tmp_path, capsys):
    manifest = _manifest(tmp_path, 30, split_column=True)
    out = tmp_path / "out"
    code, _, err = run(_export_args(manifest, out, "--split", "test"), capsys)
    assert code == 0, err
    records = load_generic(manifest=manifest).records
    written = json.loads((out / "split.json").read_text())
    assert written == SplitManifest.from_records(records, seed=0, dataset="generic").to_dict()
    assert _requests(out) == _reference_export([r for r in records if r.split == "test"], tmp_path, LABELS)
    code, _, err = run(_export_args(manifest, tmp_path / "o2", "--split", "val"), capsys)
    assert code == 2 and "splits present: ['test', 'train']" in err


def test_a_bad_last_row_exits_2_before_anything_is_written(tmp_path, capsys):
    manifest = _manifest(tmp_path, 12, split_column=False)
    with open(manifest, "a") as handle:
        handle.write("img/img000.png,,p9\n")  # line 14: no label
    out = tmp_path / "out"
    code, _, err = run(_export_args(manifest, out), capsys)
    assert code == 2 and "manifest.csv, row at line 14: missing 'label'" in err and "Traceback" not in err
    assert not out.exists()
    code, _, err = run(["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run"], capsys)
    assert code == 2 and "line 14" in err


def test_dry_run_and_limit_over_the_stream(tmp_path, capsys):
    manifest = _manifest(tmp_path, 9, split_column=False)
    code, stdout, err = run(["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run"], capsys)
    assert code == 0, err
    assert "Dry run: 9 records" in stdout and "record 'img/img000.png'" in stdout
    args = ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run", "--limit", "4"]
    code, stdout, err = run(args, capsys)
    assert code == 0 and "Dry run: 4 records" in stdout


def test_per_class_and_shots_through_the_cli_equal_the_list_based_sampling(tmp_path, capsys):
    from clinalign.data.subsets import select_records

    manifest = _manifest(tmp_path, 60, split_column=True)
    out = tmp_path / "out"
    code, _, err = run(_export_args(manifest, out, "--per-class", "5", "--shots", "2", "--seed", "1"), capsys)
    assert code == 0, err
    expected = select_records(load_generic(manifest=manifest).records, seed=1, per_class=5, shots=2)
    assert len(expected) == 2 * 3 + 5 * 3  # train: 2 shots per class; test: 5 per class
    written = json.loads((out / "split.json").read_text())
    assert written == SplitManifest.from_records(expected, seed=1, dataset="generic").to_dict()
    assert _requests(out) == _reference_export(expected, tmp_path, LABELS)
    code, _, err = run(_export_args(manifest, tmp_path / "o2", "--per-class", "50"), capsys)
    assert code == 2 and "class 'keratosis' has 5 records, 50 asked" in err and not (tmp_path / "o2").exists()


class _Passes:
    """A re-iterable source of records that counts its passes and the records handed out."""

    def __init__(self, records) -> None:
        self.records, self.passes, self.handed = records, 0, 0

    def __iter__(self):
        self.passes += 1
        for record in self.records:
            self.handed += 1
            yield record


def test_live_enrich_reads_a_reiterable_source_twice_and_never_ahead(tmp_path, monkeypatch):
    from enrich_fixtures import fast_config

    from clinalign.enrich import enrich
    from clinalign.enrich.testing import LoopbackServer, valid_reply_handler

    monkeypatch.setenv("CLINALIGN_TEST_KEY", "sk-stream-test-key-0123")
    records = make_records(tmp_path / "img", [LABELS[i % 3] for i in range(12)], size=8)
    preset = get_preset("generic").with_classes(LABELS)
    source = _Passes(records)
    handed_at_request: list[int] = []
    answer = valid_reply_handler(preset)

    def handler(body, number):
        handed_at_request.append(source.handed)
        return answer(body, number)

    with LoopbackServer(handler) as server:
        result = enrich(source, preset, fast_config(server.url, concurrency=2), tmp_path / "streamed")
        listed = enrich(records, preset, fast_config(server.url, concurrency=2, limit=5), tmp_path / "listed")
    assert result.succeeded == 12 and result.total == 12 and source.passes == 2
    # a first pass for ids and labels, then records taken one at a time as the 2 workers need them
    assert min(handed_at_request) <= 12 + 2
    enriched = [json.loads(line)["id"] for line in (tmp_path / "streamed" / "enriched.jsonl").read_text().splitlines()]
    assert sorted(enriched) == sorted(r.id for r in records)
    assert {k: v["total"] for k, v in result.per_label.items()} == {"melanoma": 4, "nevus": 4, "keratosis": 4}
    assert listed.total == 5 and listed.succeeded == 5
