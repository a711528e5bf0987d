"""EmbeddingStore: one on-disk, content-keyed embedding cache shared by probe training, scoring and checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scoring_helpers import train_probe_dir, write_checklists, write_generated_set, write_real_set

from clinalign.critics.cache import KEYS_NAME, VECTORS_NAME, EmbeddingStore, file_sha256


@pytest.fixture(scope="module")
def world(tmp_path_factory, clip_critic):
    root = tmp_path_factory.mktemp("store")
    real = write_real_set(root)
    checklists = write_checklists(root / "checklists.json")
    train_probe_dir(clip_critic, root, root / "probe")
    gen = write_generated_set(root / "gen", real, seed=0)
    return {"root": root, "real": real, "checklists": checklists, "probe": root / "probe", "gen": gen}


def _images(world) -> list:
    return sorted((world["root"] / "real").glob("*.png")) + sorted((world["gen"] / "images").glob("*.png"))


def test_second_pass_reads_back_the_same_embeddings_without_the_encoder(world, clip_critic, tmp_path):
    from clinalign.critics.embed import embed_image_files

    paths = _images(world)
    direct = embed_image_files(clip_critic, paths, batch_size=8, progress=False)
    store = EmbeddingStore(tmp_path / "cache", clip_critic)
    first = store.embed_files(paths, batch_size=8)
    assert store.encoded == len(paths)
    torch.testing.assert_close(first, direct, rtol=0, atol=0)
    # another process (a fresh object on the same folder) finds every row; no encoder call
    calls = clip_critic.image_encoder_calls
    again = EmbeddingStore(tmp_path / "cache", clip_critic)
    second = again.embed_files(list(reversed(paths)), batch_size=8)
    assert again.encoded == 0 and clip_critic.image_encoder_calls == calls
    torch.testing.assert_close(second, direct.flip(0), rtol=0, atol=0)
    assert len(again) == len(paths)


def test_duplicates_are_stored_once_and_keys_are_contents(world, clip_critic, tmp_path):
    paths = _images(world)[:3]
    copy = tmp_path / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    store = EmbeddingStore(tmp_path / "cache", clip_critic)
    out = store.embed_files([*paths, copy, paths[1]], batch_size=8)
    assert store.encoded == 3 and len(store) == 3
    torch.testing.assert_close(out[3], out[0], rtol=0, atol=0)
    keys = (store.directory / KEYS_NAME).read_text().split()
    assert keys == [file_sha256(p) for p in paths]


def test_a_row_without_its_key_is_ignored_then_overwritten(world, clip_critic, tmp_path):
    paths = _images(world)[:4]
    store = EmbeddingStore(tmp_path / "cache", clip_critic)
    store.embed_files(paths[:2], batch_size=8)
    # a crash between the two appends: a row of garbage without a key, and a torn key line
    with open(store.directory / VECTORS_NAME, "ab") as handle:
        handle.write(np.full(clip_critic.embed_dim, 7.0, dtype=np.float32).tobytes())
    with open(store.directory / KEYS_NAME, "a") as handle:
        handle.write("abc")
    fresh = EmbeddingStore(tmp_path / "cache", clip_critic)
    assert len(fresh) == 2
    assert (fresh.lookup([file_sha256(paths[2])]) == -1).all()
    # the next append replaces both: every key names its own row again
    fresh.embed_files(paths, batch_size=8)
    assert fresh.encoded == 2
    assert (store.directory / KEYS_NAME).read_text().split() == [file_sha256(p) for p in paths]
    torch.testing.assert_close(
        EmbeddingStore(tmp_path / "cache", clip_critic).embed_files(paths), fresh.embed_files(paths), rtol=0, atol=0
    )


def test_an_orphan_row_is_overwritten_with_the_right_embedding(world, clip_critic, tmp_path):
    from clinalign.critics.embed import embed_image_files

    paths = _images(world)[:4]
    store = EmbeddingStore(tmp_path / "cache", clip_critic)
    store.embed_files(paths[:2], batch_size=8)
    with open(store.directory / VECTORS_NAME, "ab") as handle:  # an orphan row from a crash
        handle.write(np.full(clip_critic.embed_dim, 7.0, dtype=np.float32).tobytes())
    fresh = EmbeddingStore(tmp_path / "cache", clip_critic)
    got = fresh.embed_files(paths, batch_size=8)
    assert fresh.encoded == 2
    torch.testing.assert_close(got, embed_image_files(clip_critic, paths, batch_size=8, progress=False), rtol=0, atol=0)
    assert (store.directory / VECTORS_NAME).stat().st_size == 4 * 4 * clip_critic.embed_dim


def test_another_critic_never_shares_rows(world, clip_critic, siglip_critic, tmp_path):
    paths = _images(world)[:2]
    EmbeddingStore(tmp_path / "cache", clip_critic).embed_files(paths)
    other = EmbeddingStore(tmp_path / "cache", siglip_critic)
    other.embed_files(paths)
    assert other.encoded == 2 and len(list((tmp_path / "cache").iterdir())) == 2


def test_probe_training_and_scoring_share_one_store(world, clip_critic, tmp_path):
    """probe train embeds the real images; score-cas then encodes only the generated ones; scoring the same
    sets again (into another folder) runs no encoder at all."""
    from clinalign.data.records import Record
    from clinalign.probe import LinearProbe
    from clinalign.probe_training import train_probe
    from clinalign.scoring.report import ScoreCASConfig, evaluate_cas
    from clinalign.utils.io import read_jsonl

    shared = tmp_path / "embeddings"
    real_rows = read_jsonl(world["real"])
    records = [
        Record(id=r["id"], image=world["real"].parent / r["image"], label=r["label"]) for r in real_rows
    ]  # fmt: skip
    train_probe(clip_critic, records, tmp_path / "probe", epochs=2, progress=False, embedding_cache=shared)
    config = ScoreCASConfig(
        methods={"craft": [str(world["gen"])]}, real=str(world["real"]), checklists=str(world["checklists"]),
        evaluator=clip_critic.name, probe=str(world["probe"]), n_boot=20, n_lowest=0, out=str(tmp_path / "a"),
        embedding_cache=str(shared), batch_size=32,
    )  # fmt: skip
    probe = LinearProbe.load(world["probe"])
    calls = clip_critic.image_encoder_calls
    first = evaluate_cas(config, evaluator=clip_critic, probe=probe, progress=False)
    assert clip_critic.image_encoder_calls == calls + 1  # only the 18 generated images: one batch of 32
    calls = clip_critic.image_encoder_calls
    second = evaluate_cas(config.model_copy(update={"out": str(tmp_path / "b")}), evaluator=clip_critic, probe=probe)
    assert clip_critic.image_encoder_calls == calls  # no encoder forward pass
    np.testing.assert_array_equal(second.method_scores("craft").cas, first.method_scores("craft").cas)
    assert not (tmp_path / "a" / "cache").exists()


def test_evaluation_cache_reads_and_fills_the_store(world, clip_critic, tmp_path):
    from clinalign.evaluation.inputs import EmbeddingCache, embed_paths

    paths = _images(world)[:5]
    store = EmbeddingStore(tmp_path / "cache", clip_critic)
    store.embed_files(paths[:3])
    cache = EmbeddingCache(clip_critic, store=store)
    calls = clip_critic.image_encoder_calls
    embed_paths(cache, paths)
    assert store.encoded == 5 and clip_critic.image_encoder_calls == calls + 1  # only the 2 new images
    assert len(EmbeddingStore(tmp_path / "cache", clip_critic)) == 5
