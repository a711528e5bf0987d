"""LinearProbe: fitting, determinism, save/load round trip, space checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clinalign.errors import ConfigError, DataError
from clinalign.probe import LinearProbe

CLASSES = ["cardiomegaly", "effusion", "pneumonia", "no finding"]


def _clusters(n_per_class: int, dim: int = 24, seed: int = 0, spread: float = 0.35):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    return x.astype(np.float32), y


def test_probe_separates_separable_embeddings():
    x, y = _clusters(150)
    xt, yt = _clusters(50, seed=0)  # same centres (same seed) but fresh noise below
    rng = np.random.default_rng(9)
    xt = xt + 0.05 * rng.normal(size=xt.shape).astype(np.float32)
    probe = LinearProbe.fit(x, y, CLASSES, epochs=50, seed=0)
    assert probe.metrics["train_accuracy"] > 0.97
    assert probe.accuracy(xt, yt) > 0.95
    # an untrained probe is at chance level, so the fit is what makes the difference
    untrained = LinearProbe(x.shape[1], CLASSES)
    assert untrained.accuracy(xt, yt) < 0.6


def test_probe_accepts_label_names_and_is_deterministic():
    x, y = _clusters(40)
    names = [CLASSES[i] for i in y]
    a = LinearProbe.fit(torch.from_numpy(x), names, CLASSES, epochs=5, seed=7)
    b = LinearProbe.fit(x, y, CLASSES, epochs=5, seed=7)
    c = LinearProbe.fit(x, y, CLASSES, epochs=5, seed=8)
    torch.testing.assert_close(a.linear.weight, b.linear.weight, rtol=0, atol=0)
    assert not torch.equal(a.linear.weight, c.linear.weight)


def test_log_prob_is_differentiable_log_softmax():
    x, y = _clusters(10)
    probe = LinearProbe.fit(x, y, CLASSES, epochs=2)
    emb = torch.from_numpy(x[:4]).requires_grad_(True)
    lp = probe.log_prob(emb)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(4))
    manual = torch.log_softmax(emb.detach() @ probe.linear.weight.detach().T + probe.linear.bias.detach(), -1)
    torch.testing.assert_close(lp.detach(), manual)
    lp[:, 0].sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    x, y = _clusters(30)
    probe = LinearProbe.fit(
        x, y, CLASSES, epochs=3, critic_name="transformers:tiny", val_embeddings=x[:10], val_labels=y[:10]
    )
    probe.save(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "probe_config.json").read_text())
    assert config["_class_name"] == "LinearProbe" and config["class_names"] == CLASSES
    assert config["critic_name"] == "transformers:tiny" and config["embed_dim"] == 24
    assert "val_accuracy" in config["metrics"]
    loaded = LinearProbe.load(tmp_path / "p", critic_name="transformers:tiny", embed_dim=24)
    torch.testing.assert_close(loaded.log_prob(torch.from_numpy(x)), probe.log_prob(torch.from_numpy(x)))
    assert loaded.class_names == CLASSES and loaded.metrics == probe.metrics


def test_load_rejects_other_critic_or_dim(tmp_path):
    x, y = _clusters(10)
    LinearProbe.fit(x, y, CLASSES, epochs=1, critic_name="transformers:a").save(tmp_path)
    with pytest.raises(ConfigError, match="fitted on embeddings of critic 'transformers:a'"):
        LinearProbe.load(tmp_path, critic_name="transformers:b")
    with pytest.raises(ConfigError, match="24-d embeddings but the critic gives 32-d"):
        LinearProbe.load(tmp_path, embed_dim=32)
    with pytest.raises(DataError, match="not a probe directory"):
        LinearProbe.load(tmp_path / "missing")


def test_load_warns_on_unknown_keys_and_fails_on_missing(tmp_path):
    x, y = _clusters(10)
    LinearProbe.fit(x, y, CLASSES, epochs=1).save(tmp_path)
    path = tmp_path / "probe_config.json"
    config = json.loads(path.read_text())
    config["future_field"] = 1
    path.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="future_field"):
        LinearProbe.load(tmp_path)
    del config["class_names"]
    path.write_text(json.dumps(config))
    with pytest.raises(DataError, match="missing required keys"):
        LinearProbe.load(tmp_path)


def test_bad_inputs():
    x, y = _clusters(10)
    with pytest.raises(DataError, match="not one of the probe's classes"):
        LinearProbe.fit(x, ["cat"] * len(x), CLASSES)
    with pytest.raises(DataError, match="must match"):
        LinearProbe.fit(x, y[:-1], CLASSES)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        LinearProbe(8, ["only"])
    probe = LinearProbe(24, CLASSES)
    with pytest.raises(DataError, match=r"\[N, 24\]"):
        probe.log_prob(torch.rand(3, 5))


def test_probe_matches_a_local_copy_of_its_critic_by_fingerprint(tmp_path, tiny_clip_dir, clip_critic, siglip_critic):
    import shutil

    from clinalign.critics import load_critic
    from clinalign.rewards import DDReward

    copy = load_critic(shutil.copytree(tiny_clip_dir, tmp_path / "clip_copy"))
    x = np.random.default_rng(0).normal(size=(20, clip_critic.embed_dim)).astype(np.float32)
    y = np.arange(20) % 2
    LinearProbe.fit(
        x, y, CLASSES[:2], epochs=1, critic_name=clip_critic.name, critic_fingerprint=clip_critic.fingerprint
    ).save(tmp_path / "probe")
    probe = LinearProbe.load(tmp_path / "probe", critic=copy)  # other path, same weights
    assert probe.critic_fingerprint == copy.fingerprint
    DDReward(copy, probe)
    from clinalign.testing import build_tiny_clip

    other = load_critic(build_tiny_clip(tmp_path / "other_clip", seed=1))  # same size, other weights
    with pytest.raises(ConfigError, match="not on the critic"):
        LinearProbe.load(tmp_path / "probe", critic=other)
    with pytest.raises(ConfigError, match="16-d embeddings but critic"):
        LinearProbe.load(tmp_path / "probe", critic=siglip_critic)
