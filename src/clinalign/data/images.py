"""Robust image loading: grayscale/16-bit X-rays, RGBA, palette and CMYK images become RGB.

Every image clinalign reads goes through :func:`load_image`, which refuses images larger than a pixel
limit *before* decoding them (a "decompression bomb": a small file whose header claims e.g.
20000x20000 pixels would otherwise take gigabytes). The limit is :data:`DEFAULT_MAX_IMAGE_PIXELS`
unless changed with :func:`set_max_image_pixels` (the CLI's ``--max-image-pixels``) or per call.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clinalign.errors import DataError


class ImageLoadError(DataError):
    """An image file is missing or cannot be decoded."""


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than the limit (a possible decompression bomb)."""


# Twice PIL's warning threshold, i.e. the size PIL itself refuses: 178,956,970 pixels (e.g. 13376 x 13376).
# Whole-slide images are larger and must be tiled first; every other clinical modality fits.
DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485
_max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS


def set_max_image_pixels(limit: int | None) -> None:
    """Set the pixel limit of :func:`load_image` for this process (``None``: no limit, trusted images only).

    A limit above PIL's own refusal threshold also raises ``PIL.Image.MAX_IMAGE_PIXELS`` so PIL lets
    those images through.
    """
    global _max_image_pixels
    if limit is not None and limit < 1:
        raise DataError(f"the image pixel limit must be positive (or None for no limit), got {limit}.")
    _max_image_pixels = limit
    pil_refuses_above = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if Image.MAX_IMAGE_PIXELS is not None and (limit is None or limit > pil_refuses_above):
        Image.MAX_IMAGE_PIXELS = None if limit is None else limit


class _Default:
    """Marker type of "use the process-wide limit"."""


_DEFAULT = _Default()


def get_max_image_pixels() -> int | None:
    """The current pixel limit of :func:`load_image` (``None``: no limit)."""
    return _max_image_pixels


def _too_large(path: Path, shown: str, limit: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{path}: image is {shown}, over the limit of {limit:,} pixels (a possible decompression bomb). Downscale "
        "or tile it, or raise the limit with --max-image-pixels if the file is trusted."
    )


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


def load_image(path: str | os.PathLike[str], *, max_pixels: int | _Default | None = _DEFAULT) -> Image.Image:
    """Open ``path`` as an RGB PIL image (EXIF orientation applied), or raise :class:`ImageLoadError`.

    ``max_pixels`` overrides the process-wide limit (:func:`set_max_image_pixels`); the size is read
    from the header and checked before any pixel is decoded (:class:`ImageTooLargeError`).
    """
    path = Path(path)
    limit = _max_image_pixels if isinstance(max_pixels, _Default) else max_pixels
    if not path.is_file():
        raise ImageLoadError(
            f"{path}: image file not found. Check the path (relative paths resolve from the manifest)."
        )
    from clinalign.data.dicom import is_dicom, load_dicom

    if is_dicom(path):
        return load_dicom(path)
    try:
        with _open_header(path) as handle:
            width, height = handle.size
            if limit is not None and width * height > limit:
                raise _too_large(path, f"{width}x{height} = {width * height:,} pixels", limit)
            handle.load()
            image = ImageOps.exif_transpose(handle) or handle
            return _to_rgb(image)
    except Image.DecompressionBombError as exc:
        # PIL refuses before the size can be read here; its message carries the pixel count
        raise _too_large(path, f"too large to open ({exc})", int(limit or Image.MAX_IMAGE_PIXELS or 0)) from None
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise ImageLoadError(f"{path}: cannot decode image ({exc}). Re-export it as PNG or JPEG.") from exc


_WARNINGS_LOCK = threading.Lock()


def _open_header(path: Path) -> Image.Image:
    """``Image.open`` (reads the header only) without PIL's DecompressionBombWarning: our own limit applies.

    ``catch_warnings`` swaps process-wide state, so threads (enrichment loads images in a pool) take turns;
    only the cheap header parse is inside the lock, not the decoding.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


@contextlib.contextmanager
def image_pixel_limit(limit: int | None):
    """Temporarily set the process-wide pixel limit (restored on exit)."""
    previous, pil_previous = _max_image_pixels, Image.MAX_IMAGE_PIXELS
    set_max_image_pixels(limit)
    try:
        yield
    finally:
        globals()["_max_image_pixels"] = previous
        Image.MAX_IMAGE_PIXELS = pil_previous


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
