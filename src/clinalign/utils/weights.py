"""Safetensors only: the guard every weight-loading path calls before it reads a file.

Pickle weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) can run code when unpickled. clinalign
loads safetensors only; ``allow_pickle`` (the CLI's ``--allow-pickle``) lets a *local* file the user
trusts through, and is refused for hub ids (a download is not a file the user has looked at).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clinalign.errors import ConfigError, DataError, ModelLoadError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_SUFFIX = ".safetensors"
# Folders of a diffusers pipeline / transformers model are shallow; deeper folders are not weights.
_MAX_DEPTH = 2


class PickleWeightsError(ModelLoadError):
    """Weights stored with pickle were found where safetensors are required."""


def convert_hint(what: str) -> str:
    return (
        f"clinalign loads {what} from safetensors only: pickle files can run code when loaded. Convert once, in an "
        "environment you trust: load it and save it again with `save_pretrained(dir, safe_serialization=True)` "
        "(diffusers/transformers/peft), or `safetensors.torch.save_file(torch.load(path, weights_only=True), "
        "'model.safetensors')` for a plain state dict; or pass --allow-pickle if the local file is trusted."
    )


def pickle_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Pickle weight files in ``directory`` (and its subfolders up to two levels) that have no safetensors sibling.

    A folder holding both formats is fine (loaders are told to pick the safetensors); a folder whose
    only weights are pickle is reported.
    """
    root = Path(directory)
    found: list[Path] = []
    folders = [root]
    for _ in range(_MAX_DEPTH):
        folders += [child for folder in list(folders) for child in folder.iterdir() if child.is_dir()]
    for folder in dict.fromkeys(folders):
        files = [p for p in folder.iterdir() if p.is_file()]
        if any(p.suffix == SAFETENSORS_SUFFIX for p in files):
            continue
        found += sorted(p for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    return found


def is_local(name_or_path: str | os.PathLike[str]) -> bool:
    return Path(str(name_or_path)).expanduser().exists()


def check_weights_source(name_or_path: str | os.PathLike[str], *, what: str, allow_pickle: bool = False) -> None:
    """Refuse pickle weights at a local file/folder (unless ``allow_pickle``), and ``allow_pickle`` with a hub id.

    Raises :class:`PickleWeightsError` or :class:`ConfigError` (both exit 2 from the CLI).
    """
    path = Path(str(name_or_path)).expanduser()
    if not path.exists():
        if allow_pickle:
            raise ConfigError(
                f"--allow-pickle is for trusted local files only, not for hub ids like '{name_or_path}'. Drop "
                "--allow-pickle (hub weights then load as safetensors), or download and convert the model first."
            )
        return
    if allow_pickle:
        return
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise PickleWeightsError(f"{path}: {what} weights are a pickle file ({path.suffix}). {convert_hint(what)}")
        return
    found = pickle_files(path)
    if found:
        shown = ", ".join(str(p.relative_to(path)) for p in found[:4]) + (" ..." if len(found) > 4 else "")
        raise PickleWeightsError(
            f"{path}: {what} weights are pickle files ({shown}) with no safetensors beside them. {convert_hint(what)}"
        )


def load_safetensors(path: str | os.PathLike[str], *, what: str, device: str = "cpu") -> dict[str, Any]:
    """``safetensors.torch.load_file`` with a :class:`DataError` naming the file when it is not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise PickleWeightsError(f"{path}: {what} weights are a pickle file ({path.suffix}). {convert_hint(what)}")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable safetensors file ({exc}). It may be truncated, or another format (e.g. pickle) "
            f"renamed; {convert_hint(what)}"
        ) from None


def safetensors_shapes(path: str | os.PathLike[str], *, what: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header, without reading (or allocating) the tensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys()  # the header only: no tensor is read
            return {key: list(handle.get_slice(key).get_shape()) for key in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable safetensors file ({exc}). It may be truncated, or another format (e.g. pickle) "
            f"renamed; {convert_hint(what)}"
        ) from None


__all__ = [
    "PICKLE_SUFFIXES",
    "PickleWeightsError",
    "check_weights_source",
    "convert_hint",
    "is_local",
    "load_safetensors",
    "pickle_files",
    "safetensors_shapes",
]
