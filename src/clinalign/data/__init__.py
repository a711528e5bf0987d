"""Dataset adapters: everything that turns files on disk into :class:`Record` objects."""

from clinalign.data.adapters import (
    BREAKHIS_CLASSES,
    CHEXPERT_CLASSES,
    ORIGA_CLASSES,
    DatasetLoad,
    available_datasets,
    load_breakhis,
    load_chexpert,
    load_dataset,
    load_fitzpatrick17k,
    load_generic,
    load_origa,
    register_dataset,
)
from clinalign.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageLoadError,
    ImageTooLargeError,
    get_max_image_pixels,
    image_pixel_limit,
    load_image,
    load_images_tensor,
    pil_to_tensor,
    set_max_image_pixels,
)
from clinalign.data.manifest import read_manifest
from clinalign.data.records import Record
from clinalign.data.split import patient_split

__all__ = [
    "BREAKHIS_CLASSES",
    "CHEXPERT_CLASSES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ORIGA_CLASSES",
    "DatasetLoad",
    "ImageLoadError",
    "ImageTooLargeError",
    "Record",
    "available_datasets",
    "get_max_image_pixels",
    "image_pixel_limit",
    "load_breakhis",
    "load_chexpert",
    "load_dataset",
    "load_fitzpatrick17k",
    "load_generic",
    "load_image",
    "load_images_tensor",
    "load_origa",
    "patient_split",
    "pil_to_tensor",
    "read_manifest",
    "register_dataset",
    "set_max_image_pixels",
]
