"""``diversity``: prompt-level sample diversity, the mean pairwise distance among the N samples one prompt
produced (CRAFT paper protocol: 4 samples × 100 held-out prompts, LPIPS), averaged over prompts.

The distance is LPIPS (torchmetrics' ``LearnedPerceptualImagePatchSimilarity``, AlexNet) when the AlexNet
backbone weights are on disk: ``lpips_weights`` (the torchvision checkpoint file,
``alexnet-owt-7be5be79.pth``) or ``lpips_torch_home`` (a torch hub folder holding
``hub/checkpoints/alexnet-owt-7be5be79.pth``), with torchmetrics + torchvision installed; nothing is
downloaded. LPIPS's own linear layers ship inside torchmetrics. Otherwise it is the mean pairwise **embedding
cosine distance** in an encoder's space, and the outputs say so (``distance`` column): the two are different
numbers and must not be compared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from clinalign.errors import ConfigError, DataError, MissingDependencyError
from clinalign.evaluation.common import CheckResult, SetsConfig, figure, save_figure, write_result
from clinalign.evaluation.functional import mean_pairwise_cosine_distance
from clinalign.evaluation.inputs import embed_paths, load_evaluator, read_methods

EMBEDDING_DISTANCE = "embedding_cosine"
LPIPS_DISTANCE = "lpips_alex"


class DiversityConfig(SetsConfig):
    """Settings of ``clinalign evaluate diversity``."""

    evaluator: str | None = Field(
        None, description="Encoder for the embedding-space distance (required without lpips_torch_home)."
    )
    lpips_weights: str | None = Field(
        None,
        description="The torchvision AlexNet checkpoint file (alexnet-owt-7be5be79.pth): use LPIPS (torchmetrics).",
    )
    lpips_torch_home: str | None = Field(
        None, description="Local torch hub folder with the AlexNet checkpoint: use LPIPS (torchmetrics) instead."
    )
    lpips_size: int = Field(64, ge=32, description="Side images are resized to for LPIPS.")
    min_samples: int = Field(2, ge=2, description="Prompts with fewer samples than this are skipped.")


def group_by_prompt(
    prompts: list[str], sources: list[str], ref_ids: list[str | None] | None = None
) -> list[np.ndarray]:
    """Indices of the samples of each prompt within one generated set. A prompt is its paired real image
    (``ref_id``) and text, so two held-out images that happen to share a prompt text stay separate."""
    refs = ref_ids if ref_ids is not None else [None] * len(prompts)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, (source, ref, prompt) in enumerate(zip(sources, refs, prompts, strict=True)):
        groups.setdefault((source, ref or "", prompt), []).append(i)
    return [np.array(v) for v in groups.values()]


def prompt_diversity(
    groups: list[np.ndarray], group_distance: Callable[[np.ndarray], float], *, min_samples: int = 2
) -> np.ndarray:
    """Mean pairwise distance per group of at least ``min_samples`` samples (``group_distance(indices)``)."""
    return np.array([group_distance(g) for g in groups if g.size >= min_samples], dtype=np.float64)


ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"


def lpips_pairwise(
    torch_home: str | os.PathLike[str] | None = None,
    *,
    size: int,
    device: torch.device,
    weights: str | os.PathLike[str] | None = None,
) -> Callable:
    """A function ``images [N,3,H,W] in [0,1] -> mean LPIPS over pairs``, from torchmetrics with local weights:
    the AlexNet checkpoint file ``weights``, or a torch hub folder ``torch_home`` holding it."""
    import tempfile

    if (weights is None) == (torch_home is None):
        raise ConfigError("LPIPS needs exactly one of --lpips-weights FILE or --lpips-torch-home DIR.")
    if weights is not None:
        checkpoint = Path(weights).expanduser()
        if not checkpoint.is_file():
            raise ConfigError(
                f"--lpips-weights {weights}: file not found. Point it at torchvision's AlexNet checkpoint "
                f"({ALEXNET_CHECKPOINT}), or leave the flag out for the embedding-space distance."
            )
    else:
        checkpoint = Path(torch_home) / "hub" / "checkpoints" / ALEXNET_CHECKPOINT  # type: ignore[arg-type]
        if not checkpoint.is_file():
            raise ConfigError(
                f"--lpips-torch-home {torch_home}: no AlexNet checkpoint at {checkpoint}. Copy torchvision's "
                f"{ALEXNET_CHECKPOINT} there, or leave the flag out for the embedding-space distance."
            )
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError:
        raise MissingDependencyError("torchmetrics", "LPIPS diversity", "eval") from None
    # torchvision finds the backbone in a hub folder: a temporary one linking the file, only while the metric is built
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="clinalign_lpips_") as tmp:
        hub = Path(tmp) / "checkpoints"
        hub.mkdir()
        (hub / ALEXNET_CHECKPOINT).symlink_to(checkpoint.resolve())
        torch.hub.set_dir(tmp)
        try:
            metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device).eval()
        except Exception as exc:  # a file that is not an AlexNet state dict
            raise ConfigError(
                f"{checkpoint}: not loadable as torchvision's AlexNet weights ({type(exc).__name__}: {exc})."
            ) from None
        finally:
            torch.hub.set_dir(previous)

    @torch.no_grad()
    def mean_lpips(images: torch.Tensor) -> float:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        values = []
        for i in range(images.shape[0]):
            for j in range(i + 1, images.shape[0]):
                metric.reset()
                values.append(float(metric(images[i : i + 1].to(device), images[j : j + 1].to(device))))
        return float(np.mean(values))

    return mean_lpips


def evaluate_diversity(config: DiversityConfig, *, critic: Any = None, progress: bool = False) -> CheckResult:
    """Mean pairwise distance among each prompt's samples, averaged per method; writes diversity.csv/json/png."""
    from clinalign.data.images import load_images_tensor

    methods = read_methods(config.methods)
    device = torch.device(config.device) if config.device else torch.device("cpu")
    use_lpips = config.lpips_torch_home is not None or config.lpips_weights is not None
    lpips_fn = None
    if use_lpips:
        lpips_fn = lpips_pairwise(
            config.lpips_torch_home, weights=config.lpips_weights, size=config.lpips_size, device=device
        )
    elif critic is None:
        if config.evaluator is None:
            raise ConfigError("diversity needs --evaluator (embedding distance) or --lpips-weights FILE (LPIPS).")
        critic = load_evaluator(config.evaluator, device=config.device, dtype=config.dtype)
    distance = LPIPS_DISTANCE if use_lpips else EMBEDDING_DISTANCE
    rows: list[dict[str, Any]] = []
    per_method: dict[str, np.ndarray] = {}
    for method, group in methods.items():
        groups = group_by_prompt(group.prompts, group.sources, group.ref_ids)
        if not any(g.size >= config.min_samples for g in groups):
            most = max(g.size for g in groups)
            raise DataError(
                f"method '{method}': no prompt has {config.min_samples} or more samples (at most {most}); diversity "
                "compares samples of the same prompt. Generate several samples per prompt (--n-per-prompt 4)."
            )
        if lpips_fn is not None:
            paths = group.paths

            def distance_fn(idx: np.ndarray, paths=paths) -> float:
                return lpips_fn(load_images_tensor([paths[i] for i in idx], size=config.lpips_size))
        else:
            emb = embed_paths(critic, group.paths, batch_size=config.batch_size, progress=progress)

            def distance_fn(idx: np.ndarray, emb=emb) -> float:
                return mean_pairwise_cosine_distance(emb[torch.from_numpy(idx)])

        values = prompt_diversity(groups, distance_fn, min_samples=config.min_samples)
        per_method[method] = values
        rows.append(
            {
                "method": method,
                "distance": distance,
                "n_prompts": int(values.size),
                "samples_per_prompt": float(np.mean([g.size for g in groups if g.size >= config.min_samples])),
                "diversity_mean": float(values.mean()),
                "diversity_std": float(values.std(ddof=1)) if values.size > 1 else None,
            }
        )
    summary = {
        "distance": distance,
        "definition": (
            "LPIPS (AlexNet, torchmetrics)"
            if use_lpips
            else "embedding-space mean pairwise cosine distance (NOT LPIPS: no local LPIPS weights were given)"
        )
        + " among the samples of each prompt, averaged over prompts",
        "higher_is_better": True,
        "encoder": None if use_lpips else getattr(critic, "name", config.evaluator),
        "results": rows,
    }
    out = Path(config.out)
    result = write_result(CheckResult("diversity", rows, summary, out), config)
    fig = figure(max(4.0, 1.1 * len(per_method) + 2), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot(list(per_method.values()))
    ax.set_xticks(np.arange(1, len(per_method) + 1))
    ax.set_xticklabels(list(per_method))
    ax.set_ylabel(f"per-prompt diversity ({distance})")
    result.files["png"] = save_figure(fig, out / "diversity.png")
    return result
