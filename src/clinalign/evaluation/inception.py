"""Inception-v3 features for ``fd`` / ``kid`` in the standard FID space, through torchmetrics.

``--evaluator inception`` makes ``clinalign evaluate fd|kid`` embed images with the FID Inception network
(torchmetrics' ``NoTrainInceptionV3``, the ``inception-v3-compat`` port of the TF-slim graph from
torch-fidelity, 2048-d pool3 features), so the Fréchet distance is the usual FID and the kernel distance
the usual KID. The distances themselves are :func:`~clinalign.evaluation.functional.frechet_distance` and
:func:`~clinalign.evaluation.functional.kernel_inception_distance`, the same as in every critic's space.

Needs ``pip install 'clinalign[eval]'`` (torchmetrics + torch-fidelity) and the weights file
``pt_inception-2015-12-05-6726825d.pth`` on disk: ``--inception-weights PATH``, or already in the torch hub
cache (``$TORCH_HOME/hub/checkpoints/``, where torch-fidelity puts it on a machine with internet). Nothing is
downloaded here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from clinalign.errors import ConfigError, MissingDependencyError

INCEPTION = "inception"
INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_NAME


class InceptionEncoder:
    """A feature extractor ``uint8 images [N,3,H,W] -> [N,D]`` with the image side of the critic interface.

    ``encode_images`` takes images in [0,1] (what the embedding helpers load), rounds them to uint8 as
    torchmetrics' FID does, and returns the raw (not normalised) features as float32. Inception-space
    features have no text side: the fd/kid rows leave the prompt–image cosine empty.
    """

    def __init__(self, extractor: torch.nn.Module, *, name: str = INCEPTION, image_size: int = 299) -> None:
        self.extractor = extractor.eval()
        self.name = name
        self.image_size = int(image_size)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.image_size, self.image_size, dtype=torch.uint8)
            self.embed_dim = int(self._forward(probe).shape[-1])

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.extractor.parameters(), torch.zeros(0)).device
        return self.extractor(images.to(device)).reshape(images.shape[0], -1).float().cpu()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward((images.clamp(0, 1) * 255).round().to(torch.uint8))

    def __repr__(self) -> str:
        return f"InceptionEncoder(name={self.name!r}, embed_dim={self.embed_dim})"


def inception_weights_path(weights: str | os.PathLike[str] | None = None) -> Path:
    """The FID Inception weights: ``weights`` when given, else the torch hub cache; a clear error when absent."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"--inception-weights {weights}: file not found. Download {INCEPTION_WEIGHTS_URL} where there is "
                "internet and point --inception-weights at it."
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_NAME
    if not cached.is_file():
        raise ConfigError(
            f"Inception-space FID/KID needs the weights file {INCEPTION_WEIGHTS_NAME}, which is not at {cached} and "
            f"is not downloaded here. Fetch {INCEPTION_WEIGHTS_URL} where there is internet and pass "
            "--inception-weights PATH (or put it in $TORCH_HOME/hub/checkpoints/), or use a critic's space "
            "(--evaluator <critic>) instead."
        )
    return cached


def load_inception(weights: str | os.PathLike[str] | None = None, *, device: str | None = None) -> InceptionEncoder:
    """The FID Inception-v3 (2048-d pool3) from torchmetrics with local weights, as an :class:`InceptionEncoder`."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        raise MissingDependencyError(
            "torchmetrics", "Inception-space FID/KID (--evaluator inception)", "eval"
        ) from None
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics' Inception lives there)
    except ImportError:
        raise MissingDependencyError(
            "torch-fidelity", "Inception-space FID/KID (--evaluator inception)", "eval"
        ) from None
    path = inception_weights_path(weights)
    try:
        extractor: Any = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"{path}: not loadable as the FID Inception weights ({type(exc).__name__}: {exc}).") from None
    target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return InceptionEncoder(extractor.to(target))


__all__ = ["INCEPTION", "InceptionEncoder", "inception_weights_path", "load_inception"]
