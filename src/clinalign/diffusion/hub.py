"""Publish a trained LoRA folder (weights, ``clinalign_meta.json``, model card) to the Hugging Face Hub.

Authentication is huggingface_hub's own (``HF_TOKEN`` or ``huggingface-cli login``); clinalign never
reads, prints or stores the token.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clinalign.diffusion.lora import LORA_WEIGHT_NAME
from clinalign.errors import ConfigError, DataError, MissingDependencyError

# what a LoRA folder publishes: the weights, clinalign's metadata and the model card
PUBLISHED_FILES: tuple[str, ...] = (LORA_WEIGHT_NAME, "clinalign_meta.json", "README.md")


@dataclass(frozen=True)
class HubUpload:
    """What :func:`push_lora_to_hub` uploaded.

    Attributes:
        repo_id: the Hub repository.
        files: the file names uploaded (relative to the repository root).
        url: the commit URL huggingface_hub returned (``""`` when it returned none).
    """

    repo_id: str
    files: tuple[str, ...]
    url: str


def push_lora_to_hub(
    lora_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    private: bool = False,
    commit_message: str | None = None,
) -> HubUpload:
    """Create (if needed) the model repo ``repo_id`` and upload the LoRA folder's published files to it.

    Args:
        lora_dir: a folder written by ``save_lora`` (holds ``pytorch_lora_weights.safetensors``).
        repo_id: ``"owner/name"`` on the Hub.
        extra_files: more files to upload at the repo root, e.g. a kohya export.
        private: create the repository private (an existing repository keeps its visibility).
        commit_message: the Hub commit message (default names the folder).
    """
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:  # pragma: no cover - a dependency of diffusers, so normally present
        raise MissingDependencyError("huggingface_hub", "Pushing a LoRA to the Hub") from exc

    lora_dir = Path(lora_dir)
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"--push-to-hub {repo_id!r}: give the repository as owner/name, e.g. my-lab/cxr-craft-lora.")
    if not (lora_dir / LORA_WEIGHT_NAME).is_file():
        raise DataError(f"{lora_dir}: no {LORA_WEIGHT_NAME} here; pass a LoRA folder written by clinalign train.")
    extras = [Path(f) for f in extra_files]
    for extra in extras:
        if not extra.is_file():
            raise DataError(f"{extra}: file to upload not found.")
    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="clinalign-hub-") as staging:
        # stage exactly the published files, so nothing else in the folder (checkpoints, logs) leaks out
        stage = Path(staging)
        names = []
        for name in PUBLISHED_FILES:
            if (lora_dir / name).is_file():
                shutil.copy2(lora_dir / name, stage / name)
                names.append(name)
        for extra in extras:
            shutil.copy2(extra, stage / extra.name)
            names.append(extra.name)
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        result = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(stage),
            commit_message=commit_message or f"Upload LoRA from {lora_dir.name} (clinalign)",
        )
    url = str(getattr(result, "commit_url", None) or result or "")
    return HubUpload(repo_id=repo_id, files=tuple(names), url=url)
