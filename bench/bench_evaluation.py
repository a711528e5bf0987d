"""Evaluation-suite speed as ratios to the bare operation each one is built on, measured side by side.

- Nearest-neighbour search, 10k queries × 10k keys × 768-d: ``nearest_neighbors`` (normalise, blocked
  matrix products with a running top-k, cosine distances out) against one bare ``torch.mm`` of the same
  normalised matrices (the product alone, no top-k). Goal: a few seconds on a CPU, ratio close to 1.
- Fréchet distance at 10k × 1152-d: ``frechet_distance`` (means, covariances, eigenvalue form) against the
  textbook formula with ``scipy.linalg.sqrtm(Σ_a Σ_b)`` (what pytorch-fid does) on the same features; the two
  values are printed too, so the agreement is checked in the same run.

Timing takes the best of ``--repeats`` runs per side, alternating sides, since the machine is shared.

    python bench/bench_evaluation.py
    python bench/bench_evaluation.py --n 4000 --dim 512 --fd-n 4000 --fd-dim 768
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from clinalign.evaluation.functional import frechet_distance, nearest_neighbors


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _fd_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="NN queries and keys")
    parser.add_argument("--dim", type=int, default=768, help="NN embedding dimension")
    parser.add_argument("--k", type=int, default=1, help="neighbours per query")
    parser.add_argument("--fd-n", type=int, default=10_000, help="FD rows per set")
    parser.add_argument("--fd-dim", type=int, default=1152, help="FD feature dimension")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    queries = torch.from_numpy(rng.standard_normal((args.n, args.dim), dtype=np.float32))
    keys = torch.from_numpy(rng.standard_normal((args.n, args.dim), dtype=np.float32))
    qn = torch.nn.functional.normalize(queries, dim=1)
    kn = torch.nn.functional.normalize(keys, dim=1)
    ours, bare = [], []
    for _ in range(args.repeats):
        bare.append(_time(lambda: torch.mm(qn, kn.T))[0])
        ours.append(_time(lambda: nearest_neighbors(queries, keys, k=args.k))[0])
    t_ours, t_bare = min(ours), min(bare)
    print(f"NN search {args.n} x {args.n} x {args.dim} (k={args.k}), {args.threads} threads")
    print(f"  bare torch.mm (normalised inputs): {t_bare:.3f} s")
    print(f"  nearest_neighbors:                 {t_ours:.3f} s")
    print(f"  ratio nearest_neighbors / torch.mm: {t_ours / t_bare:.2f}")

    a = rng.standard_normal((args.fd_n, args.fd_dim))
    b = rng.standard_normal((args.fd_n, args.fd_dim)) * 1.1 + 0.05
    ours, ref = [], []
    value_ours = value_ref = float("nan")
    for _ in range(args.repeats):
        t, value_ref = _time(lambda: _fd_sqrtm(a, b))
        ref.append(t)
        t, value_ours = _time(lambda: frechet_distance(a, b))
        ours.append(t)
    t_ours, t_ref = min(ours), min(ref)
    print(f"Frechet distance {args.fd_n} x {args.fd_dim} (float64)")
    print(f"  scipy.linalg.sqrtm reference: {t_ref:.3f} s  (FD = {value_ref:.6f})")
    print(f"  frechet_distance:             {t_ours:.3f} s  (FD = {value_ours:.6f})")
    print(f"  ratio frechet_distance / sqrtm reference: {t_ours / t_ref:.2f}")
    print(f"  relative difference of the values: {abs(value_ours - value_ref) / abs(value_ref):.2e}")


if __name__ == "__main__":
    main()
