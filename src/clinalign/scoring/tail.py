"""Low-tail analysis of generated CAS against the real test images' CAS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from clinalign.scoring.functional import _as_1d, _check_q, bootstrap_ci


@dataclass(frozen=True)
class TailAnalysis:
    """How much of a generated set falls into the low tail of the real images' CAS.

    Attributes:
        q: the real-CAS quantile that defines τ (paper: 0.25).
        tau: τ, the ``q``-quantile of the real images' CAS.
        frac_below: fraction of generated images with CAS < τ (real images: ``q`` by construction).
        p10: 10th percentile of generated CAS.
        mean: mean generated CAS.
        n: number of generated images.
        n_real: number of real images τ was estimated from.
        mean_ci, frac_below_ci, p10_ci, tau_ci: percentile-bootstrap intervals at ``ci_level``.
        n_boot, seed, ci_level, resample_real: how the intervals were computed. With
            ``resample_real`` the real set is resampled as well, so ``frac_below_ci`` includes the
            uncertainty of τ itself.
    """

    q: float
    tau: float
    frac_below: float
    p10: float
    mean: float
    n: int
    n_real: int
    mean_ci: tuple[float, float]
    frac_below_ci: tuple[float, float]
    p10_ci: tuple[float, float]
    tau_ci: tuple[float, float]
    n_boot: int
    seed: int
    ci_level: float
    resample_real: bool

    # ``frac_below_tau`` reads better in tables and trackers
    @property
    def frac_below_tau(self) -> float:
        return self.frac_below

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        for key in ("mean_ci", "frac_below_ci", "p10_ci", "tau_ci"):
            out[key] = list(out[key])
        return out


def tail_analysis(
    generated_cas: Sequence[float] | np.ndarray | torch.Tensor,
    real_cas: Sequence[float] | np.ndarray | torch.Tensor,
    q: float = 0.25,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    resample_real: bool = True,
) -> TailAnalysis:
    """τ = ``q``-quantile of ``real_cas``; fraction of ``generated_cas`` below τ, P10, mean, n, bootstrap CIs.

    Quantiles use NumPy's default (linear interpolation); "below" is strict (``cas < tau``). The
    confidence intervals are percentile bootstraps with ``n_boot`` resamples, reproducible by ``seed``.
    """
    gen = _as_1d(generated_cas, "generated_cas")
    real = _as_1d(real_cas, "real_cas")
    _check_q(q, "q (the tau quantile)")
    tau = float(np.quantile(real, q))

    def _frac(g: np.ndarray, r: np.ndarray | None = None) -> np.ndarray:
        thresholds = np.quantile(r, q, axis=1)[:, None] if r is not None else tau
        return np.mean(g < thresholds, axis=1)

    common = {"n_boot": n_boot, "seed": seed, "level": ci_level}
    # resampling the real set too puts the uncertainty of tau itself into the fraction's interval
    frac_ci = bootstrap_ci(_frac, [gen, real] if resample_real else [gen], **common)
    return TailAnalysis(
        q=float(q),
        tau=tau,
        frac_below=float(np.mean(gen < tau)),
        p10=float(np.quantile(gen, 0.10)),
        mean=float(gen.mean()),
        n=int(gen.size),
        n_real=int(real.size),
        mean_ci=bootstrap_ci(lambda g: g.mean(axis=1), [gen], **common),
        frac_below_ci=frac_ci,
        p10_ci=bootstrap_ci(lambda g: np.quantile(g, 0.10, axis=1), [gen], **common),
        tau_ci=bootstrap_ci(lambda r: np.quantile(r, q, axis=1), [real], **common),
        n_boot=int(n_boot),
        seed=int(seed),
        ci_level=float(ci_level),
        resample_real=bool(resample_real),
    )


def average_tails(tails: Sequence[TailAnalysis]) -> dict[str, float | int]:
    """Per-seed tail statistics averaged over runs (each run one test set, as in the paper's tables).

    Returns the mean and sample standard deviation (ddof=1; 0 for one run) over runs of
    ``frac_below``, ``p10`` and ``mean``, plus ``n_runs``. Pooling all images of all runs into one
    :func:`tail_analysis` instead weighs runs by their size and hides the spread between seeds.
    """
    if not tails:
        raise ValueError("average_tails needs at least one TailAnalysis")
    out: dict[str, float | int] = {"n_runs": len(tails)}
    for key in ("frac_below", "p10", "mean"):
        values = np.array([getattr(t, key) for t in tails], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out
