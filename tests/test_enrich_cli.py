"""`clinalign enrich` / `clinalign checklists` through the real entry point (exit codes, messages, outputs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import run
from enrich_fixtures import make_records, read_lines

from clinalign.enrich import get_preset
from clinalign.enrich.testing import LoopbackServer, ScriptedResponse, chat_completion, valid_reply_handler

SECRET = "sk-cli-secret-987654321-zyx"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINALIGN_TEST_KEY", SECRET)
    monkeypatch.delenv("CLINALIGN_TRACEBACK", raising=False)


def _manifest(tmp_path: Path, labels: list[str]) -> Path:
    records = make_records(tmp_path / "img", labels)
    path = tmp_path / "manifest.csv"
    lines = ["image,label,patient_id,split"] + [
        f"img/{Path(r.image).name},{r.label},{r.patient_id},{'train' if i % 3 else 'test'}"
        for i, r in enumerate(records)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _loopback_args(manifest: Path, url: str, out: Path, *extra: str) -> list[str]:
    """``clinalign enrich`` on the generic preset against a loopback server, key from CLINALIGN_TEST_KEY."""
    return [
        "enrich",
        "--dataset",
        "generic",
        "--manifest",
        str(manifest),
        "--model",
        "m",
        "--base-url",
        url,
        "--api-key-env",
        "CLINALIGN_TEST_KEY",
        *extra,
        "--out",
        str(out),
        "--no-progress",
    ]


def test_dry_run_shows_prompt_schema_and_request_without_sending(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["melanoma", "nevus"])
    code, out, err = run(["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run"], capsys)
    assert code == 0, err
    assert "=== System prompt" in out and 'label is "melanoma"' in out
    assert "=== Output schema" in out and '"additionalProperties": false' in out
    assert "=== First request body" in out and "base64 JPEG" in out
    assert "nothing is sent" in out
    assert not (tmp_path / "out").exists()
    assert "generic: 2 records" in err


def test_enrich_generic_end_to_end_and_rerun(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["melanoma", "nevus", "melanoma", "nevus", "melanoma"])
    out = tmp_path / "out"
    preset = get_preset("generic").with_classes(["melanoma", "nevus"])
    with LoopbackServer(valid_reply_handler(preset)) as server:
        args = _loopback_args(
            manifest, server.url, out, "--price-input", "1", "--price-output", "2", "--split", "train"
        )
        code, stdout, err = run(args, capsys)
        assert code == 0, err
        rows = read_lines(out / "enriched.jsonl")
        assert len(rows) == 3 and all(r["split"] == "train" for r in rows)
        assert "estimated cost: $0.0006" in stdout  # 300 prompt + 150 completion tokens at $1/$2 per 1M
        assert "total" in stdout and "melanoma" in stdout
        n = len(server.requests)
        code, stdout, _ = run(args, capsys)
        assert code == 0 and len(server.requests) == n and "3 already done" in stdout
    for path in out.iterdir():
        assert SECRET not in path.read_text()


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a"])
    cases = [
        (["enrich", "--dataset", "generic", "--manifest", str(manifest), "--model", "m"], "--out are required"),
        (["enrich", "--dataset", "generic", "--dry-run"], "--manifest"),
        (
            ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--uncertain", "positive", "--dry-run"],
            "--uncertain does not apply",
        ),
        (["enrich", "--dataset", "generic", "--manifest", str(tmp_path / "nope.csv"), "--dry-run"], "nope.csv"),
        (["enrich", "--dataset", "generic", "--manifest", str(manifest), "--split", "val", "--dry-run"], "split 'val'"),
        (
            ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--concurrency", "0", "--dry-run"],
            "concurrency",
        ),
        (
            ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--preset", "chexpert", "--dry-run"],
            "not classes of preset 'chexpert'",
        ),
        (
            [
                "enrich",
                "--dataset",
                "generic",
                "--manifest",
                str(manifest),
                "--split-fractions",
                "train:1",
                "--dry-run",
            ],
            "--split-fractions",
        ),
        (["checklists"], "exactly one of --dataset"),
        (["checklists", "--dataset", "chexpert", "--model", "m"], "only applies with --generate"),
        (["checklists", "--dataset", "chexpert", "--generate"], "--generate needs --model"),
    ]
    for args, message in cases:
        code, _, err = run(args, capsys)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err


def test_missing_api_key_for_openai_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    manifest = _manifest(tmp_path, ["a"])
    code, _, err = run(
        [
            "enrich",
            "--dataset",
            "generic",
            "--manifest",
            str(manifest),
            "--model",
            "m",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2 and "OPENAI_API_KEY" in err


def test_checklists_builtin_print_and_write(tmp_path, capsys):
    code, out, _ = run(["checklists", "--dataset", "origa", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert "glaucoma (built-in)" in out and "Optic Disc:" in out and "t_c: normal." in out
    data = json.loads((tmp_path / "checklists.json").read_text())
    assert set(data["checklists"]) == {"glaucoma", "normal"}
    assert (tmp_path / "checklists.yaml").read_text().startswith("checklists:")
    code, out, _ = run(
        ["checklists", "--dataset", "fitzpatrick17k", "--classes", "psoriasis", "--classes", "tinea"], capsys
    )
    assert code == 0 and "psoriasis (built-in)" in out and "tinea: no built-in checklist" in out


def test_checklists_generate_with_validation_and_repair(tmp_path, capsys):
    seen = []

    def handler(body, number):
        seen.append(body)
        label = body["messages"][1]["content"].split('"')[1]
        good = {
            "location": "both lungs",
            "lesion_type": "airspace change",
            "shape_size": "patchy areas",
            "opacity_density": "increased density",
            "texture": "fluffy confluent pattern",
        }
        if label == "No Finding" and len([b for b in seen if '"No Finding"' in b["messages"][1]["content"]]) == 1:
            good["texture"] = "no consolidation visible"  # negation + pathology word: repaired
        if label == "No Finding":
            good.update(lesion_type="normal anatomy", opacity_density="evenly lucent lungs")
        return ScriptedResponse(body=chat_completion(json.dumps(good)))

    with LoopbackServer(handler) as server:
        code, out, err = run(
            [
                "checklists",
                "--dataset",
                "chexpert",
                "--generate",
                "--model",
                "m",
                "--base-url",
                server.url,
                "--api-key-env",
                "CLINALIGN_TEST_KEY",
                "--out",
                str(tmp_path),
            ],
            capsys,
        )
    assert code == 0, err
    assert out.count("(generated)") == 4
    assert len(seen) == 5  # one repair turn for "No Finding"
    repair = next(b for b in seen if len(b["messages"]) == 4)["messages"][-1]["content"]
    assert "negation 'no'" in repair
    data = json.loads((tmp_path / "checklists.json").read_text())
    assert data["checklists"]["Pneumonia"]["attributes"]["Opacity/Density"] == "increased density"
    schema = seen[0]["response_format"]["json_schema"]["schema"]
    assert set(schema["required"]) == {"location", "lesion_type", "shape_size", "opacity_density", "texture"}


def test_enrich_uses_generated_checklists_file(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["melanoma", "nevus", "nevus"])
    checklists = tmp_path / "checklists.yaml"
    checklists.write_text(
        "checklists:\n  nevus:\n    Location: trunk\n    Lesion Type: macule\n    Shape/Size: round\n"
        "    Color: brown\n    Texture: smooth\n"
    )
    preset = get_preset("generic").with_classes(["melanoma", "nevus"])
    with LoopbackServer(valid_reply_handler(preset)) as server:
        code, _, err = run(
            _loopback_args(manifest, server.url, tmp_path / "out", "--checklists", str(checklists)), capsys
        )
    assert code == 0, err
    rows = {r["label"]: r for r in read_lines(tmp_path / "out" / "enriched.jsonl")}
    assert (
        rows["nevus"]["t_c"]
        == "nevus. Location: trunk; Lesion Type: macule; Shape/Size: round; Color: brown; Texture: smooth."
    )
    assert rows["melanoma"]["t_c"] is None
    assert "no class checklist for ['melanoma']" in err


def test_ctrl_c_loses_only_in_flight_then_rerun_completes(tmp_path):
    """A real process, a real SIGINT: exit 130, finished lines intact, the rerun completes the rest."""
    # 20 rows x 0.4 s at concurrency 2: about 4 s of work, so the interrupt after the third line lands
    # mid-run even when a loaded machine is slow to notice that line
    manifest = _manifest(tmp_path, ["a", "b"] * 10)
    out = tmp_path / "out"
    preset = get_preset("generic").with_classes(["a", "b"])
    with LoopbackServer(valid_reply_handler(preset, latency=0.4)) as server:
        args = [sys.executable, "-m", "clinalign", *_loopback_args(manifest, server.url, out, "--concurrency", "2")]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
        # a background job of a non-interactive shell (`make test &`) inherits SIGINT as *ignored*, and
        # Python then never raises KeyboardInterrupt; give the child the default handler, as a terminal would
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.time() + 30
        while len(read_lines(out / "enriched.jsonl")) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "Interrupted" in stderr and SECRET not in stderr
        partial = read_lines(out / "enriched.jsonl")
        assert 3 <= len(partial) < 20
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in read_lines(out / "enriched.jsonl")]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert f"{len(partial)} already done" in done.stdout


def test_batch_mode_and_export_import_through_the_cli(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["melanoma", "nevus", "melanoma", "nevus"])
    preset = get_preset("generic").with_classes(["melanoma", "nevus"])
    batch_out, export_out = tmp_path / "batch_out", tmp_path / "export_out"
    with LoopbackServer(valid_reply_handler(preset)) as server:
        args = _loopback_args(manifest, server.url, batch_out, "--mode", "batch", "--poll-interval", "0")
        code, stdout, err = run(args, capsys)
        assert code == 0, err
        assert "batch_000000 created (4 requests)" in err and "completed; downloading" in err
        assert "This run: 4 enriched, 0 failed" in stdout
        code, stdout, err = run(_loopback_args(manifest, server.url, export_out, "--mode", "export"), capsys)
        assert code == 0, err
        assert "Records by status: submitted: 4." in stdout
        requests = [json.loads(x) for x in (export_out / "batch" / "requests-00000.jsonl").read_text().splitlines()]
        handler = valid_reply_handler(preset)
        lines = [
            {"custom_id": r["custom_id"], "response": {"status_code": 200, "body": handler(r["body"], 0).body}}
            for r in requests
        ]
    output = tmp_path / "engine.jsonl"
    output.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, stdout, err = run(["enrich", "import", str(output), "--out", str(export_out)], capsys)
    assert code == 0, err
    assert "Records by status: validated: 4." in stdout
    from clinalign.data.enriched import iter_enriched_rows

    def texts(out: Path) -> dict[str, str]:
        return {row["id"]: row["t_ep"] for _, _, row in iter_enriched_rows(out)}

    assert texts(export_out) == texts(batch_out) and len(texts(batch_out)) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": 3}\n')
    code, _, err = run(["enrich", "import", str(bad), "--out", str(export_out)], capsys)
    assert code == 2 and "bad.jsonl, line 1: not a batch output line" in err
    code, _, err = run(["enrich", "import", str(output), "--out", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not an export folder" in err
    for folder in (batch_out, export_out):
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
