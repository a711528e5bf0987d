"""``fd`` and ``kid``: how far each method's images lie from the real test images in an encoder's space.

With a pathology VLM as the encoder this is "PLIP-FID"; any critic works and several can be given (one
row per method × critic). The encoder ``inception`` is the standard FID/KID Inception-v3 space (torchmetrics,
local weights; see :mod:`clinalign.evaluation.inception`). The same run reports the mean paired image–image
cosine (the generated image against its real reference, "PLIP-I" = SFS) and prompt–image cosine ("PLIP-T" =
VDC) under both names.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from clinalign.errors import DataError
from clinalign.evaluation.common import CheckResult, SetsConfig, figure, save_figure, write_result
from clinalign.evaluation.functional import frechet_distance, kernel_inception_distance
from clinalign.evaluation.inception import INCEPTION, load_inception
from clinalign.evaluation.inputs import (
    MethodImages,
    RealImages,
    embed_paths,
    load_evaluator,
    read_methods,
    read_real_images,
)


class DistributionConfig(SetsConfig):
    """Settings of ``clinalign evaluate fd`` / ``kid``."""

    evaluators: list[str] = Field(
        description="Encoders (critics: hub id, local dir or open_clip:<name>; 'inception' for the FID Inception-v3 "
        "space); one result row per method × encoder."
    )
    inception_weights: str | None = Field(
        None,
        description="The FID Inception weights file (pt_inception-2015-12-05-6726825d.pth) for the 'inception' "
        "encoder (default: the torch hub cache).",
    )
    # --- KID (Bińkowski et al. 2018 defaults; torchmetrics uses the same)
    subsets: int = Field(100, ge=1, description="KID: random subsets averaged.")
    subset_size: int = Field(1000, ge=2, description="KID: rows per subset (capped at the smaller set's size).")
    degree: int = Field(3, ge=1, description="KID: polynomial kernel degree.")
    gamma: float | None = Field(None, description="KID: kernel scale γ (default 1/D).")
    coef: float = Field(1.0, description="KID: kernel offset.")
    seed: int = Field(0, description="KID: subset sampling seed.")

    @field_validator("evaluators")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one encoder (--evaluator)")
        return value


def _paired_cosines(
    critic: Any, group: MethodImages, gen: torch.Tensor, real: RealImages, real_emb: torch.Tensor
) -> tuple[float | None, float | None]:
    """Mean image–image cosine to the paired real image (needs ref_id) and mean prompt–image cosine
    (both ``None`` for an image-only feature space such as Inception's)."""
    from clinalign.scoring.functional import row_cosine

    if not hasattr(critic, "encode_texts"):
        return None, None
    image_image = None
    index = {rid: i for i, rid in enumerate(real.ids)}
    if all(r is not None and r in index for r in group.ref_ids):
        refs = real_emb[[index[str(r)] for r in group.ref_ids]]
        image_image = float(row_cosine(gen, refs).mean())
    with torch.no_grad():
        texts = critic.encode_texts(group.prompts).float().cpu()
    prompt_image = float(row_cosine(gen, texts).mean())
    return image_image, prompt_image


def _evaluate(
    config: DistributionConfig,
    metric: Literal["fd", "kid"],
    *,
    critics: dict[str, Any] | None,
    progress: bool,
) -> CheckResult:
    if config.real is None:
        raise DataError(f"`{metric}` compares each method with the real test set: pass --real MANIFEST.")
    real = read_real_images(config.real, split=config.real_split, image_root=config.image_root)
    methods = read_methods(config.methods)
    for method, group in methods.items():
        if len(group) < 2:
            raise DataError(f"method '{method}' has {len(group)} image; {metric} needs at least 2 images per method.")
    rows: list[dict[str, Any]] = []
    for name in config.evaluators:
        critic = (critics or {}).get(name)
        if critic is None and name == INCEPTION:
            critic = load_inception(config.inception_weights, device=config.device)
        elif critic is None:
            critic = load_evaluator(name, device=config.device, dtype=config.dtype)
        real_emb = embed_paths(critic, real.paths, batch_size=config.batch_size, progress=progress)
        for method, group in methods.items():
            gen = embed_paths(critic, group.paths, batch_size=config.batch_size, progress=progress)
            row: dict[str, Any] = {"method": method, "encoder": getattr(critic, "name", name), "n_real": len(real)}
            row["n_generated"] = len(group)
            if metric == "fd":
                row["fd"] = frechet_distance(real_emb, gen)
            else:
                mean, std = kernel_inception_distance(
                    real_emb,
                    gen,
                    subsets=config.subsets,
                    subset_size=config.subset_size,
                    degree=config.degree,
                    gamma=config.gamma,
                    coef=config.coef,
                    seed=config.seed,
                )
                row["kid_mean"], row["kid_std"] = mean, std
                row["kid_subset_size"] = min(config.subset_size, len(real), len(group))
            image_image, prompt_image = _paired_cosines(critic, group, gen, real, real_emb)
            row["image_image_cosine_sfs"] = image_image
            row["prompt_image_cosine_vdc"] = prompt_image
            rows.append(row)
    numerics = (
        "Fréchet distance of Gaussians fitted to encoder embeddings; eigenvalue form in float64 (no regularisation)"
        if metric == "fd"
        else f"unbiased MMD², kernel (γ x·y + {config.coef})^{config.degree}, γ = "
        f"{'1/D' if config.gamma is None else config.gamma}, mean ± std over {config.subsets} subsets"
    )
    summary = {
        "metric": metric,
        "definition": numerics,
        "higher_is_better": False,
        "real": {"source": str(real.source), "n": len(real)},
        "results": rows,
        "notes": [
            "image_image_cosine_sfs ('PLIP-I') and prompt_image_cosine_vdc ('PLIP-T') are the CAS primitives SFS "
            "and VDC in this encoder's space; image_image_cosine_sfs is empty for sets without ref_id."
        ]
        + (
            [
                "encoder 'inception': FID Inception-v3 (torchmetrics inception-v3-compat, 2048-d pool3); fd is FID, "
                "kid is KID; it has no text side, so both cosines are empty there."
            ]
            if INCEPTION in config.evaluators
            else []
        ),
    }
    result = write_result(CheckResult(metric, rows, summary, _out(config)), config)
    result.files["png"] = _plot(rows, metric, _out(config) / f"{metric}.png")
    return result


def _out(config: SetsConfig):
    from pathlib import Path

    return Path(config.out)


def _plot(rows: list[dict[str, Any]], metric: str, path):
    key = "fd" if metric == "fd" else "kid_mean"
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = figure(max(4.0, 1.2 * len(methods) + 2), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(encoders)
    for e, encoder in enumerate(encoders):
        values = [next(r[key] for r in rows if r["method"] == m and r["encoder"] == encoder) for m in methods]
        errors = None
        if metric == "kid":
            errors = [next(r["kid_std"] for r in rows if r["method"] == m and r["encoder"] == encoder) for m in methods]
        ax.bar(np.arange(len(methods)) + e * width, values, width, yerr=errors, label=str(encoder)[-40:])
    ax.set_xticks(np.arange(len(methods)) + width * (len(encoders) - 1) / 2)
    ax.set_xticklabels(methods)
    ax.set_ylabel("FD (lower is closer to real)" if metric == "fd" else "KID (mean ± std over subsets)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def evaluate_fd(
    config: DistributionConfig, *, critics: dict[str, Any] | None = None, progress: bool = False
) -> CheckResult:
    """Fréchet distance of every method's images to the real test images, per encoder; writes fd.csv/json/png.

    ``critics`` maps an entry of ``config.evaluators`` to an already loaded critic (skips loading it).
    """
    return _evaluate(config, "fd", critics=critics, progress=progress)


def evaluate_kid(
    config: DistributionConfig, *, critics: dict[str, Any] | None = None, progress: bool = False
) -> CheckResult:
    """Kernel distance (KID) of every method's images to the real test images, per encoder; writes kid.csv/json/png."""
    return _evaluate(config, "kid", critics=critics, progress=progress)
