"""Robust image loading: grayscale/16-bit X-rays, RGBA, palette and CMYK images become RGB."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clinalign.errors import DataError


class ImageLoadError(DataError):
    """An image file is missing or cannot be decoded."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float X-rays: rescale the actual value range to 8 bits instead of clipping
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) / (hi - lo) * 255.0
        image = Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` as an RGB PIL image (EXIF orientation applied), or raise :class:`ImageLoadError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(
            f"{path}: image file not found. Check the path (relative paths resolve from the manifest)."
        )
    from clinalign.data.dicom import is_dicom, load_dicom

    if is_dicom(path):
        return load_dicom(path)
    try:
        with Image.open(path) as handle:
            handle.load()
            image = ImageOps.exif_transpose(handle) or handle
            return _to_rgb(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"{path}: cannot decode image ({exc}). Re-export it as PNG or JPEG.") from exc


def pil_to_tensor(image: Image.Image, size: int | None = None):  # -> torch.Tensor [3,H,W]
    """Convert a PIL image to a float tensor [3,H,W] in [0,1], optionally resized (bicubic) to ``size``²."""
    import torch

    if size is not None and image.size != (size, size):
        image = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_images_tensor(paths: Sequence[str | os.PathLike[str]], size: int | None = None):  # -> torch.Tensor
    """Load several images into one float tensor [N,3,size,size] in [0,1] (``size`` required if they differ)."""
    import torch

    tensors = [pil_to_tensor(load_image(p), size) for p in paths]
    if not tensors:
        raise DataError("no images to load: the list of paths is empty.")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)}; pass size=... to resize them.")
    return torch.stack(tensors)
