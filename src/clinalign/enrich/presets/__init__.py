"""Enrichment presets: the per-dataset output schema, prompts, ``t_ep`` renderer and class checklists.

Built-in presets are YAML files in this folder, read through the same code as user presets, so a
custom preset is a YAML file and no code. Other modules add presets with :func:`register_preset`
(e.g. the toy dataset registers ``toyderm``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clinalign.enrich.presets.preset import Preset, PresetOutput, RuleSet
from clinalign.enrich.presets.spec import FieldSpec, PresetSpec, RenderSpec, RulesSpec
from clinalign.errors import ConfigError

__all__ = [
    "FieldSpec",
    "Preset",
    "PresetOutput",
    "PresetSpec",
    "RenderSpec",
    "RuleSet",
    "RulesSpec",
    "available_presets",
    "get_preset",
    "load_preset_file",
    "preset_from_dict",
    "register_preset",
]

PresetFactory = Callable[[], Preset]
_FACTORIES: dict[str, PresetFactory] = {}
_CACHE: dict[str, Preset] = {}


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def preset_from_dict(data: Any, *, source: str = "<dict>") -> Preset:
    """Build a :class:`Preset` from a dict shaped like a preset YAML file."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a preset must be a mapping of keys (name, modality, fields, ...), got {type(data).__name__}."
        )
    try:
        spec = PresetSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid preset: {_format_errors(exc)}. See docs/enrichment.md, 'Custom presets'."
        ) from exc
    return Preset(spec, source=source)


def load_preset_file(path: str | os.PathLike[str]) -> Preset:
    """Load a preset from a YAML (or JSON) file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: preset file not found. Check the path.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).") from exc
    return preset_from_dict(data, source=str(path))


def register_preset(
    name: str, preset: Preset | PresetSpec | PresetFactory | str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Register a preset under ``name``: a :class:`Preset`, a :class:`PresetSpec`, a YAML path or a factory.

    Factories and paths are resolved on first use, so registering is cheap at import time.
    """
    if name in _FACTORIES and not overwrite:
        raise ConfigError(f"a preset named {name!r} is already registered; pass overwrite=True to replace it.")
    if isinstance(preset, Preset):
        factory: PresetFactory = lambda: preset  # noqa: E731
    elif isinstance(preset, PresetSpec):
        factory = lambda: Preset(preset)  # noqa: E731
    elif isinstance(preset, (str, os.PathLike)):
        factory = lambda: load_preset_file(preset)  # noqa: E731
    elif callable(preset):
        factory = preset
    else:
        raise ConfigError(
            f"cannot register {type(preset).__name__} as a preset; pass a Preset, PresetSpec, path or factory."
        )
    _FACTORIES[name] = factory
    _CACHE.pop(name, None)


def available_presets() -> list[str]:
    return sorted(_FACTORIES)


def get_preset(name_or_path: str | os.PathLike[str]) -> Preset:
    """A registered preset by name, or a preset YAML file by path."""
    key = str(name_or_path)
    if key in _FACTORIES:
        if key not in _CACHE:
            _CACHE[key] = _FACTORIES[key]()
        return _CACHE[key]
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        return load_preset_file(path)
    raise ConfigError(f"unknown preset {key!r}; choose one of {available_presets()} or pass a preset YAML file.")


def _builtin_factory(filename: str) -> PresetFactory:
    def load() -> Preset:
        text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
        return preset_from_dict(yaml.safe_load(text), source=f"built-in preset {filename}")

    return load


for _file in (
    "chexpert.yaml",
    "fitzpatrick17k.yaml",
    "breakhis.yaml",
    "origa.yaml",
    "generic.yaml",
    # the CRAFT paper's protocol (clinalign.protocols, `--protocol craft-paper`)
    "chexpert_craft_paper.yaml",
    "fitzpatrick17k_craft_paper.yaml",
    "breakhis_craft_paper.yaml",
    "origa_craft_paper.yaml",
):
    register_preset(_file.removesuffix(".yaml"), _builtin_factory(_file))
