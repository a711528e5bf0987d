"""Resumable training checkpoints: LoRA weights, optimiser state and trainer state, safetensors + JSON only.

Layout of ``<output_dir>/checkpoints/step-0000100/``:

- ``lora.safetensors``: the adapter in peft naming (exact fp32 copy);
- ``optimizer.safetensors`` + the optimiser's hyper-parameters inside ``trainer_state.json``;
- ``trainer_state.json``: global step, counters, metric history, config. Written last, so its
  presence marks a complete checkpoint.

No pickle anywhere: a checkpoint can be loaded safely from an untrusted source.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from clinalign.errors import ConfigError, DataError
from clinalign.utils.io import atomic_write_bytes, read_json, write_json

STATE_NAME = "trainer_state.json"
LORA_NAME = "lora.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_NAME).is_file():
            found.append((int(match.group(1)), child))
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str | os.PathLike[str], resume_from: str) -> Path | None:
    """``"latest"`` -> newest complete checkpoint (None if there is none); a path -> that checkpoint."""
    if resume_from == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from).expanduser()
    if not (path / STATE_NAME).is_file():
        raise ConfigError(
            f"resume_from={resume_from!r} is not a complete checkpoint (no {STATE_NAME}). "
            f"Use 'latest' or a directory under {Path(output_dir) / 'checkpoints'}."
        )
    return path


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from clinalign.utils.weights import load_safetensors

    if not path.is_file():
        raise DataError(f"{path}: missing from the checkpoint; the checkpoint is incomplete.")
    return load_safetensors(path, what="checkpoint")  # a pickle or damaged file is an error, never unpickled


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict`` into tensors (safetensors) and JSON-able hyper-parameters."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: Path,
    *,
    lora_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    trainer_state: dict[str, Any],
    write: bool,
) -> None:
    """Write one checkpoint (only when ``write``; callers gate it by process, all processes call it)."""
    if not write:
        return
    directory.mkdir(parents=True, exist_ok=True)
    _save_tensors(directory / LORA_NAME, lora_state)
    tensors, meta = optimizer_to_flat(optimizer_state)
    _save_tensors(directory / OPTIMIZER_NAME, tensors)
    write_json(directory / STATE_NAME, {**trainer_state, "optimizer": meta})


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read (lora_state, optimizer_state, trainer_state) from a checkpoint directory."""
    state = read_json(directory / STATE_NAME)
    lora = _load_tensors(directory / LORA_NAME)
    optimizer = optimizer_from_flat(_load_tensors(directory / OPTIMIZER_NAME), state.pop("optimizer"))
    return lora, optimizer, state


def prune_checkpoints(output_dir: str | os.PathLike[str], keep: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``keep``; returns what was removed."""
    if keep is None:
        return []
    found = list_checkpoints(output_dir)
    removed = found[: max(0, len(found) - keep)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
