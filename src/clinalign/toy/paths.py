"""Where the shipped toy models live (inside the installed package, ``clinalign/toy/assets/``)."""

from __future__ import annotations

from pathlib import Path

from clinalign.errors import ModelLoadError

_ASSETS = Path(__file__).resolve().parent / "assets"


def assets_dir() -> Path:
    """The folder holding the shipped toy models and ``build_info.json``."""
    return _ASSETS


def _existing(name: str) -> Path:
    path = _ASSETS / name
    if not path.is_dir():
        raise ModelLoadError(
            f"toy asset '{name}' not found at {path}. The package was installed without its data files; "
            "rebuild them with: python -m clinalign.toy.build_assets --out <dir> (and pass that dir instead)."
        )
    return path


def base_model_dir() -> Path:
    """The tiny text-to-image base pipeline (diffusers format; ``StableDiffusionPipeline.from_pretrained``)."""
    return _existing("base")


def training_critic_dir() -> Path:
    """The training critic (tiny CLIP dual encoder, transformers format) that rewards are computed with."""
    return _existing("training_critic")


def evaluator_critic_dir() -> Path:
    """The evaluator critic (a separately trained tiny CLIP, different data half/architecture) for CAS."""
    return _existing("evaluator_critic")
