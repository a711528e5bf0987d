"""Batch generation to a folder of PNGs plus a manifest JSONL, deterministic per seed and resumable."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clinalign.diffusion.model import DiffusionModel
from clinalign.diffusion.sampling import sample
from clinalign.errors import ConfigError, DataError
from clinalign.utils.seeding import mix_seeds

MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class PromptRow:
    """One prompt to generate from: ``prompt`` plus optional ``label``, ``ref_id`` and ``checklist``."""

    prompt: str
    label: str | None = None
    ref_id: str | None = None
    checklist: str | None = None


def read_prompts(path: str | os.PathLike[str]) -> list[PromptRow]:
    """Prompts from a ``.txt`` (one per non-empty line) or a ``.jsonl`` (``prompt`` or ``t_ep``, optional
    ``label``, ``id``, ``checklist``/``t_c``; e.g. the output of ``clinalign enrich``)."""
    from clinalign.utils.jsonl import decode_text, read_jsonl_strict

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prompts file not found. Check the path.")
    suffix = path.suffix.lower()
    rows: list[PromptRow] = []
    if suffix in (".jsonl", ".ndjson"):
        for number, row in enumerate(read_jsonl_strict(path), start=1):
            prompt = row.get("prompt") or row.get("t_ep")
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{path}, row {number}: missing 'prompt' (or 't_ep'); every row needs prompt text.")
            checklist = row.get("checklist") or row.get("t_c")
            rows.append(
                PromptRow(
                    prompt=prompt,
                    label=None if row.get("label") is None else str(row["label"]),
                    ref_id=None if row.get("id") is None else str(row["id"]),
                    checklist=checklist if isinstance(checklist, str) else None,
                )
            )
    elif suffix == ".txt":
        rows = [
            PromptRow(prompt=line.strip())
            for line in decode_text(path, path.read_bytes(), "utf-8").splitlines()
            if line.strip()
        ]
    else:
        raise DataError(f"{path}: unsupported prompts file '{suffix}'. Use .txt (one prompt per line) or .jsonl.")
    if not rows:
        raise DataError(f"{path}: no prompts.")
    return rows


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The generator seed of one image: a hash of (seed, prompt, sample), so runs with nearby seeds differ.

    Reproduce one image with ``torch.Generator().manual_seed(sample_seed(...))`` on batch size 1.
    """
    return mix_seeds(seed, prompt_index, sample_index)


def generate_to_dir(
    model: DiffusionModel,
    prompts: Sequence[PromptRow],
    out_dir: str | os.PathLike[str],
    *,
    n_per_prompt: int = 1,
    seed: int = 0,
    resolution: int = 512,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    eta: float = 0.0,
    batch_size: int = 8,
    progress_bar: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Generate ``n_per_prompt`` images per prompt into ``out_dir/images`` and list them in ``manifest.jsonl``.

    Each image has its own generator seed (:func:`sample_seed`), so results do not depend on the batch
    size or on which images were already there: a rerun skips images already in the manifest.
    Manifest rows: ``file`` (relative to the manifest), ``prompt``, ``label``, ``seed``, ``sample_index``,
    ``prompt_index``, plus ``ref_id`` / ``checklist`` when the prompt row has them. Returns the manifest path.
    """
    from tqdm.auto import tqdm

    from clinalign.utils.io import append_jsonl, atomic_open, write_json
    from clinalign.utils.jsonl import repair_jsonl

    if n_per_prompt < 1:
        raise ConfigError(f"n_per_prompt must be >= 1, got {n_per_prompt}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    model.check_resolution(resolution)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAME
    # a torn last line (a crash mid-append) is cut off, or the next append would glue onto it
    rows_done, dropped = repair_jsonl(manifest)
    if dropped:
        warnings.warn(
            f"{manifest}: dropped {dropped} torn row at the end (an interrupted write); redone.", stacklevel=2
        )
    done = {row["file"] for row in rows_done}
    settings = {
        "model": model.name_or_path,
        "n_per_prompt": n_per_prompt,
        "seed": seed,
        "resolution": resolution,
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "eta": eta,
        "scheduler": "DDIMScheduler",
        **(extra or {}),
    }
    write_json(out / "generate_config.json", settings)
    jobs = []
    for p, row in enumerate(prompts):
        for j in range(n_per_prompt):
            file = f"images/{p:06d}_{j:03d}.png"
            if file not in done or not (out / file).is_file():
                jobs.append((p, j, row, file))
    model.unet.eval()
    bar = tqdm(total=len(jobs), desc="generate", disable=not progress_bar, dynamic_ncols=True)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        seeds = [sample_seed(seed, p, j) for p, j, _, _ in chunk]
        with torch.no_grad():
            images = sample(
                model,
                model.encode_prompts([row.prompt for _, _, row, _ in chunk]),
                height=resolution,
                width=resolution,
                num_inference_steps=num_inference_steps,
                k=0,
                eta=eta,
                guidance_scale=guidance_scale,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
            ).images
        arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        from PIL import Image

        for (p, j, row, file), array, s in zip(chunk, arrays, seeds, strict=True):
            with atomic_open(out / file, "wb", encoding=None) as handle:
                Image.fromarray(array).save(handle, format="PNG")
            record: dict[str, Any] = {
                "file": file,
                "prompt": row.prompt,
                "label": row.label,
                "seed": s,
                "sample_index": j,
                "prompt_index": p,
            }
            if row.ref_id is not None:
                record["ref_id"] = row.ref_id
            if row.checklist is not None:
                record["checklist"] = row.checklist
            append_jsonl(manifest, record)
        bar.update(len(chunk))
    bar.close()
    if not manifest.is_file():
        manifest.touch()
    return manifest
