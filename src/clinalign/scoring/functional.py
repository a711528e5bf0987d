"""Pure functions behind CAS: primitives from embeddings, their mean, tail statistics, bootstrap.

Everything here works on tensors or arrays already computed; the stateful :class:`CASScorer` and the
report code call these. Embeddings are expected L2-normalised (critics return unit vectors), but the
cosines normalise again so raw features work too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from clinalign.errors import ConfigError, DataError

PRIMITIVES: tuple[str, ...] = ("vdc", "ccs", "dd", "sfs")
DD_MODES: tuple[str, ...] = ("accuracy", "probability")


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of [N,D] and [N,D] -> float32 [N]."""
    if a.shape != b.shape:
        raise DataError(f"cannot compare embeddings of shapes {list(a.shape)} and {list(b.shape)} row by row.")
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float().to(a.device), dim=-1)
    return (a * b).sum(dim=-1)


def dd_scores(log_probs: torch.Tensor, labels: torch.Tensor, *, mode: str = "accuracy") -> torch.Tensor:
    """Per-image DD at evaluation from probe log-probabilities [N,C] and class indices [N] -> float32 [N].

    ``"accuracy"``: 1 when the probe's top class is the label, else 0 (the mean is the probe's accuracy).
    ``"probability"``: the softmax probability of the label.
    """
    if mode not in DD_MODES:
        raise ConfigError(f"dd_mode must be one of {list(DD_MODES)}, got {mode!r}.")
    labels = labels.to(log_probs.device).long()
    if mode == "accuracy":
        return (log_probs.argmax(dim=-1) == labels).float()
    return log_probs.gather(1, labels.view(-1, 1)).squeeze(1).exp().float()


def cas_from_primitives(primitives: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """CAS per image: the unweighted mean of the primitives that are present (``None`` entries skipped)."""
    present = [np.asarray(v, dtype=np.float64) for v in primitives.values() if v is not None]
    if not present:
        raise DataError("CAS needs at least one primitive; all were None.")
    return np.mean(np.stack(present), axis=0)


def _as_1d(values: Sequence[float] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(f"{name} must be a 1-d array of per-image scores, got shape {list(array.shape)}.")
    if array.size == 0:
        raise DataError(f"{name} is empty; there are no scores to analyse.")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} contains {int((~np.isfinite(array)).sum())} non-finite values (NaN/inf).")
    return array


def _check_q(q: float, name: str) -> None:
    if not 0.0 < q < 1.0:
        raise ConfigError(f"{name} must be strictly between 0 and 1, got {q}.")


def tail_threshold(real_cas: np.ndarray, q: float = 0.25) -> float:
    """τ: the ``q``-quantile of the real images' CAS (NumPy's default linear interpolation)."""
    _check_q(q, "q")
    return float(np.quantile(_as_1d(real_cas, "real_cas"), q))


def fraction_below(values: np.ndarray, tau: float) -> float:
    """Fraction of ``values`` strictly below ``tau``."""
    return float(np.mean(_as_1d(values, "values") < tau))


_BOOTSTRAP_VALUES = 1 << 22


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    samples: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 200,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic of one or more independent samples.

    Each sample is resampled with replacement, independently, ``n_boot`` times. ``statistic`` gets
    the resampled arrays stacked as ``[b, n_k]`` (one per sample, in order) and returns ``[b]``, so
    the whole bootstrap is vectorised; ``chunk`` resamples at a time, fewer when the samples are large
    (at most ~4M drawn values per step), bounds memory. Reproducible for a given ``seed``.
    """
    if n_boot < 2:
        raise ConfigError(f"n_boot must be at least 2, got {n_boot}.")
    _check_q(level, "level")
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    values = np.empty(n_boot, dtype=np.float64)
    # memory of one step is b x (total sample size): large sets take fewer resamples per step
    chunk = max(1, min(chunk, _BOOTSTRAP_VALUES // max(1, sum(a.size for a in arrays))))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = [a[rng.integers(0, a.size, size=(b, a.size))] for a in arrays]
        values[start : start + b] = statistic(*draws)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
