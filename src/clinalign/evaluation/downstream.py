"""``downstream``: does adding a method's synthetic images help a classifier trained on real data?

The CRAFT paper's augmentation protocol (its Table 13), in the fast form: a linear head on frozen
evaluator embeddings is trained on real training images, with a fixed fraction of every batch (default
20%) drawn from a method's generated images (labelled with the class they were generated for), at
several real-data scales (default 25%, 50%, 100% of the real training set) and seeds, and evaluated on the
real test set. A ``real_only`` row (no synthetic images) is the baseline each method is compared with.
Accuracy and macro-F1 per method × scale (mean ± std over seeds); with a ``score-cas`` summary the
correlation between method CAS and the accuracy gain over ``real_only``.

``backbone="cnn"`` or ``"resnet18"`` trains an image classifier on the pixels instead (a small 3-block CNN, or
torchvision's ResNet-18, both from random initialisation, at ``image_size``; on a GPU when one is available),
with the same batch mixture, scales and seeds; it needs no evaluator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from clinalign.errors import DataError
from clinalign.evaluation.common import CheckResult, SetsConfig, figure, save_figure, write_result
from clinalign.evaluation.functional import correlations
from clinalign.evaluation.inputs import embed_paths, load_evaluator, read_methods, read_real_images

REAL_ONLY = "real_only"
BACKBONES = ("linear", "cnn", "resnet18")


class DownstreamConfig(SetsConfig):
    """Settings of ``clinalign evaluate downstream`` (``real`` is the real test set the head is scored on)."""

    evaluator: str | None = Field(
        None, description="Frozen encoder (critic) whose embeddings the linear head reads (backbone 'linear')."
    )
    backbone: Literal["linear", "cnn", "resnet18"] = Field(
        "linear",
        description="linear: a head on frozen evaluator embeddings (fast default); cnn / resnet18: an image "
        "classifier trained on the pixels from random initialisation.",
    )
    image_size: int = Field(64, ge=16, description="Side images are resized to for the cnn / resnet18 backbones.")
    train: str = Field(description="Real training manifest with image and label columns.")
    train_split: str | None = Field(None, description="Only use training-manifest rows with this split.")
    train_image_root: str | None = Field(None, description="Folder relative training image paths resolve against.")
    synthetic_fraction: float = Field(0.2, gt=0, lt=1, description="Share of every batch drawn from generated images.")
    scales: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0], description="Fractions of the real training set used."
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Training seeds per method × scale.")
    steps: int = Field(300, ge=1, description="Optimiser steps of the classifier.")
    head_batch_size: int = Field(64, ge=2, description="Embeddings (or images) per training batch.")
    learning_rate: float = Field(1e-2, gt=0, description="Adam learning rate (1e-3 suits the image backbones).")
    cas_summary: str | None = Field(None, description="score-cas summary.json: correlate CAS with the gains.")

    @field_validator("scales")
    @classmethod
    def _scales(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < s <= 1 for s in value):
            raise ValueError(f"scales must be fractions in (0, 1], got {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed")
        return value


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over the classes that occur in ``y_true`` or ``y_pred`` of 2TP / (2TP + FP + FN)."""
    scores = []
    for c in range(n_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def train_linear_head(
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    n_classes: int,
    *,
    synthetic_x: torch.Tensor | None = None,
    synthetic_y: torch.Tensor | None = None,
    synthetic_fraction: float = 0.2,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    seed: int = 0,
) -> torch.nn.Linear:
    """A linear classifier on frozen embeddings; each batch holds ``round(synthetic_fraction · batch_size)``
    synthetic rows (sampled with replacement) and real rows for the rest."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(real_x.shape[1], n_classes)
    return train_classifier(
        head,
        real_x,
        real_y,
        synthetic_x=synthetic_x,
        synthetic_y=synthetic_y,
        synthetic_fraction=synthetic_fraction,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )


def train_classifier(
    model: torch.nn.Module,
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    *,
    synthetic_x: torch.Tensor | None = None,
    synthetic_y: torch.Tensor | None = None,
    synthetic_fraction: float = 0.2,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    seed: int = 0,
    device: torch.device | None = None,
) -> Any:
    """Train ``model`` (inputs: rows of ``real_x``, embeddings or uint8 images) with Adam and cross-entropy;
    each batch holds ``round(synthetic_fraction · batch_size)`` synthetic rows (sampled with replacement)
    and real rows for the rest. Batches are drawn on the CPU from ``seed``, then moved to ``device``."""
    generator = torch.Generator().manual_seed(seed)
    device = device or torch.device("cpu")
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    n_syn = 0 if synthetic_x is None else max(1, round(synthetic_fraction * batch_size))
    n_real = batch_size - n_syn
    for _ in range(steps):
        idx = torch.randint(0, real_x.shape[0], (n_real,), generator=generator)
        x, y = real_x[idx], real_y[idx]
        if synthetic_x is not None and synthetic_y is not None:
            sidx = torch.randint(0, synthetic_x.shape[0], (n_syn,), generator=generator)
            x, y = torch.cat([x, synthetic_x[sidx]]), torch.cat([y, synthetic_y[sidx]])
        loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class _Pixels(torch.nn.Module):
    """uint8 images [N,3,H,W] -> floats normalised per channel (ImageNet statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std


def build_backbone(name: str, n_classes: int, *, seed: int = 0) -> torch.nn.Module:
    """An image classifier taking uint8 images [N,3,H,W], randomly initialised from ``seed``: ``"cnn"`` (three
    conv-BN-ReLU blocks, 16/32/64 channels, global average pooling, a linear layer) or ``"resnet18"``
    (torchvision's, ``weights=None``)."""
    torch.manual_seed(seed)
    if name == "cnn":
        layers: list[torch.nn.Module] = []
        channels = 3
        for width in (16, 32, 64):
            layers += [
                torch.nn.Conv2d(channels, width, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(width),
                torch.nn.ReLU(inplace=True),
                torch.nn.MaxPool2d(2),
            ]
            channels = width
        body = torch.nn.Sequential(
            *layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, n_classes)
        )
    elif name == "resnet18":
        import torchvision

        body = torchvision.models.resnet18(weights=None, num_classes=n_classes)
    else:
        raise DataError(f"unknown backbone {name!r}; use one of {list(BACKBONES)}.")
    return torch.nn.Sequential(_Pixels(), body)


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    model.eval()
    chunks = [model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(chunks).numpy()


def _images_uint8(paths: list[Path], size: int) -> torch.Tensor:
    from clinalign.data.images import load_image, pil_to_tensor

    return torch.stack([(pil_to_tensor(load_image(p), size) * 255.0 + 0.5).to(torch.uint8) for p in paths])


def evaluate_downstream(config: DownstreamConfig, *, critic: Any = None, progress: bool = False) -> CheckResult:
    """Accuracy and macro-F1 of a linear head trained on real + synthetic embeddings, per method × scale;
    writes downstream.csv/json/png."""
    if config.real is None:
        raise DataError("downstream scores the classifier on the real test set: pass --real MANIFEST.")
    train = read_real_images(
        config.train, split=config.train_split, image_root=config.train_image_root, require_labels=True, what="--train"
    )
    test = read_real_images(config.real, split=config.real_split, image_root=config.image_root, require_labels=True)
    methods = read_methods(config.methods)
    classes = sorted(set(train.labels))
    index = {c: i for i, c in enumerate(classes)}
    for c, line in zip(test.labels, test.rows, strict=True):
        if c not in index:
            raise DataError(f"{test.source}, line {line}: label '{c}' does not occur in the training set {classes}.")
    for name, group in methods.items():
        for label, source, file in zip(group.labels, group.sources, group.ids, strict=True):
            if label not in index:
                raise DataError(
                    f"{source} ({file}): method '{name}' has label '{label}', which is not a training class {classes}."
                )
    if REAL_ONLY in methods:
        raise DataError(f"'{REAL_ONLY}' names the baseline without synthetic images; rename that method.")
    linear = config.backbone == "linear"
    if linear and critic is None:
        if config.evaluator is None:
            raise DataError("the linear head reads evaluator embeddings: pass --evaluator (or --backbone cnn).")
        critic = load_evaluator(config.evaluator, device=config.device, dtype=config.dtype)
    # the linear head is tiny: CPU (as before); an image backbone trains on the GPU when there is one
    run_on = (
        torch.device("cpu")
        if linear
        else torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    )
    if linear:
        embed = {"progress": progress, "batch_size": config.batch_size}

        def inputs(paths: list[Path]) -> torch.Tensor:
            return embed_paths(critic, paths, **embed)
    else:

        def inputs(paths: list[Path]) -> torch.Tensor:
            return _images_uint8(paths, config.image_size)

    train_x = inputs(train.paths)
    train_y = torch.tensor([index[c] for c in train.labels])
    test_x = inputs(test.paths)
    test_y = np.array([index[c] for c in test.labels])
    synthetic = {name: (inputs(g.paths), torch.tensor([index[c] for c in g.labels])) for name, g in methods.items()}
    per_seed: list[dict[str, Any]] = []
    for scale in config.scales:
        for seed in config.seeds:
            order = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(seed))
            keep = order[: max(len(classes), round(scale * train_x.shape[0]))]
            for name in [REAL_ONLY, *methods]:
                syn_x, syn_y = synthetic.get(name, (None, None))
                if linear:
                    torch.manual_seed(seed)  # the head's initialisation, as train_linear_head draws it
                    model: torch.nn.Module = torch.nn.Linear(train_x.shape[1], len(classes))
                else:
                    model = build_backbone(config.backbone, len(classes), seed=seed)
                model = train_classifier(
                    model,
                    train_x[keep],
                    train_y[keep],
                    synthetic_x=syn_x,
                    synthetic_y=syn_y,
                    synthetic_fraction=config.synthetic_fraction,
                    steps=config.steps,
                    batch_size=config.head_batch_size,
                    learning_rate=config.learning_rate,
                    seed=seed,
                    device=run_on,
                )
                predicted = _predict(model, test_x, run_on)
                per_seed.append(
                    {
                        "method": name,
                        "scale": scale,
                        "n_real": int(keep.numel()),
                        "seed": seed,
                        "accuracy": float(np.mean(predicted == test_y)),
                        "macro_f1": macro_f1(test_y, predicted, len(classes)),
                    }
                )
    rows: list[dict[str, Any]] = []
    for name in [REAL_ONLY, *methods]:
        for scale in config.scales:
            runs = [r for r in per_seed if r["method"] == name and r["scale"] == scale]
            base = [r for r in per_seed if r["method"] == REAL_ONLY and r["scale"] == scale]
            acc = np.array([r["accuracy"] for r in runs])
            f1 = np.array([r["macro_f1"] for r in runs])
            gain = acc - np.array([r["accuracy"] for r in base])  # same seeds, same real subsets
            rows.append(
                {
                    "method": name,
                    "scale": scale,
                    "n_real": runs[0]["n_real"],
                    "n_seeds": len(runs),
                    "accuracy_mean": float(acc.mean()),
                    "accuracy_std": float(acc.std(ddof=1)) if acc.size > 1 else None,
                    "macro_f1_mean": float(f1.mean()),
                    "macro_f1_std": float(f1.std(ddof=1)) if f1.size > 1 else None,
                    "accuracy_gain_vs_real_only": float(gain.mean()),
                }
            )
    correlation = None
    if config.cas_summary is not None:
        from clinalign.evaluation.preference import _method_cas

        cas = _method_cas(config.cas_summary)
        missing = [m for m in methods if m not in cas]
        if missing:
            raise DataError(f"{config.cas_summary}: no CAS for methods {missing} (it has {sorted(cas)}).")
        gains = {m: np.mean([r["accuracy_gain_vs_real_only"] for r in rows if r["method"] == m]) for m in methods}
        if len(methods) >= 3:
            correlation = correlations([cas[m] for m in methods], [gains[m] for m in methods])
    summary = {
        "definition": (
            (
                "linear head on frozen evaluator embeddings"
                if linear
                else f"{config.backbone} image classifier from random initialisation at {config.image_size} px"
            )
            + f", {config.steps} Adam steps, batch {config.head_batch_size} "
            f"with {config.synthetic_fraction:.0%} synthetic rows; scored on the real test set"
        ),
        "backbone": config.backbone,
        "classes": classes,
        "encoder": getattr(critic, "name", config.evaluator) if linear else None,
        "results": rows,
        "per_seed": per_seed,
        "cas_gain_correlation": correlation,
    }
    out = Path(config.out)
    result = write_result(CheckResult("downstream", rows, summary, out), config)
    fig = figure(5.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name in [REAL_ONLY, *methods]:
        mine = [r for r in rows if r["method"] == name]
        ax.errorbar(
            [r["n_real"] for r in mine],
            [r["accuracy_mean"] for r in mine],
            yerr=[r["accuracy_std"] or 0.0 for r in mine],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.set_xlabel("real training images")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=7)
    result.files["png"] = save_figure(fig, out / "downstream.png")
    return result
