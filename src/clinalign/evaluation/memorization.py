"""``memorization``: does a method reproduce its training images?

For every generated image (the CRAFT paper's protocol):

- the nearest training image by SSIM and by 64-bit DCT pHash; an image is flagged when SSIM > 0.95 or the
  Hamming distance ≤ 5 (counts per method, whether any image is flagged, the maximum SSIM);
- with an independent encoder, the cosine distance to the nearest training image (``d_train``) and to the
  nearest held-out test image (``d_test``): a generator that copies its training data sits closer to
  train than to test (Δ = mean d_test − mean d_train > 0). The encoder defaults to DINOv2
  (``facebook/dinov2-small`` through transformers, see :mod:`clinalign.evaluation.encoders`); any hub
  id or local folder of a vision backbone, or any critic, works; ``"none"`` skips this part. It runs when
  the held-out test set (``real``) is given.

Search strategy. The pHash nearest neighbour is exact (Hamming distances to every training hash,
vectorised). SSIM against every training image costs N × M windowed filters, so by default it runs in
two stages: a **prefilter** keeps, per generated image, the ``top_k`` training images closest by pHash
and the ``top_k`` closest by Pearson correlation of ``prefilter_size``² grayscale thumbnails (one
blocked matrix product), then exact SSIM at ``ssim_size`` runs on that union only. A copy, or a near
copy, of a training image is always among those candidates. ``mode="exact"`` computes SSIM against
every training image instead, batched on the chosen device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from clinalign.errors import DataError
from clinalign.evaluation.common import CheckResult, SetsConfig, figure, save_figure, write_result, write_rows
from clinalign.evaluation.encoders import DEFAULT_ENCODER, load_encoder
from clinalign.evaluation.functional import hamming_distance, nearest_neighbors, phash, ssim
from clinalign.evaluation.inputs import embed_paths, read_methods, read_real_images


class MemorizationConfig(SetsConfig):
    """Settings of ``clinalign evaluate memorization`` (``real`` is the held-out test set, for d_test)."""

    train: str = Field(description="Training image manifest (CSV/TSV/JSONL with an image column).")
    train_split: str | None = Field(None, description="Only use training-manifest rows with this split.")
    train_image_root: str | None = Field(None, description="Folder relative training image paths resolve against.")
    encoder: str | None = Field(
        DEFAULT_ENCODER,
        description="Independent encoder for d_train/d_test: a hub id or folder of DINOv2 (default "
        f"{DEFAULT_ENCODER}) or another vision backbone, or any critic; 'none' (or null) skips that part, "
        "which also needs the held-out test set (real).",
    )
    ssim_threshold: float = Field(0.95, description="Flag an image whose nearest-train SSIM is above this.")
    hamming_threshold: int = Field(5, ge=0, le=64, description="Flag an image whose nearest pHash is within this.")
    mode: Literal["prefilter", "exact"] = Field(
        "prefilter", description="prefilter: exact SSIM on top-k candidates; exact: SSIM against every train image."
    )
    top_k: int = Field(16, ge=1, description="Prefilter candidates per criterion (pHash and thumbnail correlation).")
    prefilter_size: int = Field(32, ge=8, description="Thumbnail side of the prefilter (grayscale).")
    ssim_size: int | None = Field(
        None, ge=11, description="Side both images are resized to for SSIM (default: the generated images' size)."
    )
    match_sizes: bool = Field(
        True,
        description="d_train searches a random subset of the training embeddings as large as the test set (nearest "
        "distances shrink as a set grows, so unequal sizes alone would make d_train < d_test).",
    )
    seed: int = Field(0, description="Seed of the size-matching subset.")


@dataclass
class _Images:
    pixels: torch.Tensor  # uint8 [N,3,s,s]
    thumbs: torch.Tensor  # float [N, prefilter_size²], mean-centred per image
    hashes: np.ndarray  # uint64 [N]


def _load(paths: list[Path], size: int, thumb: int) -> _Images:
    from PIL import Image

    from clinalign.data.images import load_image, pil_to_tensor

    pixels, thumbs, hashes = [], [], []
    for path in paths:
        image = load_image(path)
        hashes.append(phash(image))
        pixels.append((pil_to_tensor(image, size) * 255.0 + 0.5).to(torch.uint8))
        small = np.asarray(image.convert("L").resize((thumb, thumb), Image.Resampling.BILINEAR), dtype=np.float32)
        small = small.flatten() - small.mean()
        thumbs.append(torch.from_numpy(small))
    return _Images(torch.stack(pixels), torch.stack(thumbs), np.array(hashes, dtype=np.uint64))


def _as_float(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    return pixels.to(device).float() / 255.0


def nearest_by_ssim(
    generated: torch.Tensor,
    train: torch.Tensor,
    candidates: np.ndarray | None,
    *,
    device: torch.device,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Max SSIM and its train index per generated image (uint8 images [N,3,s,s], [M,3,s,s]).

    ``candidates`` [N,K] restricts the search per image (prefilter); ``None`` searches every train image.
    """
    best = np.full(generated.shape[0], -np.inf)
    best_idx = np.zeros(generated.shape[0], dtype=np.int64)
    for i in range(generated.shape[0]):
        query = _as_float(generated[i : i + 1], device)
        pool = np.arange(train.shape[0]) if candidates is None else np.unique(candidates[i])
        for start in range(0, pool.size, chunk):
            idx = pool[start : start + chunk]
            values = ssim(query, _as_float(train[torch.from_numpy(idx)], device))
            j = int(np.argmax(values))
            if values[j] > best[i]:
                best[i], best_idx[i] = float(values[j]), int(idx[j])
    return best, best_idx


