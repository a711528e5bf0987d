"""`score-cas` on 2 CPU processes equals 1 process (CSV and JSON); CASScorer's cross-process reduction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_helpers import launch
from scoring_helpers import train_probe_dir, write_checklists, write_generated_set, write_real_set

from clinalign.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory, clip_critic):
    root = tmp_path_factory.mktemp("cas_dist")
    real = write_real_set(root)
    checklists = write_checklists(root / "checklists.json")
    train_probe_dir(clip_critic, root, root / "probe")
    gen = [write_generated_set(root / f"craft_s{s}", real, seed=s) for s in (0, 1)]
    return {"real": real, "checklists": checklists, "probe": root / "probe", "gen": gen}


def _argv(world, evaluator: Path, out: Path) -> list[str]:
    argv = ["score-cas", "--real", str(world["real"]), "--evaluator", str(evaluator), "--probe", str(world["probe"])]
    argv += ["--checklists", str(world["checklists"]), "--out", str(out), "--n-boot", "50", "--no-progress"]
    # batch 5 leaves uneven shards (e.g. 18 images: rank 0 gets 10, rank 1 gets 8)
    argv += ["--batch-size", "5", "--device", "cpu"]
    return argv + [arg for g in world["gen"] for arg in ("--method", f"craft={g}")]


def test_two_process_score_cas_equals_one_process(world, tiny_clip_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each launched rank: CPU sums differ in the last bits between thread counts
    try:
        main(_argv(world, tiny_clip_dir, one))
    finally:
        torch.set_num_threads(threads)
    proc = launch(2, ["-m", "clinalign", *_argv(world, tiny_clip_dir, two)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("per_image.csv", "real_per_image.csv", "tables.md"):
        assert (two / name).read_text() == (one / name).read_text(), name
    a, b = json.loads((one / "summary.json").read_text()), json.loads((two / "summary.json").read_text())
    assert a == b
    assert proc.stdout.count("wrote ") == 1  # the report is printed by the main process only
    assert len((one / "per_image.csv").read_text().splitlines()) == 1 + 36


def _scores(clip_critic, probe, n: int):
    from clinalign.scoring import CASScorer

    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(n, clip_critic.embed_dim, generator=gen), dim=-1)
    prompts = [f"an image {i}" for i in range(n)]
    labels = [probe.class_names[i % len(probe.class_names)] for i in range(n)]
    return CASScorer(clip_critic, probe, batch_size=4), emb, prompts, labels


def test_compute_orders_rows_by_index_and_drops_padding_duplicates(world, clip_critic):
    from clinalign.probe import LinearProbe

    probe = LinearProbe.load(world["probe"])
    scorer, emb, prompts, labels = _scores(clip_critic, probe, 7)
    ids = [f"img{i}" for i in range(7)]
    whole = scorer.update_from_embeddings(emb, prompts, ["c"] * 7, labels, ids=ids)
    scorer.reset()
    # shards as a distributed sampler makes them: interleaved, the last one padded with image 0 again
    for index in ([0, 2, 4, 6], [1, 3, 5, 0]):
        scorer.update_from_embeddings(
            emb[index], [prompts[i] for i in index], ["c"] * 4, [labels[i] for i in index],
            ids=[ids[i] for i in index], indices=index,
        )  # fmt: skip
    got = scorer.compute(sync=False)
    assert got.ids == ids
    np.testing.assert_allclose(got.cas, whole.cas, rtol=0, atol=1e-12)
    assert got.rows() == whole.rows()


def test_compute_refuses_one_index_for_two_images(world, clip_critic):
    from clinalign.errors import DataError
    from clinalign.probe import LinearProbe

    probe = LinearProbe.load(world["probe"])
    scorer, emb, prompts, labels = _scores(clip_critic, probe, 4)
    scorer.update_from_embeddings(emb[:2], prompts[:2], ["c"] * 2, labels[:2], ids=["a", "b"], indices=[0, 1])
    scorer.update_from_embeddings(emb[2:], prompts[2:], ["c"] * 2, labels[2:], ids=["c", "d"], indices=[1, 2])
    with pytest.raises(DataError, match="index 1 was given to two different images"):
        scorer.compute(sync=False)
