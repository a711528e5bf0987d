"""`clinalign generate` sharded over 2 CPU processes: bit-identical to 1 process, and a killed rank resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed_helpers import launch
from test_train_support import tiny_sd_path

from clinalign.cli import main


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"a chest x-ray {i}", "label": ["a", "b"][i % 2]} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _argv(prompts: Path, out: Path, *, batch_size: int = 2) -> list[str]:
    return [
        "generate", "--model", str(tiny_sd_path()), "--prompts", str(prompts), "--out", str(out),
        "--n-per-prompt", "2", "--resolution", "16", "--steps", "2", "--seed", "7",
        "--batch-size", str(batch_size), "--no-progress", "--device", "cpu",
    ]  # fmt: skip


def _images(out: Path) -> dict[str, bytes]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {row["file"]: (out / row["file"]).read_bytes() for row in rows}


@pytest.fixture(scope="module")
def reference(prompts, tmp_path_factory) -> Path:
    """One process, in this process; with one thread like each launched rank (CPU sums differ in the last
    bits between thread counts, not between process counts)."""
    import torch

    out = tmp_path_factory.mktemp("gen") / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _run(_argv(prompts, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_two_processes_write_the_same_images_and_manifest_as_one(prompts, reference, tmp_path):
    out = tmp_path / "two"
    proc = launch(2, ["-m", "clinalign", *_argv(prompts, out)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    one = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(one) == 10
    assert two == one  # same rows (seeds, sha256), same prompt order
    assert [(r["prompt_index"], r["sample_index"]) for r in two] == [(p, j) for p in range(5) for j in range(2)]
    assert _images(out) == _images(reference)  # bit-identical PNGs
    stats = json.loads((out / "generate_stats.json").read_text())
    assert stats["num_processes"] == 2 and stats["generated"] == 10
    # 3 batches of 2 for rank 0 and 2 for rank 1 (dealt in turn)
    assert [(r["rank"], r["images"]) for r in stats["ranks"]] == [(0, 6), (1, 4)]
    assert "rank 1: 4 images" in proc.stdout
    assert not (out / "parts").exists() and not (out / ".clinalign.lock").exists()


def test_a_killed_rank_then_a_rerun_completes_the_set(prompts, reference, tmp_path):
    out = tmp_path / "killed"
    worker = str(Path(__file__).with_name("generate_kill_worker.py"))
    proc = launch(2, [worker, *_argv(prompts, out, batch_size=1)])
    assert proc.returncode != 0
    assert not (out / "manifest.jsonl").read_text().strip() or len(_images(out)) < 10
    listed_before = sum(1 for _ in (out / "parts").glob("*.jsonl"))
    assert listed_before >= 1  # the ranks' part manifests survived the crash
    # the rerun (2 processes again) merges what was written, verifies it and makes only the rest
    proc = launch(2, ["-m", "clinalign", *_argv(prompts, out, batch_size=1)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    stats = json.loads((out / "generate_stats.json").read_text())
    assert 0 < stats["generated"] < 10 and stats["skipped"] == 10 - stats["generated"]
    assert _images(out) == _images(reference)
    one = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
    assert [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()] == one


def test_a_corrupted_image_is_made_again(prompts, reference, tmp_path):
    import shutil

    import torch

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    victim = out / "images" / "000002_001.png"
    victim.write_bytes(b"not a png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _run(_argv(prompts, out)) == 0
    finally:
        torch.set_num_threads(threads)
    stats = json.loads((out / "generate_stats.json").read_text())
    assert stats["generated"] == 1 and stats["skipped"] == 9
    assert _images(out) == _images(reference)


@pytest.mark.slow
def test_a_locked_folder_stops_every_rank(prompts, tmp_path):
    from clinalign.utils.outdir import OutputLock

    out = tmp_path / "locked"
    with OutputLock(out, command="generate"):
        proc = launch(2, ["-m", "clinalign", *_argv(prompts, out)], timeout=300)
    assert proc.returncode != 0
    assert "is in use by" in proc.stderr
