"""Tiny models built from configs, for tests, benchmarks and offline demos.

Nothing here downloads anything: each builder creates a randomly initialised (or briefly trained)
model from a config and ``save_pretrained``-s it to a directory, which is then loaded back through
the same public loaders users call with hub ids.
"""

from clinalign.testing.critics import build_tiny_clip, build_tiny_open_clip, build_tiny_siglip, build_tiny_siglip2
from clinalign.testing.diffusion import build_tiny_craft_assets, build_tiny_sd
from clinalign.testing.tokenizer import build_word_tokenizer

__all__ = [
    "build_tiny_clip",
    "build_tiny_craft_assets",
    "build_tiny_open_clip",
    "build_tiny_sd",
    "build_tiny_siglip",
    "build_tiny_siglip2",
    "build_word_tokenizer",
]
