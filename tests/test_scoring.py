"""CASScorer and tail analysis against an independent NumPy computation from the same embeddings."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from clinalign.errors import ConfigError, DataError
from clinalign.probe import LinearProbe
from clinalign.scoring import (
    CASScorer,
    CASScores,
    bootstrap_ci,
    fraction_below,
    tail_analysis,
    tail_threshold,
)

CLASSES = ["effusion", "no finding", "pneumonia"]
CHECKLISTS = {
    "effusion": "blunted costophrenic angle meniscus sign fluid",
    "no finding": "clear lungs sharp costophrenic angles normal heart size",
    "pneumonia": "consolidation airspace opacity air bronchogram lobe",
}


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g)
    return (base + 0.15 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def setup(clip_critic):
    n = 24
    images = _images(n, 1)
    refs = _images(n, 2)
    labels = [CLASSES[i % 3] for i in range(n)]
    prompts = [f"chest x-ray with {label} in the {('upper', 'lower')[i % 2]} lobe" for i, label in enumerate(labels)]
    checklists = [CHECKLISTS[label] for label in labels]
    with torch.no_grad():
        train = clip_critic.encode_images(_images(60, 3))
    y = [i % 3 for i in range(60)]
    probe = LinearProbe.fit(train, y, CLASSES, epochs=30, lr=0.05, critic_name=clip_critic.name)
    return {"images": images, "refs": refs, "labels": labels, "prompts": prompts, "checklists": checklists} | {
        "probe": probe
    }


def _numpy_reference(critic, probe, s, dd_mode):
    with torch.no_grad():
        x = critic.encode_images(s["images"]).numpy().astype(np.float64)
        r = critic.encode_images(s["refs"]).numpy().astype(np.float64)
    t_ep = critic.encode_texts(s["prompts"]).numpy().astype(np.float64)
    t_c = critic.encode_texts(s["checklists"]).numpy().astype(np.float64)

    def cos(a, b):
        return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    w = probe.linear.weight.detach().numpy().astype(np.float64)
    b = probe.linear.bias.detach().numpy().astype(np.float64)
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([CLASSES.index(label) for label in s["labels"]])
    dd = (p.argmax(1) == y).astype(float) if dd_mode == "accuracy" else p[np.arange(len(y)), y]
    out = {"vdc": cos(x, t_ep), "ccs": cos(x, t_c), "dd": dd, "sfs": cos(x, r)}
    out["cas4"] = (out["vdc"] + out["ccs"] + out["dd"] + out["sfs"]) / 4
    out["cas3"] = (out["vdc"] + out["ccs"] + out["dd"]) / 3
    return out


@pytest.mark.parametrize("dd_mode", ["accuracy", "probability"])
def test_primitives_and_cas_match_numpy(clip_critic, setup, dd_mode):
    s = setup
    scorer = CASScorer(clip_critic, s["probe"], dd_mode=dd_mode, batch_size=5)
    scores = scorer.score(s["images"], s["prompts"], s["checklists"], s["labels"], references=s["refs"])
    ref = _numpy_reference(clip_critic, s["probe"], s, dd_mode)
    for name in ("vdc", "ccs", "dd", "sfs"):
        np.testing.assert_allclose(getattr(scores, name), ref[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(scores.cas, ref["cas4"], rtol=0, atol=1e-5)
    assert scores.primitives == ("vdc", "ccs", "dd", "sfs") and scores.note == ""
    # without references: SFS absent, CAS over three primitives, and the scores say so
    no_ref = scorer.score(s["images"], s["prompts"], s["checklists"], s["labels"])
    assert no_ref.sfs is None and no_ref.primitives == ("vdc", "ccs", "dd")
    np.testing.assert_allclose(no_ref.cas, ref["cas3"], rtol=0, atol=1e-5)
    assert "SFS is absent" in no_ref.note


def test_dd_accuracy_mode_averages_to_probe_accuracy(clip_critic, setup):
    s = setup
    scores = CASScorer(clip_critic, s["probe"]).score(s["images"], s["prompts"], s["checklists"], s["labels"])
    with torch.no_grad():
        emb = clip_critic.encode_images(s["images"])
    assert set(np.unique(scores.dd)) <= {0.0, 1.0}
    assert scores.dd.mean() == pytest.approx(s["probe"].accuracy(emb, s["labels"]), abs=1e-12)
    assert scores.predicted == [CLASSES[i] for i in s["probe"].predict(emb).tolist()]


def test_probability_mode_is_softmax_of_true_class(clip_critic, setup):
    s = setup
    scores = CASScorer(clip_critic, s["probe"], dd_mode="probability").score(
        s["images"], s["prompts"], s["checklists"], s["labels"]
    )
    with torch.no_grad():
        emb = clip_critic.encode_images(s["images"])
        probs = torch.softmax(s["probe"](emb), dim=-1)
    y = torch.tensor([CLASSES.index(label) for label in s["labels"]])
    np.testing.assert_allclose(scores.dd, probs[torch.arange(len(y)), y].numpy(), atol=1e-6)


def test_update_compute_streams_and_caches(clip_critic, setup):
    s = setup
    scorer = CASScorer(clip_critic, s["probe"], batch_size=8)
    whole = scorer.score(s["images"], s["prompts"], s["checklists"], s["labels"], references=s["refs"])
    ids = [f"r{i}" for i in range(24)]
    scorer.cache_references(ids, s["refs"])
    calls = clip_critic.image_encoder_calls
    for start in (0, 10):
        stop = start + 10 if start == 0 else 24
        scorer.update(
            s["images"][start:stop],
            s["prompts"][start:stop],
            s["checklists"][start:stop],
            s["labels"][start:stop],
            references=scorer.cached_references(ids[start:stop]),
            ids=ids[start:stop],
        )
    streamed = scorer.compute()
    # cached references are not re-encoded: 2 batches of 10 and 14 images at batch_size 8 -> 2 + 2 calls
    assert clip_critic.image_encoder_calls - calls == 4
    np.testing.assert_allclose(streamed.cas, whole.cas, atol=1e-6)
    assert streamed.ids == ids and len(streamed) == 24
    # scoring the reference images against themselves gives SFS = 1
    self_scores = scorer.score(s["refs"], s["prompts"], s["checklists"], s["labels"], references=s["refs"])
    np.testing.assert_allclose(self_scores.sfs, 1.0, atol=1e-5)
    scorer.reset()
    with pytest.raises(DataError, match="before any update"):
        scorer.compute()


def test_mixing_batches_with_and_without_references_is_an_error(clip_critic, setup):
    s = setup
    scorer = CASScorer(clip_critic, s["probe"])
    scorer.update(s["images"][:4], s["prompts"][:4], s["checklists"][:4], s["labels"][:4], references=s["refs"][:4])
    with pytest.raises(DataError, match="with references and others without"):
        scorer.update(s["images"][4:8], s["prompts"][4:8], s["checklists"][4:8], s["labels"][4:8])


def test_input_errors(clip_critic, setup):
    s = setup
    scorer = CASScorer(clip_critic, s["probe"])
    with pytest.raises(DataError, match=r"mismatched counts: images=24, prompts=23, checklists=24, labels=24"):
        scorer.score(s["images"], s["prompts"][:-1], s["checklists"], s["labels"])
    bad = list(s["labels"])
    bad[5] = "cardiomegaly"
    with pytest.raises(DataError, match=r"labels\[5\] = 'cardiomegaly' is not one of the probe's classes"):
        scorer.score(s["images"], s["prompts"], s["checklists"], bad)
    with pytest.raises(DataError, match="got 3 references for 24 images"):
        scorer.score(s["images"], s["prompts"], s["checklists"], s["labels"], references=s["refs"][:3])
    with pytest.raises(ConfigError, match="dd_mode"):
        CASScorer(clip_critic, s["probe"], dd_mode="logprob")
    other = LinearProbe(clip_critic.embed_dim, CLASSES, critic_name="transformers:some/other-model")
    with pytest.raises(ConfigError, match="not on the evaluator"):
        CASScorer(clip_critic, other)
    with pytest.raises(ConfigError, match="expects 7-d"):
        CASScorer(clip_critic, LinearProbe(7, CLASSES))


def test_to_csv_round_trip(clip_critic, setup, tmp_path):
    s = setup
    scores = CASScorer(clip_critic, s["probe"]).score(
        s["images"], s["prompts"], s["checklists"], s["labels"], ids=[f"img{i}" for i in range(24)]
    )
    path = scores.to_csv(tmp_path / "scores.csv")
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert all(r["cas_primitives"] == "vdc+ccs+dd" for r in rows)
    assert [r["id"] for r in rows] == [f"img{i}" for i in range(24)]
    assert all(r["sfs"] == "" for r in rows)
    np.testing.assert_allclose([float(r["cas"]) for r in rows], scores.cas, atol=1e-12)
    assert isinstance(CASScores.concat([scores, scores]), CASScores)


# ---------------------------------------------------------------------- tail analysis


def test_tail_analysis_matches_numpy():
    rng = np.random.default_rng(0)
    real = rng.normal(0.5, 0.1, 200)
    gen = rng.normal(0.45, 0.12, 300)
    tail = tail_analysis(gen, real, q=0.25, n_boot=500, seed=3)
    tau = np.quantile(real, 0.25)
    assert tail.tau == pytest.approx(tau, abs=1e-12)
    assert tail.frac_below == pytest.approx(np.sum(gen < tau) / gen.size, abs=1e-12)
    assert tail.p10 == pytest.approx(np.percentile(gen, 10), abs=1e-12)
    assert tail.mean == pytest.approx(gen.mean(), abs=1e-12)
    assert (tail.n, tail.n_real, tail.q) == (300, 200, 0.25)
    assert tail_threshold(real, 0.25) == tail.tau and fraction_below(gen, tail.tau) == tail.frac_below
    # real images against their own tau: a fraction close to q (exactly q up to ties/interpolation)
    assert tail_analysis(real, real, n_boot=50).frac_below == pytest.approx(0.25, abs=1 / 200)


def test_bootstrap_cis_contain_estimate_and_are_seed_reproducible():
    rng = np.random.default_rng(1)
    real = rng.normal(0.5, 0.1, 150)
    gen = rng.normal(0.48, 0.1, 150)
    a = tail_analysis(gen, real, n_boot=400, seed=7)
    b = tail_analysis(gen, real, n_boot=400, seed=7)
    c = tail_analysis(gen, real, n_boot=400, seed=8)
    for stat in ("mean", "frac_below", "p10", "tau"):
        lo, hi = getattr(a, f"{stat}_ci")
        assert lo <= getattr(a, stat) <= hi, stat
        assert lo < hi
    assert a == b
    assert a.mean_ci != c.mean_ci
    # a resampled-real interval is at least as wide as a fixed-tau one here (tau uncertainty added)
    fixed = tail_analysis(gen, real, n_boot=400, seed=7, resample_real=False)
    assert np.diff(fixed.frac_below_ci)[0] <= np.diff(a.frac_below_ci)[0] + 1e-12
    # the mean's interval is close to the normal-theory one
    half = 1.96 * gen.std(ddof=1) / np.sqrt(gen.size)
    assert np.diff(a.mean_ci)[0] == pytest.approx(2 * half, rel=0.2)


def test_bootstrap_ci_generic():
    x = np.arange(100, dtype=float)
    lo, hi = bootstrap_ci(lambda s: s.mean(axis=1), [x], n_boot=300, seed=0)
    assert lo < 49.5 < hi
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_ci(lambda s: s.mean(axis=1), [x], n_boot=1)


@pytest.mark.parametrize(
    ("gen", "real", "q", "match"),
    [
        ([], [0.1, 0.2], 0.25, "generated_cas is empty"),
        ([0.1], [0.1, float("nan")], 0.25, "non-finite"),
        ([0.1], [0.1, 0.2], 1.0, "strictly between 0 and 1"),
        ([[0.1]], [0.1, 0.2], 0.25, "1-d array"),
    ],
)
def test_tail_analysis_errors(gen, real, q, match):
    with pytest.raises((DataError, ConfigError), match=match):
        tail_analysis(gen, real, q=q)


@pytest.mark.parametrize("model_dir", ["tiny_siglip_dir", "tiny_open_clip_dir"])
def test_any_critic_can_be_the_evaluator(request, model_dir):
    """Out-of-family evaluators need no new code: the same scorer on a SigLIP and an open_clip critic."""
    from clinalign.critics import load_critic

    critic = load_critic(request.getfixturevalue(model_dir), device="cpu")
    n = 9
    images, refs = _images(n, 4), _images(n, 5)
    labels = [CLASSES[i % 3] for i in range(n)]
    s = {"images": images, "refs": refs, "labels": labels}
    s["prompts"] = [f"x-ray with {label}" for label in labels]
    s["checklists"] = [CHECKLISTS[label] for label in labels]
    with torch.no_grad():
        train = critic.encode_images(_images(30, 6))
    probe = LinearProbe.fit(train, [i % 3 for i in range(30)], CLASSES, epochs=5, critic_name=critic.name)
    scores = CASScorer(critic, probe, dd_mode="probability").score(
        images, s["prompts"], s["checklists"], labels, references=refs
    )
    ref = _numpy_reference(critic, probe, s, "probability")
    np.testing.assert_allclose(scores.cas, ref["cas4"], atol=1e-5)
    assert scores.evaluator == critic.name


def test_public_names():
    import clinalign

    assert clinalign.CASScorer is CASScorer
    from clinalign.scoring import TailAnalysis, tail_analysis

    assert callable(tail_analysis) and TailAnalysis.__name__ == "TailAnalysis"
