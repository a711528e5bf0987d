"""Dataset adapters: everything that turns files on disk into :class:`Record` objects."""

from clinalign.data.images import ImageLoadError, load_image, load_images_tensor
from clinalign.data.manifest import read_manifest
from clinalign.data.records import Record

__all__ = ["ImageLoadError", "Record", "load_image", "load_images_tensor", "read_manifest"]
