"""Pure functions behind the evaluation suite: NumPy or torch in, floats/arrays out.

Distribution distances (:func:`frechet_distance`, :func:`kernel_inception_distance`), class
separability (:func:`silhouette`), nearest-neighbour search (:func:`nearest_neighbors`), preference
aggregation (:func:`bradley_terry`, :func:`top1_rates`, their bootstrap intervals), correlations, and
the image-similarity primitives of the memorization check (:func:`ssim`, :func:`phash`,
:func:`hamming_distance`). The ``clinalign evaluate`` commands and the report code call these.

SciPy and scikit-learn are imported where they are used (the ``eval`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clinalign.errors import ConfigError, DataError, MissingDependencyError

ArrayLike = np.ndarray | torch.Tensor | Sequence[Sequence[float]]


def _require(module: str, package: str, feature: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package, feature, extra="eval") from None


def _features(x: ArrayLike, name: str, *, min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite float64 array [N,D] with at least ``min_rows`` rows."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-d array of features [N, D], got shape {list(array.shape)}.")
    if array.shape[0] < min_rows:
        raise DataError(f"{name} has {array.shape[0]} rows; at least {min_rows} are needed.")
    if array.shape[1] == 0:
        raise DataError(f"{name} has feature dimension 0.")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} contains {int((~np.isfinite(array)).sum())} non-finite values (NaN/inf).")
    return array


def _same_dim(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"{names[0]} and {names[1]} have different feature dimensions ({a.shape[1]} vs {b.shape[1]}); "
            "embed both sets with the same encoder."
        )


# ---------------------------------------------------------------------- distribution distances


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition.

    Round-off makes tiny eigenvalues of a singular covariance slightly negative; they are clipped to 0.
    """
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N_a,D] and [N_b,D].

    ``‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^½ Σ_b Σ_a^½)^½`` (the FID formula, in any encoder's space).

    Numerics (the *eigenvalue form*, no regularisation): ``Σ_a^½`` comes from a symmetric eigendecomposition
    and the trace term is the sum of square roots of the eigenvalues of the symmetric PSD matrix
    ``Σ_a^½ Σ_b Σ_a^½`` (which has the same eigenvalues as ``Σ_a Σ_b``). Both decompositions are of
    symmetric matrices, so there are no complex parts to discard and singular covariances (N < D, e.g.
    300 images in a 1152-d space) need no ``εI`` added: eigenvalues that round-off makes slightly negative
    are clipped to 0. Computed in float64; covariances use the unbiased ``N − 1`` normalisation.
    """
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, ("feats_a", "feats_b"))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])
    cov_b = np.cov(b, rowvar=False).reshape(b.shape[1], b.shape[1])
    sqrt_a = _psd_sqrt(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    # FD is a squared distance; a value like -1e-12 for identical sets is round-off
    return max(value, 0.0)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef: float) -> np.ndarray:
    return (gamma * (x @ y.T) + coef) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD² from kernel matrices of two samples of the same size m (diagonals of K_xx, K_yy excluded)."""
    m = k_xx.shape[0]
    if m < 2 or k_yy.shape[0] != m or k_xy.shape != (m, m):
        raise DataError(f"the unbiased MMD² needs two samples of equal size m >= 2, got {k_xx.shape[0]}.")
    sum_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    sum_yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(sum_xx + sum_yy - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID) between two feature sets: mean and standard deviation over random subsets.

    Each of ``subsets`` draws takes ``m = min(subset_size, N_a, N_b)`` rows of each set without
    replacement and computes the unbiased MMD² with the polynomial kernel
    ``k(x, y) = (γ x·y + coef)^degree``, γ = 1/D by default (``(x·y/D + 1)³``, Bińkowski et al. 2018).
    The std is the population std over subsets (``ddof=0``, as torchmetrics and clean-fid report it).
    """
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, ("feats_a", "feats_b"))
    if subsets < 1:
        raise ConfigError(f"subsets must be at least 1, got {subsets}.")
    if subset_size < 2:
        raise ConfigError(f"subset_size must be at least 2, got {subset_size}.")
    if degree < 1:
        raise ConfigError(f"degree must be at least 1, got {degree}.")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(
            _polynomial_kernel(x, x, degree, gamma, coef),
            _polynomial_kernel(y, y, degree, gamma, coef),
            _polynomial_kernel(x, y, degree, gamma, coef),
        )
    return float(values.mean()), float(values.std())


# ---------------------------------------------------------------------- separability and neighbours


def silhouette(embeddings: ArrayLike, labels: Sequence[Any] | np.ndarray) -> float:
    """Mean silhouette coefficient of ``embeddings`` [N,D] grouped by ``labels``, cosine distance.

    The definition of scikit-learn's ``silhouette_score(metric="cosine")``, computed without it.

    In [-1, 1]; higher means the classes form tighter, better separated clusters.
    """
    x = _features(embeddings, "embeddings", min_rows=2)
    labels = np.asarray([str(v) for v in labels])
    if labels.shape[0] != x.shape[0]:
        raise DataError(f"embeddings has {x.shape[0]} rows but labels has {labels.shape[0]} entries.")
    n_classes = len(set(labels.tolist()))
    if not 2 <= n_classes <= x.shape[0] - 1:
        raise DataError(
            f"the silhouette needs between 2 and N-1 classes; got {n_classes} classes for {x.shape[0]} embeddings."
        )
    # computed here rather than with scikit-learn so the quickstart needs no optional extra; same definition
    # as sklearn.metrics.silhouette_score(metric="cosine") (distances clipped to [0, 2], singletons score 0),
    # in row blocks so memory stays at one [block, N] distance matrix
    unit = x.astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    classes, index = np.unique(labels, return_inverse=True)
    onehot = np.zeros((x.shape[0], len(classes)))
    onehot[np.arange(x.shape[0]), index] = 1.0
    counts = onehot.sum(axis=0)
    scores = np.empty(x.shape[0])
    for start in range(0, x.shape[0], 2048):
        rows = slice(start, start + 2048)
        dist = np.clip(1.0 - unit[rows] @ unit.T, 0.0, 2.0)
        dist[np.arange(dist.shape[0]), np.arange(start, start + dist.shape[0])] = 0.0
        sums = dist @ onehot  # [block, C]: summed distance to each class
        own = index[rows]
        own_count = counts[own]
        a = sums[np.arange(dist.shape[0]), own] / np.maximum(own_count - 1, 1)
        means = sums / counts
        means[np.arange(dist.shape[0]), own] = np.inf
        b = means.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (b - a) / np.maximum(a, b)
        scores[rows] = np.where(own_count > 1, np.nan_to_num(s), 0.0)
    return float(scores.mean())


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    tensor = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-d array [N, D], got shape {list(tensor.shape)}.")
    return tensor.float()


@torch.no_grad()
def nearest_neighbors(
    queries: ArrayLike,
    keys: ArrayLike,
    k: int = 1,
    *,
    block_size: int = 4096,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys of every query by cosine distance: (indices int64 [N,k], distances float32 [N,k]).

    Rows are L2-normalised, then blocks of ``block_size`` queries × ``block_size`` keys are one matrix
    product each; a running top-k is merged across key blocks, so memory stays at one block of scores.
    Distances are ``1 − cosine`` sorted ascending (nearest first).
    """
    q = _as_tensor(queries, "queries")
    keys_t = _as_tensor(keys, "keys")
    if q.shape[1] != keys_t.shape[1]:
        raise DataError(
            f"queries and keys have different dimensions ({q.shape[1]} vs {keys_t.shape[1]}); "
            "embed both with the same encoder."
        )
    if not 1 <= k <= keys_t.shape[0]:
        raise ConfigError(f"k must be between 1 and the number of keys ({keys_t.shape[0]}), got {k}.")
    if block_size < 1:
        raise ConfigError(f"block_size must be at least 1, got {block_size}.")
    device = torch.device(device) if device is not None else q.device
    q = torch.nn.functional.normalize(q.to(device), dim=1)
    keys_t = torch.nn.functional.normalize(keys_t.to(device), dim=1)
    all_idx, all_sim = [], []
    for qs in range(0, q.shape[0], block_size):
        q_block = q[qs : qs + block_size]
        best_sim = torch.full((q_block.shape[0], 0), float("-inf"), device=device)
        best_idx = torch.zeros((q_block.shape[0], 0), dtype=torch.long, device=device)
        for ks in range(0, keys_t.shape[0], block_size):
            sims = q_block @ keys_t[ks : ks + block_size].T
            if k == 1:  # max is a single pass; topk sorts
                top_sim, top_idx = sims.max(dim=1, keepdim=True)
            else:
                top_sim, top_idx = sims.topk(min(k, sims.shape[1]), dim=1)
            merged_sim = torch.cat([best_sim, top_sim], dim=1)
            merged_idx = torch.cat([best_idx, top_idx + ks], dim=1)
            best_sim, order = merged_sim.topk(min(k, merged_sim.shape[1]), dim=1)
            best_idx = merged_idx.gather(1, order)
        all_idx.append(best_idx.cpu())
        all_sim.append(best_sim.cpu())
    sims = torch.cat(all_sim)
    return torch.cat(all_idx).numpy().astype(np.int64), (1.0 - sims).clamp_min(0.0).numpy().astype(np.float32)


def mean_pairwise_cosine_distance(embeddings: ArrayLike) -> float:
    """Mean of ``1 − cos(e_i, e_j)`` over all unordered pairs i < j of ``embeddings`` [N,D] (N >= 2)."""
    x = _as_tensor(embeddings, "embeddings")
    if x.shape[0] < 2:
        raise DataError(f"mean pairwise distance needs at least 2 embeddings, got {x.shape[0]}.")
    x = torch.nn.functional.normalize(x.double(), dim=1)
    sims = x @ x.T
    n = x.shape[0]
    off_diagonal = sims.sum() - sims.diagonal().sum()
    return float(1.0 - off_diagonal / (n * (n - 1)))


# ---------------------------------------------------------------------- preferences


def _check_rankings(rankings: Sequence[Sequence[int]], n_items: int) -> list[np.ndarray]:
    if n_items < 2:
        raise ConfigError(f"n_items must be at least 2, got {n_items}.")
    checked = []
    for r, ranking in enumerate(rankings):
        order = np.asarray(list(ranking), dtype=np.int64)
        if order.ndim != 1 or order.size < 2:
            raise DataError(f"ranking {r}: a ranking orders at least 2 items, got {list(ranking)}.")
        if order.min() < 0 or order.max() >= n_items:
            raise DataError(f"ranking {r}: item indices must be in [0, {n_items - 1}], got {order.tolist()}.")
        if np.unique(order).size != order.size:
            raise DataError(f"ranking {r}: {order.tolist()} lists an item twice; rankings must be strict orders.")
        checked.append(order)
    if not checked:
        raise DataError("no rankings given.")
    return checked


def pairwise_wins(rankings: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    """Win matrix ``W[i, j]`` = how often item i is ranked above item j; each ranking (best first)
    contributes every pair it orders."""
    wins = np.zeros((n_items, n_items), dtype=np.float64)
    for order in _check_rankings(rankings, n_items):
        for pos, winner in enumerate(order[:-1]):
            wins[winner, order[pos + 1 :]] += 1.0
    return wins


def _bt_from_wins(wins: np.ndarray, *, prior: float, max_iter: int, tol: float) -> np.ndarray:
    n = wins.shape[0]
    wins = wins + prior * (1.0 - np.eye(n))
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    if np.any(total_wins <= 0):
        never = np.flatnonzero(total_wins <= 0).tolist()
        raise DataError(
            f"items {never} never win a comparison, so their Bradley–Terry strength is -inf; use prior > 0."
        )
    strength = np.ones(n)
    for _ in range(max_iter):
        denom = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = total_wins / denom
        updated /= np.exp(np.log(updated).mean())
        if np.max(np.abs(np.log(updated) - np.log(strength))) < tol:
            strength = updated
            break
        strength = updated
    log_strength = np.log(strength)
    return log_strength - log_strength.mean()


def bradley_terry(
    rankings: Sequence[Sequence[int]],
    n_items: int,
    *,
    prior: float = 0.1,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> np.ndarray:
    """Bradley–Terry log-strengths [n_items] (higher = preferred, centred to mean 0) from strict rankings.

    Each ranking lists item indices best first (it may order a subset of the items) and is expanded into
    its pairwise wins; ``P(i beats j) = s_i / (s_i + s_j)``. Fitted by maximum likelihood with Hunter's
    (2004) MM iterations. ``prior`` adds that many virtual wins each way to every pair, which keeps an
    item that never wins (or never loses) finite; it shrinks the estimates towards 0 by a negligible
    amount once pairs have been compared a few times. ``prior=0`` gives the plain MLE.
    """
    if prior < 0:
        raise ConfigError(f"prior must be >= 0, got {prior}.")
    return _bt_from_wins(pairwise_wins(rankings, n_items), prior=prior, max_iter=max_iter, tol=tol)


def _group_indices(n: int, groups: Sequence[Any] | None) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    if len(groups) != n:
        raise DataError(f"groups has {len(groups)} entries for {n} rankings.")
    index: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.array(v) for v in index.values()]


@dataclass
class EstimateWithCI:
    """Per-item estimates with a percentile bootstrap interval (arrays [n_items])."""

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate.tolist(),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "level": self.level,
            "n_boot": self.n_boot,
        }


def _bootstrap_items(
    statistic: Any,
    rankings: list[np.ndarray],
    groups: Sequence[Any] | None,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> tuple[np.ndarray, np.ndarray]:
    if n_boot < 2:
        raise ConfigError(f"n_boot must be at least 2, got {n_boot}.")
    if not 0 < level < 1:
        raise ConfigError(f"level must be strictly between 0 and 1, got {level}.")
    clusters = _group_indices(len(rankings), groups)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(clusters), size=len(clusters))
        draws.append(statistic([rankings[i] for c in chosen for i in clusters[c]]))
    values = np.stack(draws)
    alpha = (1.0 - level) / 2.0
    return np.quantile(values, alpha, axis=0), np.quantile(values, 1.0 - alpha, axis=0)


def bradley_terry_ci(
    rankings: Sequence[Sequence[int]],
    n_items: int,
    *,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    prior: float = 0.1,
) -> EstimateWithCI:
    """:func:`bradley_terry` with a percentile bootstrap CI, resampling whole ``groups`` (cases) with
    replacement (each case keeps all its raters' rankings); without ``groups`` each ranking is a case."""
    checked = _check_rankings(rankings, n_items)

    def fit(sample: list[np.ndarray]) -> np.ndarray:
        return _bt_from_wins(pairwise_wins(sample, n_items), prior=prior, max_iter=2000, tol=1e-8)

    lower, upper = _bootstrap_items(fit, checked, groups, n_boot=n_boot, seed=seed, level=level)
    return EstimateWithCI(bradley_terry(checked, n_items, prior=prior), lower, upper, level, n_boot)


def top1_rates(
    rankings: Sequence[Sequence[int]],
    n_items: int,
    *,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> EstimateWithCI:
    """Fraction of rankings that put each item first, with a percentile bootstrap CI over cases (``groups``)."""
    checked = _check_rankings(rankings, n_items)

    def rates(sample: list[np.ndarray]) -> np.ndarray:
        firsts = np.bincount([int(r[0]) for r in sample], minlength=n_items)
        return firsts / len(sample)

    lower, upper = _bootstrap_items(rates, checked, groups, n_boot=n_boot, seed=seed, level=level)
    return EstimateWithCI(rates(checked), lower, upper, level, n_boot)


def correlations(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Pearson r and Spearman ρ between two paired sequences, with two-sided p-values (SciPy)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DataError(
            f"correlations need two 1-d sequences of equal length, got {list(a.shape)} and {list(b.shape)}."
        )
    if a.size < 3:
        raise DataError(f"correlations need at least 3 pairs, got {a.size}.")
    stats = _require("scipy.stats", "scipy", "Pearson/Spearman correlations")
    pearson = stats.pearsonr(a, b)
    spearman = stats.spearmanr(a, b)
    return {
        "n": int(a.size),
        "pearson_r": float(pearson[0]),
        "pearson_p": float(pearson[1]),
        "spearman_rho": float(spearman[0]),
        "spearman_p": float(spearman[1]),
    }


# ---------------------------------------------------------------------- image similarity


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    window = torch.exp(-0.5 * (coords / sigma) ** 2)
    return window / window.sum()


def _images(x: ArrayLike, name: str) -> torch.Tensor:
    tensor = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4:
        raise DataError(f"{name} must be images [N,C,H,W], [C,H,W] or [H,W], got shape {list(tensor.shape)}.")
    return tensor.double() if tensor.dtype == torch.float64 else tensor.float()


def ssim(
    images_a: ArrayLike,
    images_b: ArrayLike,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> np.ndarray:
    """Structural similarity per image pair: images [N,C,H,W] (or [C,H,W], [H,W]) -> float [N].

    Wang et al. (2004) with a Gaussian window (``window_size`` 11, σ 1.5), K1 = 0.01, K2 = 0.03,
    population (not sample) statistics, the SSIM map averaged over the positions where the window fits
    entirely inside the image, then over channels; the same definition as scikit-image's
    ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)``. ``images_b`` broadcasts against ``images_a`` along N (e.g. one image vs many).
    """
    a = _images(images_a, "images_a")
    b = _images(images_b, "images_b").to(a.dtype)
    if a.shape[1:] != b.shape[1:]:
        raise DataError(f"SSIM compares images of the same shape, got {list(a.shape[1:])} and {list(b.shape[1:])}.")
    if min(a.shape[-2:]) < window_size:
        raise DataError(f"images of size {list(a.shape[-2:])} are smaller than the SSIM window ({window_size}).")
    a, b = torch.broadcast_tensors(a, b)
    n, c, h, w = a.shape
    window = _gaussian_window(window_size, sigma, a.dtype).to(a.device)
    # stack x, y, x², y², xy as channels and filter them all with one separable depthwise convolution
    stacked = torch.cat([a, b, a * a, b * b, a * b], dim=1).reshape(n, 5 * c, h, w)
    kernel_h = window.view(1, 1, 1, -1).expand(5 * c, 1, 1, window_size)
    kernel_v = window.view(1, 1, -1, 1).expand(5 * c, 1, window_size, 1)
    filtered = torch.nn.functional.conv2d(stacked, kernel_h, groups=5 * c)
    filtered = torch.nn.functional.conv2d(filtered, kernel_v, groups=5 * c)
    mu_a, mu_b, e_aa, e_bb, e_ab = filtered.split(c, dim=1)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3)).cpu().numpy()


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal-free DCT-II basis ``C[k, i] = cos(π (2i + 1) k / 2n)`` (the scale does not change the hash)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT32 = _dct_matrix(32)


def phash(image: Any) -> int:
    """64-bit perceptual hash (DCT pHash) of one image (PIL image, or array [H,W] / [H,W,3] in [0,1] or uint8).

    Grayscale, resized to 32×32 (Lanczos), 2-D DCT-II, the 8×8 lowest frequencies compared with their
    median: bit = coefficient > median, row-major, first bit most significant (the imagehash layout).
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        image = Image.fromarray(array)
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8]
    bits = (low > np.median(low)).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_distance(hashes_a: Any, hashes_b: Any) -> np.ndarray:
    """Number of differing bits between 64-bit hashes, broadcasting (``a[:, None], b[None, :]`` gives [N,M])."""
    a = np.asarray(hashes_a, dtype=np.uint64)
    b = np.asarray(hashes_b, dtype=np.uint64)
    xor = np.bitwise_xor(a, b)
    as_bytes = xor[..., None].view(np.uint8)
    return _POPCOUNT8[as_bytes].sum(axis=-1, dtype=np.int64)