def evaluate_memorization(config: MemorizationConfig, *, encoder: Any = None, progress: bool = False) -> CheckResult:
    """Nearest training image by SSIM and pHash per generated image, and encoder d_train vs d_test;
    writes memorization.csv (per method), memorization_per_image.csv, memorization.json and memorization.png."""
    from tqdm.auto import tqdm

    methods = read_methods(config.methods)
    train = read_real_images(config.train, split=config.train_split, image_root=config.train_image_root, what="--train")
    test = (
        read_real_images(config.real, split=config.real_split, image_root=config.image_root)
        if config.real is not None
        else None
    )
    encoder_name = None if config.encoder in (None, "", "none") else config.encoder
    if test is None and (encoder is not None or (encoder_name is not None and "encoder" in config.model_fields_set)):
        raise DataError("the encoder comparison (d_train vs d_test) needs the held-out test set: pass --real.")
    device = torch.device(config.device) if config.device else torch.device("cpu")
    first = methods[next(iter(methods))].paths[0]
    if config.ssim_size is not None:
        size = config.ssim_size
    else:
        from clinalign.data.images import load_image

        size = max(11, min(load_image(first).size))
    train_images = _load(train.paths, size, config.prefilter_size)
    if encoder is None and encoder_name is not None and test is not None:
        encoder = load_encoder(encoder_name, device=config.device, dtype=config.dtype)
    train_emb = test_emb = None
    if encoder is not None and test is not None:
        train_emb = embed_paths(encoder, train.paths, batch_size=config.batch_size, progress=progress)
        test_emb = embed_paths(encoder, test.paths, batch_size=config.batch_size, progress=progress)
        if config.match_sizes and train_emb.shape[0] > test_emb.shape[0]:
            keep = np.random.default_rng(config.seed).choice(train_emb.shape[0], test_emb.shape[0], replace=False)
            train_emb = train_emb[torch.from_numpy(np.sort(keep))]

    per_image: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for method, group in tqdm(methods.items(), desc="memorization", disable=not progress):
        gen = _load(group.paths, size, config.prefilter_size)
        hamming = hamming_distance(gen.hashes[:, None], train_images.hashes[None, :])
        phash_idx = hamming.argmin(axis=1)
        phash_min = hamming[np.arange(len(group)), phash_idx]
        candidates = None
        if config.mode == "prefilter":
            k = min(config.top_k, len(train))
            by_hash = np.argsort(hamming, axis=1, kind="stable")[:, :k]
            by_pixels, _ = nearest_neighbors(gen.thumbs, train_images.thumbs, k=k, device=device)
            candidates = np.concatenate([by_hash, by_pixels], axis=1)
        ssim_max, ssim_idx = nearest_by_ssim(gen.pixels, train_images.pixels, candidates, device=device)
        d_train = d_test = None
        if train_emb is not None and test_emb is not None:
            emb = embed_paths(encoder, group.paths, batch_size=config.batch_size, progress=progress)
            d_train = nearest_neighbors(emb, train_emb, k=1, device=device)[1][:, 0]
            d_test = nearest_neighbors(emb, test_emb, k=1, device=device)[1][:, 0]
        flag_ssim = ssim_max > config.ssim_threshold
        flag_phash = phash_min <= config.hamming_threshold
        for i in range(len(group)):
            per_image.append(
                {
                    "method": method,
                    "id": group.ids[i],
                    "source": group.sources[i],
                    "nearest_ssim": float(ssim_max[i]),
                    "nearest_ssim_train_id": train.ids[int(ssim_idx[i])],
                    "nearest_phash_hamming": int(phash_min[i]),
                    "nearest_phash_train_id": train.ids[int(phash_idx[i])],
                    "flag_ssim": int(flag_ssim[i]),
                    "flag_phash": int(flag_phash[i]),
                    "d_train": None if d_train is None else float(d_train[i]),
                    "d_test": None if d_test is None else float(d_test[i]),
                }
            )
        row: dict[str, Any] = {
            "method": method,
            "n": len(group),
            "n_flag_ssim": int(flag_ssim.sum()),
            "n_flag_phash": int(flag_phash.sum()),
            "n_flagged": int((flag_ssim | flag_phash).sum()),
            "any_flagged": bool((flag_ssim | flag_phash).any()),
            "max_ssim": float(ssim_max.max()),
            "min_phash_hamming": int(phash_min.min()),
            "mean_d_train": None if d_train is None else float(d_train.mean()),
            "mean_d_test": None if d_test is None else float(d_test.mean()),
            "delta_d": None if d_train is None else float(d_test.mean() - d_train.mean()),
            "frac_closer_to_train": None if d_train is None else float(np.mean(d_train < d_test)),
        }
        rows.append(row)
    summary = {
        "definition": (
            f"flag = nearest-train SSIM > {config.ssim_threshold} or nearest pHash Hamming <= "
            f"{config.hamming_threshold}; SSIM at {size}x{size}, data range 1, Gaussian window 11, sigma 1.5; "
            "d_train/d_test = encoder cosine distance to the nearest train/test image, delta_d = d_test - d_train"
            + (
                "; d_train searches a random training subset of the test set's size"
                if config.match_sizes and test is not None and len(train) > len(test)
                else ""
            )
        ),
        "search": (
            "exact: SSIM against every training image"
            if config.mode == "exact"
            else f"prefilter: exact SSIM on the union of the top-{config.top_k} training images by pHash and by "
            f"{config.prefilter_size}x{config.prefilter_size} grayscale thumbnail correlation"
        ),
        "train": {"source": str(train.source), "n": len(train)},
        "test": None if test is None else {"source": str(test.source), "n": len(test)},
        "encoder": None if train_emb is None else getattr(encoder, "name", encoder_name),
        "results": rows,
    }
    out = Path(config.out)
    result = write_result(CheckResult("memorization", rows, summary, out), config)
    result.files["per_image_csv"] = write_rows(out / "memorization_per_image.csv", per_image)
    result.files["png"] = _plot(per_image, config, out / "memorization.png")
    return result


