"""The evaluation suite's pure functions, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinalign.errors import DataError
from clinalign.evaluation.functional import (
    bradley_terry,
    bradley_terry_ci,
    correlations,
    frechet_distance,
    hamming_distance,
    kernel_inception_distance,
    mean_pairwise_cosine_distance,
    nearest_neighbors,
    pairwise_wins,
    phash,
    silhouette,
    ssim,
    top1_rates,
)


def _fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook FID formula with scipy.linalg.sqrtm (what pytorch-fid does)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_on_identical_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    b = rng.normal(loc=0.3, scale=1.4, size=(150, 16)) @ rng.normal(size=(16, 16)) * 0.5
    assert frechet_distance(a, b) == pytest.approx(_fd_reference(a, b), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # torch input, float32, gives the same number
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        _fd_reference(a, b), rel=1e-5
    )


def test_frechet_distance_stable_when_n_below_d():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(60, 256))
    b = rng.normal(loc=0.1, size=(80, 256))
    value = frechet_distance(a, b)
    # the eigenvalue form agrees with sqrtm on singular covariances (where sqrtm only just copes)
    assert value == pytest.approx(_fd_reference(a, b), rel=1e-6)
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    # a pure mean shift adds exactly ‖Δμ‖²
    shift = np.full(256, 0.5)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(DataError, match="different feature dimensions"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 5)))
    with pytest.raises(DataError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(DataError, match="non-finite"):
        frechet_distance(np.full((4, 3), np.nan), np.zeros((4, 3)))


def _kid_double_loop(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape

    def k(u, v):
        return (float(u @ v) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_equals_direct_double_loop():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5))
    y = rng.normal(loc=0.4, size=(12, 5))
    # one subset of all rows: the estimator is the full-sample unbiased MMD² (row order does not matter)
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=12)
    assert mean == pytest.approx(_kid_double_loop(x, y), rel=1e-10)
    assert std == 0.0
    # subsets average the estimator over random subsets
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=6, seed=3)
    rng3 = np.random.default_rng(3)
    values = []
    for _ in range(20):
        xi = x[rng3.choice(12, 6, replace=False)]
        yi = y[rng3.choice(12, 6, replace=False)]
        values.append(_kid_double_loop(xi, yi))
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)


def test_kid_near_zero_for_same_distribution():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = kernel_inception_distance(x, y, subsets=10, subset_size=200)
    shifted, _ = kernel_inception_distance(x, y + 1.0, subsets=10, subset_size=200)
    assert abs(same) < 0.05 < shifted


def test_silhouette_matches_sklearn_definition_by_hand():
    rng = np.random.default_rng(5)
    shift_a, shift_b = np.array([3.0, 0, 0, 0]), np.array([0, 3.0, 0, 0])
    x = np.concatenate([rng.normal(size=(6, 4)) + shift_a, rng.normal(size=(5, 4)) + shift_b])
    labels = ["a"] * 6 + ["b"] * 5
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    lab = np.array(labels)
    s = []
    for i in range(len(x)):
        same = (lab == lab[i]) & (np.arange(len(x)) != i)
        a = dist[i, same].mean()
        b = dist[i, lab != lab[i]].mean()
        s.append((b - a) / max(a, b))
    assert silhouette(x, labels) == pytest.approx(float(np.mean(s)), abs=1e-10)
    with pytest.raises(DataError, match="classes"):
        silhouette(x, ["a"] * 11)


def test_silhouette_equals_sklearn_across_row_blocks_and_singletons():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    # 2,500 rows cross the 2,048-row block boundary; class "d" is a singleton (its silhouette is 0)
    x = rng.normal(size=(2500, 8)) + np.repeat(np.eye(8)[:3] * 2.0, [1200, 800, 500], axis=0)
    labels = ["a"] * 1200 + ["b"] * 800 + ["c"] * 499 + ["d"]
    expected = metrics.silhouette_score(x, labels, metric="cosine")
    assert silhouette(x, labels) == pytest.approx(expected, abs=1e-9)


def test_nearest_neighbors_blocked_equals_brute_force():
    rng = np.random.default_rng(6)
    q, keys = rng.normal(size=(37, 9)), rng.normal(size=(53, 9))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    dist = 1 - qn @ kn.T
    expected_idx = np.argsort(dist, axis=1)[:, :3]
    idx, d = nearest_neighbors(q, keys, k=3, block_size=8)  # several query and key blocks
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(d, np.take_along_axis(dist, expected_idx, axis=1), atol=1e-5)
    assert idx.shape == (37, 3) and d.shape == (37, 3)
    idx1, d1 = nearest_neighbors(q, keys, k=1, block_size=8)
    np.testing.assert_array_equal(idx1[:, 0], expected_idx[:, 0])
    np.testing.assert_allclose(d1[:, 0], dist.min(axis=1), atol=1e-5)
    with pytest.raises(DataError, match="different dimensions"):
        nearest_neighbors(q, keys[:, :4])


def test_mean_pairwise_cosine_distance_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # pairs: (0,1) 1, (0,2) 2, (1,2) 1 -> mean 4/3
    assert mean_pairwise_cosine_distance(x) == pytest.approx(4 / 3)


def test_pairwise_wins_and_ranking_errors():
    wins = pairwise_wins([[2, 0, 1], [0, 2]], 3)
    expected = np.zeros((3, 3))
    expected[2, 0] = expected[2, 1] = expected[0, 1] = expected[0, 2] = 1
    np.testing.assert_array_equal(wins, expected)
    with pytest.raises(DataError, match=r"ranking 1.*twice"):
        bradley_terry([[0, 1], [1, 1]], 2)
    with pytest.raises(DataError, match="ranking 0"):
        bradley_terry([[0, 5]], 3)


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(7)
    true = np.array([1.0, 0.4, 0.0, -0.3, -1.1])
    true -= true.mean()
    strengths = np.exp(true)
    rankings = []
    for _ in range(3000):
        # Plackett–Luce draws: its pairwise marginals follow Bradley–Terry
        remaining = list(range(5))
        order = []
        while remaining:
            p = strengths[remaining] / strengths[remaining].sum()
            pick = remaining[rng.choice(len(remaining), p=p)]
            order.append(pick)
            remaining.remove(pick)
        rankings.append(order)
    estimated = bradley_terry(rankings, 5)
    np.testing.assert_allclose(estimated, true, atol=0.08)
    assert list(np.argsort(-estimated)) == [0, 1, 2, 3, 4]


def test_bradley_terry_mle_matches_closed_form_for_two_items():
    # two items: MLE of log(s0/s1) = log(wins0/wins1)
    rankings = [[0, 1]] * 7 + [[1, 0]] * 3
    scores = bradley_terry(rankings, 2, prior=0.0)
    assert scores[0] - scores[1] == pytest.approx(np.log(7 / 3), abs=1e-8)


def test_bootstrap_intervals_cover_estimates_and_top1_rates():
    rankings = [[0, 1, 2]] * 6 + [[1, 0, 2]] * 3 + [[2, 1, 0]]
    cases = [i // 2 for i in range(10)]  # two raters per case
    top1 = top1_rates(rankings, 3, groups=cases, n_boot=300, seed=0)
    np.testing.assert_allclose(top1.estimate, [0.6, 0.3, 0.1])
    assert np.all(top1.lower <= top1.estimate) and np.all(top1.estimate <= top1.upper)
    bt = bradley_terry_ci(rankings, 3, groups=cases, n_boot=100, seed=0)
    assert np.all(bt.lower <= bt.estimate + 1e-9) and np.all(bt.estimate <= bt.upper + 1e-9)
    assert bt.estimate[0] > bt.estimate[1] > bt.estimate[2]


def test_correlations_match_scipy_and_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 10.0]
    out = correlations(x, y)
    assert out["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Spearman = Pearson of ranks: ranks of y are [2,1,4,3,5]
    assert out["spearman_rho"] == pytest.approx(np.corrcoef([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])[0, 1])
    assert 0 < out["pearson_p"] < 1


def test_ssim_equals_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(8)
    a = rng.random((3, 3, 40, 33))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    ours = ssim(a, b)
    for i in range(3):
        reference = structural_similarity(
            a[i],
            b[i],
            channel_axis=0,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ours[i] == pytest.approx(reference, abs=1e-6)
    assert ssim(a[0], a[0])[0] == pytest.approx(1.0)
    # one image against many broadcasts
    assert ssim(a[:1], b).shape == (3,)


def test_phash_invariant_to_small_resizes_and_sensitive_to_content():
    from PIL import Image

    rng = np.random.default_rng(9)
    # a smooth image (perceptual hashes describe low frequencies)
    coarse = rng.random((8, 8, 3))
    base = Image.fromarray((coarse * 255).astype(np.uint8)).resize((128, 128), Image.Resampling.BICUBIC)
    h = phash(base)
    for size in (120, 136, 100):
        assert hamming_distance(h, phash(base.resize((size, size), Image.Resampling.BILINEAR))) <= 4
    other = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((128, 128))
    assert hamming_distance(h, phash(other)) > 10
    # float arrays hash like the uint8 image
    assert phash(np.asarray(base) / 255.0) == h
    assert 0 <= h < 2**64


def test_hamming_distance_counts_bits_pairwise():
    a = np.array([0, 0b1011, 2**64 - 1], dtype=np.uint64)
    b = np.array([0b1, 2**63], dtype=np.uint64)
    expected = np.array([[bin(int(x) ^ int(y)).count("1") for y in b] for x in a])
    np.testing.assert_array_equal(hamming_distance(a[:, None], b[None, :]), expected)
