"""DICOM input: modality LUT, VOI windowing, MONOCHROME1 inversion, to the 8-bit image every consumer sees.

:func:`clinalign.data.load_image` dispatches ``.dcm``/``.dicom`` files (or any file with the ``DICM``
marker) here, so the critic, the VAE and the MLLM all read the same converted pixels. Needs the
optional ``pydicom`` package (``pip install 'clinalign[dicom]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clinalign.errors import DataError, MissingDependencyError

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the DICOM preamble marker ``DICM`` at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _first(value) -> float:
    """A DICOM value that may be multi-valued (several windows): the first one, as float."""
    try:
        return float(value[0])
    except (TypeError, IndexError, KeyError):
        return float(value)


def window_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2.1) mapped to [0, 1].

    Values at or below ``center - 0.5 - (width - 1) / 2`` become 0, values above
    ``center - 0.5 + (width - 1) / 2`` become 1, linear in between.
    """
    if width < 1:
        raise DataError(f"DICOM WindowWidth must be >= 1, got {width}.")
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(scaled, 0.0, 1.0)


def dicom_to_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a DICOM file to float values in [0, 1]: ``[H, W]`` for greyscale, ``[H, W, 3]`` for colour.

    Greyscale: the modality LUT (RescaleSlope/Intercept) is applied; then a VOI LUT sequence if present,
    else the first WindowCenter/WindowWidth, else the image's own min-max range; MONOCHROME1 (white =
    low values) is inverted so bright always means dense. Multi-frame files use their first frame.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as exc:
        raise MissingDependencyError("pydicom", "reading DICOM images", extra="dicom") from exc
    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for malformed files
        raise DataError(
            f"{path}: cannot read this DICOM file ({type(exc).__name__}: {exc}). Check that it is a complete "
            "DICOM image with pixel data, or export it as PNG."
        ) from exc
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour: bring to [0, 1] by the stored bit depth
        bits = int(getattr(dataset, "BitsStored", 8) or 8)
        return np.clip(pixels.astype(np.float64) / float(2**bits - 1), 0.0, 1.0)
    modality = np.asarray(apply_modality_lut(pixels, dataset))
    values = modality.astype(np.float64)
    if "VOILUTSequence" in dataset:
        # a LUT is indexed by integer values; its output range is set by the descriptor's bits per entry
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        indices = modality if modality.dtype.kind in "iu" else np.rint(modality).astype(np.int64)
        windowed = np.asarray(apply_voi_lut(indices, dataset), dtype=np.float64)
        out = np.clip(windowed / float(2**bits - 1), 0.0, 1.0)
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        out = window_linear(values, _first(dataset.WindowCenter), _first(dataset.WindowWidth))
    else:
        lo, hi = float(values.min()), float(values.max())
        out = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def load_dicom(path: str | os.PathLike[str]):  # -> PIL.Image.Image
    """A DICOM file as an 8-bit RGB PIL image (greyscale replicated to 3 channels)."""
    from PIL import Image

    array = np.round(dicom_to_array(path) * 255.0).astype(np.uint8)
    image = Image.fromarray(array, mode="RGB" if array.ndim == 3 else "L")
    return image.convert("RGB")