def _plot(per_image: list[dict[str, Any]], config: MemorizationConfig, path: Path) -> Path:
    methods = list(dict.fromkeys(r["method"] for r in per_image))
    with_encoder = per_image[0]["d_train"] is not None
    fig = figure(9.0 if with_encoder else 5.0, 3.4)
    ax = fig.add_subplot(1, 2 if with_encoder else 1, 1)
    for m in methods:
        ax.hist([r["nearest_ssim"] for r in per_image if r["method"] == m], bins=30, alpha=0.5, label=m)
    ax.axvline(config.ssim_threshold, color="red", linestyle="--", label=f"flag > {config.ssim_threshold}")
    ax.set_xlabel("SSIM to the nearest training image")
    ax.set_ylabel("generated images")
    ax.legend(fontsize=7)
    if with_encoder:
        ax = fig.add_subplot(1, 2, 2)
        for m in methods:
            rows = [r for r in per_image if r["method"] == m]
            ax.scatter([r["d_test"] for r in rows], [r["d_train"] for r in rows], s=6, alpha=0.6, label=m)
        low = min(min(r["d_train"], r["d_test"]) for r in per_image)
        high = max(max(r["d_train"], r["d_test"]) for r in per_image)
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_xlabel("d_test (nearest held-out test image)")
        ax.set_ylabel("d_train (nearest training image)")
        ax.set_title("below the diagonal: closer to training data", fontsize=8)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
