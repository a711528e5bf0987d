"""Training methods by name: ``method`` in a config -> its config class and trainer.

``clinalign train --config X.yaml`` reads the file's ``method`` (default ``craft``) and builds the
matching trainer; a new method is one entry here.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from clinalign.errors import ConfigError
from clinalign.training.config import METHODS, BaseTrainConfig

# method -> (module, config class, trainer class)
_METHODS: dict[str, tuple[str, str, str]] = {
    "craft": ("clinalign.training.trainer", "TrainConfig", "DraftKTrainer"),
    "lora": ("clinalign.training.trainer", "TrainConfig", "DraftKTrainer"),
    "ti_lora": ("clinalign.training.trainer", "TrainConfig", "DraftKTrainer"),
    "ti": ("clinalign.training.textual_inversion", "TIConfig", "TextualInversionTrainer"),
    "dpo": ("clinalign.training.dpo", "DPOConfig", "DiffusionDPOTrainer"),
}


def _entry(method: str) -> tuple[type[BaseTrainConfig], type]:
    if method not in _METHODS:
        known = [m for m in METHODS if m in _METHODS]
        raise ConfigError(f"unknown training method {method!r}; choose from {known}.")
    module, config_name, trainer_name = _METHODS[method]
    loaded = importlib.import_module(module)
    return getattr(loaded, config_name), getattr(loaded, trainer_name)


def config_class_for(method: str) -> type[BaseTrainConfig]:
    """The config class of ``method``."""
    return _entry(method)[0]


def trainer_for_config(config: BaseTrainConfig) -> type:
    """The trainer class that takes ``config``."""
    method = str(getattr(config, "method", "craft"))
    config_cls, trainer_cls = _entry(method)
    if not isinstance(config, config_cls):
        raise ConfigError(f"`method: {method}` needs a {config_cls.__name__}, got {type(config).__name__}.")
    return trainer_cls


def read_method(path: str | os.PathLike[str]) -> str:
    """The ``method`` of a config file (``craft`` when it names none)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found. Check the path.")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse the config ({exc}).") from exc
    method = (data or {}).get("method", "craft") if isinstance(data, dict) else "craft"
    if method not in _METHODS:
        known = [m for m in METHODS if m in _METHODS]
        raise ConfigError(f"{path}: unknown `method: {method}`; choose from {known}.")
    return str(method)


def load_train_config(
    path: str | os.PathLike[str], *, set_items: list[str] | None = None, **overrides: Any
) -> BaseTrainConfig:
    """Load a training config of whichever method the file names, with ``--set`` items and flag overrides."""
    from clinalign.training.config import parse_overrides

    config_cls = config_class_for(read_method(path))
    return config_cls.from_file(path, set_values=parse_overrides(set_items or [], config_cls), **overrides)
