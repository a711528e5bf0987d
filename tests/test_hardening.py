"""Issue 11: one regression test per failure class, through the real entry point (two real processes for the
two-writers cases)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from cli_support import run
from enrich_fixtures import make_records, read_lines

from clinalign.enrich import get_preset
from clinalign.enrich.testing import (
    LoopbackServer,
    ScriptedResponse,
    html_page_handler,
    valid_reply_handler,
)
from clinalign.utils.outdir import LOCK_NAME

SECRET = "sk-hardening-secret-123456789"
SRC = Path(__file__).parents[1] / "src"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINALIGN_TEST_KEY", SECRET)
    monkeypatch.delenv("CLINALIGN_TRACEBACK", raising=False)


def _manifest(tmp_path: Path, labels: list[str], *, extra_rows: list[tuple[str, str]] = ()) -> Path:
    records = make_records(tmp_path / "img", labels)
    rows = [(f"img/{Path(r.image).name}", r.label) for r in records] + list(extra_rows)
    path = tmp_path / "manifest.csv"
    path.write_text("image,label\n" + "".join(f"{image},{label}\n" for image, label in rows))
    return path


def _enrich_args(manifest: Path, url: str, out: Path, *extra: str) -> list[str]:
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
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _subprocess_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(SRC), CLINALIGN_TEST_KEY=SECRET)


def _gated_handler(preset, gate: threading.Event):
    """Valid replies, but every request waits until ``gate`` is set (so a run is held mid-flight)."""
    valid = valid_reply_handler(preset)

    def handle(body, number):
        gate.wait(60)
        return valid(body, number)

    return handle


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------ 1. one writer per output folder
def test_second_enrich_into_the_same_folder_exits_2_naming_the_holder(tmp_path):
    manifest = _manifest(tmp_path, ["a", "b", "a", "b"])
    out = tmp_path / "out"
    gate = threading.Event()
    preset = get_preset("generic").with_classes(["a", "b"])
    with LoopbackServer(_gated_handler(preset, gate)) as server:
        args = [sys.executable, "-m", "clinalign", *_enrich_args(manifest, server.url, out, "--concurrency", "1")]
        first = subprocess.Popen(args, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # the first run holds the lock once its first request is in flight
            _wait_for(lambda: len(server.requests) >= 1, "the first run's first request")
            second = subprocess.run(args, env=_subprocess_env(), capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert f"pid {first.pid}" in second.stderr and "`clinalign enrich`" in second.stderr
            assert "Traceback" not in second.stderr
            assert len(server.requests) == 1  # the second run sent nothing
        finally:
            gate.set()
            _, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_err
    ids = [row["id"] for row in read_lines(out / "enriched.jsonl")]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert len(server.requests) == 4  # every record paid for once
    assert not (out / LOCK_NAME).exists()


def test_lock_of_a_killed_run_is_taken_over_with_a_message_and_the_rerun_resumes(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a", "b", "a", "b"])
    out = tmp_path / "out"
    gate = threading.Event()
    preset = get_preset("generic").with_classes(["a", "b"])
    with LoopbackServer(_gated_handler(preset, gate)) as server:
        args = _enrich_args(manifest, server.url, out, "--concurrency", "1")
        first = subprocess.Popen(
            [sys.executable, "-m", "clinalign", *args],
            env=_subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: len(server.requests) >= 1, "the first run's first request")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["command"] == "enrich"
        gate.set()
        code, _stdout, err = run(args, capsys)
    assert code == 0, err
    assert "taking over a stale lock" in err and f"pid {first.pid}" in err
    assert len(read_lines(out / "enriched.jsonl")) == 4
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ 2. fresh run into a used folder; output is a file
def test_fresh_run_into_a_used_folder_is_refused_and_overwrite_empties_it(tmp_path, tiny_clip_dir, capsys):
    manifest = _manifest(tmp_path, ["a", "b"] * 4)
    out = tmp_path / "probe"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's file")
    argv = ["probe", "train", "--critic", str(tiny_clip_dir), "--manifest", str(manifest), "--out", str(out)]
    argv += ["--split", "", "--val-fraction", "0", "--epochs", "2", "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "already holds files (notes.txt)" in err and "--overwrite" in err
    assert (out / "notes.txt").is_file() and not (out / "probe.safetensors").exists()
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "notes.txt").exists() and (out / "probe.safetensors").is_file()
    # a finished probe is not silently replaced by a second fresh run
    code, _, err = run(argv, capsys)
    assert code == 2 and "probe.safetensors" in err
    # enrichment into a folder that holds something else is refused too (its own folder resumes)
    code, _, err = run(_enrich_args(manifest, "http://127.0.0.1:9/v1", out), capsys)
    assert code == 2 and "already holds files" in err


def test_output_path_that_is_a_file_exits_2_before_any_model_loads(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a", "b"])
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a prompt\n")
    config = tmp_path / "train.yaml"
    config.write_text(f"model: /no/such/model\ntrain_data: {manifest}\noutput_dir: {taken}\n")
    score_cas = ["score-cas", "--generated", "g", "--real", str(manifest), "--evaluator", "e", "--probe", "p"]
    score_cas += ["--out", str(taken)]
    commands = {
        "enrich": _enrich_args(manifest, "http://127.0.0.1:9/v1", taken),
        "checklists": ["checklists", "--dataset", "chexpert", "--out", str(taken)],
        "probe train": ["probe", "train", "--critic", "/no/critic", "--manifest", str(manifest), "--out", str(taken)],
        "score-cas": score_cas,
        "quickstart": ["quickstart", "--out", str(taken)],
        "generate": ["generate", "--model", "/no/such/model", "--prompts", str(prompts), "--out", str(taken)],
        "train": ["train", "--config", str(config)],
    }
    for name, argv in commands.items():
        code, _, err = run(argv, capsys)
        assert code == 2, (name, err)
        assert f"{taken} is an existing file" in err, (name, err)
        assert "Traceback" not in err
    assert taken.read_text() == "x"


# ------------------------------------------------------------------ 3. torn JSONL
def test_torn_jsonl_input_is_an_error_and_a_torn_own_file_is_repaired_with_a_count(tmp_path, capsys):
    records = make_records(tmp_path / "img", ["a", "b", "a"])
    manifest = tmp_path / "manifest.jsonl"
    lines = [json.dumps({"image": str(r.image), "label": r.label}) for r in records]
    manifest.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # a crash mid-write
    code, _, err = run(["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run"], capsys)
    assert code == 2 and f"{manifest}, line 3" in err and "cut off" in err

    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    preset = get_preset("generic").with_classes(["a", "b"])
    with LoopbackServer(valid_reply_handler(preset)) as server:
        args = _enrich_args(manifest, server.url, out)
        assert run(args, capsys)[0] == 0
        enriched = out / "enriched.jsonl"
        kept = enriched.read_text().splitlines()
        enriched.write_text("\n".join(kept[:2]) + "\n" + kept[2][: len(kept[2]) // 2])  # torn last append
        code, _stdout, err = run(args, capsys)
        assert code == 0, err
        assert "dropped 1 row" in err
        assert len(server.requests) == 4  # 3 + the torn record redone
    rows = read_lines(enriched)
    assert sorted(r["id"] for r in rows) == sorted(str(r.image) for r in records)  # generic ids: the image paths
    assert enriched.read_text().endswith("\n")


# ------------------------------------------------------------------ 4. safetensors only
def _to_pickle(folder: Path, name: str, new_name: str) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / name)), folder / new_name)
    (folder / name).unlink()


def test_pickle_weights_are_refused_with_a_conversion_hint(tmp_path, tiny_clip_dir, capsys):
    from clinalign.toy.paths import base_model_dir

    manifest = _manifest(tmp_path, ["a", "b"] * 2)
    # a critic saved with pickle
    critic = tmp_path / "critic"
    shutil.copytree(tiny_clip_dir, critic)
    _to_pickle(critic, "model.safetensors", "pytorch_model.bin")
    base = ["probe", "train", "--manifest", str(manifest), "--split", "", "--val-fraction", "0", "--epochs", "1"]
    code, _, err = run([*base, "--critic", str(critic), "--out", str(tmp_path / "p1")], capsys)
    assert code == 2 and "pytorch_model.bin" in err and "safe_serialization=True" in err
    # --allow-pickle is for local files only, never for hub ids
    code, _, err = run([*base, "--critic", "org/some-model", "--allow-pickle", "--out", str(tmp_path / "p2")], capsys)
    assert code == 2 and "trusted local files only" in err
    # a pipeline whose UNet is pickle, and a pickle LoRA
    pipe = tmp_path / "pipe"
    shutil.copytree(base_model_dir(), pipe)
    _to_pickle(pipe / "unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a prompt\n")
    code, _, err = run(
        ["generate", "--model", str(pipe), "--prompts", str(prompts), "--out", str(tmp_path / "g")], capsys
    )
    assert code == 2 and "unet/diffusion_pytorch_model.bin" in err
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.bin").write_bytes(b"not really")
    argv = ["generate", "--model", str(base_model_dir()), "--prompts", str(prompts), "--lora", str(lora)]
    code, _, err = run([*argv, "--out", str(tmp_path / "g2"), "--resolution", "16", "--steps", "1"], capsys)
    assert code == 2 and "pytorch_lora_weights.bin" in err and "Traceback" not in err
    # a probe folder holding pickle weights, and a pickle renamed to .safetensors
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe_config.json").write_text(json.dumps({"class_names": ["a", "b"], "embed_dim": 4}))
    (probe / "probe.bin").write_bytes(b"\x80\x04pickle")
    code, _, err = run(["probe", "show", str(probe)], capsys)
    assert code == 2 and "probe.bin" in err and "safetensors" in err
    (probe / "probe.bin").rename(probe / "probe.safetensors")
    code, _, err = run(["probe", "show", str(probe)], capsys)
    assert code == 2 and "not a readable safetensors file" in err


def test_checkpoint_with_a_non_safetensors_file_is_an_error(tmp_path):
    from clinalign.errors import DataError
    from clinalign.training.checkpoint import LORA_NAME, OPTIMIZER_NAME, STATE_NAME, load_checkpoint

    (tmp_path / STATE_NAME).write_text(json.dumps({"optimizer": {"param_groups": [], "scalars": {}}}))
    (tmp_path / LORA_NAME).write_bytes(b"\x80\x04\x95pickled")
    (tmp_path / OPTIMIZER_NAME).write_bytes(b"\x80\x04\x95pickled")
    with pytest.raises(DataError, match=r"lora\.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------ 5. sizes before allocation
def test_probe_config_with_a_huge_embed_dim_is_refused_before_allocating(tmp_path, capsys):
    import tracemalloc

    from clinalign.probe import LinearProbe

    LinearProbe(4, ["a", "b", "c"]).save(tmp_path / "probe")
    config_path = tmp_path / "probe" / "probe_config.json"
    config = json.loads(config_path.read_text())
    config["embed_dim"] = 2**31  # 3 x 2^31 fp32 weights would be 24 GiB
    config_path.write_text(json.dumps(config))
    tracemalloc.start()
    code, _, err = run(["probe", "show", str(tmp_path / "probe")], capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2 and "embed_dim 2147483648" in err and "[3, 4]" in err
    assert peak < 50 * 2**20
    config["embed_dim"], config["class_names"] = 4, [f"c{i}" for i in range(5)]
    config_path.write_text(json.dumps(config))
    code, _, err = run(["probe", "show", str(tmp_path / "probe")], capsys)
    assert code == 2 and "5 classes" in err


# ------------------------------------------------------------------ 6. decompression bombs
def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side black pixels: ~40 KB on disk, 400 M pixels when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_record_failure_in_enrich_and_an_exit_2_in_probe_train(tmp_path, tiny_clip_dir, capsys):
    manifest = _manifest(tmp_path, ["a", "b", "a", "b"], extra_rows=[("img/bomb.png", "a")])
    _bomb_png(tmp_path / "img" / "bomb.png")
    out = tmp_path / "out"
    preset = get_preset("generic").with_classes(["a", "b"])
    with LoopbackServer(valid_reply_handler(preset)) as server:
        args = _enrich_args(manifest, server.url, out)
        for _ in range(2):  # the rerun retries the failure and does not crash either
            code, _stdout, err = run(args, capsys)
            assert code == 0, err
            assert "Traceback" not in err
        failures = read_lines(out / "failures.jsonl")
        assert [f["reason"] for f in failures] == ["image_unreadable"]
        assert "400000000 pixels" in failures[0]["detail"] and "decompression bomb" in failures[0]["detail"]
        assert len(read_lines(out / "enriched.jsonl")) == 4
        # the limit is an option: a tiny one makes every image over-limit
        code, _, err = run(_enrich_args(manifest, server.url, tmp_path / "o2", "--max-image-pixels", "100"), capsys)
        assert code == 0 and not (tmp_path / "o2" / "enriched.jsonl").is_file()
        assert len(read_lines(tmp_path / "o2" / "failures.jsonl")) == 5
    argv = ["probe", "train", "--critic", str(tiny_clip_dir), "--manifest", str(manifest), "--split", ""]
    code, _, err = run([*argv, "--val-fraction", "0", "--out", str(tmp_path / "probe"), "--no-progress"], capsys)
    assert code == 2 and "bomb.png" in err and "--max-image-pixels" in err


# ------------------------------------------------------------------ 7. no traceback on any input
def test_non_utf8_manifest_names_line_and_offset_and_encoding_fixes_it(tmp_path, capsys):
    _manifest(tmp_path, ["a", "b"])
    manifest = tmp_path / "latin1.csv"
    manifest.write_bytes("image,label\nimg/img000.png,a\nimg/img001.png,lésion\n".encode("latin-1"))
    argv = ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run"]
    code, _, err = run(argv, capsys)
    offset = len(b"image,label\nimg/img000.png,a\nimg/img001.png,l")
    assert code == 2 and f"line 3 (byte offset {offset})" in err and "--encoding" in err
    code, out, err = run([*argv, "--encoding", "latin-1"], capsys)
    assert code == 0, err
    assert "lésion" in out or "2 records" in err


def test_csv_field_over_the_csv_module_limit_is_read(tmp_path, capsys):
    records = make_records(tmp_path / "img", ["a", "b"])
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "report"])
        for r in records:
            writer.writerow([str(r.image), r.label, "long free-text report " * 20000])  # 440 KB > 128 KiB
    code, _, err = run(["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run"], capsys)
    assert code == 0, err
    assert "generic: 2 records" in err


# ------------------------------------------------------------------ 8. enrichment diagnosis
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_enrich_against_a_closed_port_html_or_404_stops_with_a_diagnosis(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a", "b"] * 4)
    code, stdout, err = run(_enrich_args(manifest, f"http://127.0.0.1:{_closed_port()}/v1", tmp_path / "o1"), capsys)
    assert code == 2 and "could not connect" in err and "/v1" in err
    assert "Wrote" not in stdout
    with LoopbackServer(html_page_handler()) as server:
        code, stdout, err = run(_enrich_args(manifest, server.url, tmp_path / "o2"), capsys)
        assert code == 2 and "not a chat completion" in err and "<!DOCTYPE html>" in err and "/v1" in err
        assert len(server.requests) <= 8  # stopped after the first 8 attempts, no retries beyond them
    with LoopbackServer(lambda body, number: ScriptedResponse(status=404, body={"error": "nope"})) as server:
        code, stdout, err = run(_enrich_args(manifest, server.url, tmp_path / "o3"), capsys)
        assert code == 2 and "404" in err and "/v1" in err
    # fewer attempts than the early-stop count: the end of the run says what went wrong
    small = _manifest(tmp_path / "small", ["a"])
    args = _enrich_args(small, f"http://127.0.0.1:{_closed_port()}/v1", tmp_path / "o4", "--max-retries", "0")
    code, stdout, err = run(args, capsys)
    assert code == 2 and "nothing was enriched" in err and "could not connect" in err
    assert "Wrote" not in stdout


# ------------------------------------------------------------------ 9. config errors say their prefix once
def test_option_errors_name_the_flag_and_say_the_prefix_once(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a", "b"])
    argv = ["enrich", "--dataset", "generic", "--manifest", str(manifest), "--dry-run", "--timeout", "0"]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("invalid enrichment options") == 1 and "--timeout:" in err
    argv = ["score-cas", "--generated", str(tmp_path), "--real", str(manifest), "--evaluator", "e", "--probe", "p"]
    code, _, err = run([*argv, "--out", str(tmp_path / "s"), "--tau-quantile", "2"], capsys)
    assert code == 2 and err.count("invalid score-cas options") == 1 and "--tau-quantile:" in err


# ------------------------------------------------------------------ 10. flag consistency (issue 10)
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["enrich"], ["--out", "--overwrite", "--no-progress", "json_schema", "json_object", "max_completion_tokens"]),
        (["checklists"], ["--out", "--overwrite", "json_object"]),
        (["probe", "train"], ["--out", "--overwrite", "--no-progress", "bf16", "--allow-pickle"]),
        (["score-cas"], ["--out", "--overwrite", "--no-progress", "probability", "bf16", "--max-image-pixels"]),
        (["quickstart"], ["--out", "--overwrite", "--no-progress"]),
    ],
)
def test_flags_are_consistent_and_choices_are_listed(command, expected, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0
    for text in expected:
        assert text in out, (command, text)


def test_output_lock_library_api(tmp_path, monkeypatch):
    from clinalign.errors import ClinAlignError
    from clinalign.utils.outdir import OutputLock, OutputLockedError, claim_output_dir

    with OutputLock(tmp_path / "run", command="train") as lock:
        assert lock.held and json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(OutputLockedError, match=r"in use by `clinalign train` \(pid"):
            OutputLock(tmp_path / "run", command="generate").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    OutputLock(tmp_path / "run", command="generate").acquire().release()  # free again
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClinAlignError, match="cannot create the output folder"):
        OutputLock(tmp_path / "file" / "run", command="train").acquire()
    # --overwrite never empties the working directory (or a parent of it)
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(ClinAlignError, match="current folder"):
        claim_output_dir(tmp_path, command="train", overwrite=True)
    assert (tmp_path / "file").is_file() and not (tmp_path / LOCK_NAME).exists()


def test_torn_last_line_of_train_data_is_an_error_naming_the_line(tmp_path):
    from clinalign.errors import DataError
    from clinalign.training.data import load_examples

    records = make_records(tmp_path / "img", ["a", "b", "a"])
    rows = [json.dumps({"image": str(r.image), "label": r.label, "prompt": "p", "checklist": "c"}) for r in records]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(rows) + "\n")
    assert len(load_examples(data)) == 3
    data.write_text("\n".join(rows[:2]) + "\n" + rows[2][:25])  # a crash mid-write
    with pytest.raises(DataError, match=r"train\.jsonl, line 3: the last line is cut off"):
        load_examples(data)


def test_train_lock_is_taken_by_the_main_process_only(tmp_path, capsys, monkeypatch):
    """Under `accelerate launch` every rank runs the command; only rank 0 may hold the folder's lock."""
    from clinalign.utils.outdir import OutputLock

    run_dir = tmp_path / "run"
    config = tmp_path / "train.yaml"
    missing = tmp_path / "missing.jsonl"
    config.write_text(f"model: {tmp_path / 'no-model'}\ntrain_data: {missing}\noutput_dir: {run_dir}\n")
    with OutputLock(run_dir, command="train"):  # the main process of the same job holds it
        monkeypatch.setenv("RANK", "0")
        code, _, err = run(["train", "--config", str(config)], capsys)
        assert code == 2 and "in use by `clinalign train`" in err
        monkeypatch.setenv("RANK", "1")
        code, _, err = run(["train", "--config", str(config)], capsys)
        assert code == 2 and "in use" not in err  # rank 1 went past the lock, to the (missing) data


@pytest.mark.parametrize("reader", ["read_json", "read_jsonl"])
def test_json_readers_name_the_file_and_line_of_a_non_utf8_byte(tmp_path, reader):
    from clinalign.errors import DataError
    from clinalign.utils import io

    path = tmp_path / "checklists.json"
    path.write_bytes('{"a": 1,\n "b": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"checklists\.json, line 2 \(byte offset 19\): not valid utf-8 text"):
        getattr(io, reader)(path)
