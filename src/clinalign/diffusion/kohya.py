"""Export a clinalign (diffusers-format) LoRA with kohya / AUTOMATIC1111 key names.

kohya's sd-scripts name a LoRA module after the diffusers UNet module it adapts, with dots turned
into underscores and a ``lora_unet_`` prefix, and store three tensors per module::

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q.lora_down.weight  # = peft lora_A  [r, in]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q.lora_up.weight    # = peft lora_B  [out, r]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q.alpha             # scalar

Both formats apply ``delta_W = up @ down * alpha / r``, so the export copies the matrices and writes
the adapter's alpha per module: the delta weights are identical (:func:`lora_delta_weights` computes
them from either file). AUTOMATIC1111, ComfyUI and diffusers' ``load_lora_weights`` read this layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clinalign.diffusion.lora import LORA_WEIGHT_NAME, PROVENANCE_PREFIX
from clinalign.errors import DataError, ModelLoadError

KOHYA_PREFIX = "lora_unet_"
_DIFFUSERS_ADAPTER_KEY = "lora_adapter_metadata"  # where diffusers stores the adapter config in the file


# diffusers writes either its own names (``.lora.down.weight``) or peft's (``.lora_A.weight``)
_DOWN_SUFFIXES = (".lora.down.weight", ".lora_A.weight")
_UP_SUFFIXES = (".lora.up.weight", ".lora_B.weight")


def split_diffusers_key(key: str) -> tuple[str, str] | None:
    """``unet.<module>.lora.down.weight`` (or ``...lora_A.weight``) -> ``(<module>, "down")``; ``None`` if not LoRA."""
    name = key[len("unet.") :] if key.startswith("unet.") else key
    for part, suffixes in (("down", _DOWN_SUFFIXES), ("up", _UP_SUFFIXES)):
        for suffix in suffixes:
            if name.endswith(suffix):
                return name[: -len(suffix)], part
    return None


def kohya_module_name(diffusers_module: str) -> str:
    """``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0`` ->
    ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0``."""
    return KOHYA_PREFIX + diffusers_module.replace(".", "_")


def _read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise ModelLoadError(
            f"LoRA weights not found: {path}. Pass a folder written by clinalign train / save_lora "
            f"(it holds {LORA_WEIGHT_NAME})."
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return tensors, metadata


def _rank_and_alpha(metadata: Mapping[str, str], lora_dir: Path) -> tuple[int | None, float]:
    """The adapter's (rank, alpha) from the file's diffusers metadata, else from ``clinalign_meta.json``."""
    adapter: dict[str, Any] = {}
    if _DIFFUSERS_ADAPTER_KEY in metadata:
        raw = json.loads(metadata[_DIFFUSERS_ADAPTER_KEY])
        adapter = {key.split(".", 1)[1] if key.startswith("unet.") else key: v for key, v in raw.items()}
    if adapter.get("use_dora"):
        raise DataError(f"{lora_dir}: a DoRA adapter has no kohya LoRA equivalent; export a plain LoRA.")
    if adapter.get("rank_pattern") or adapter.get("alpha_pattern"):
        raise DataError(f"{lora_dir}: per-module rank/alpha patterns are not supported by the kohya export.")
    if "lora_alpha" in adapter:
        return (int(adapter["r"]) if "r" in adapter else None), float(adapter["lora_alpha"])
    meta_file = lora_dir / "clinalign_meta.json"
    if meta_file.is_file():
        lora = json.loads(meta_file.read_text(encoding="utf-8")).get("lora") or {}
        if "alpha" in lora:
            return int(lora["rank"]), float(lora["alpha"])
    raise DataError(
        f"{lora_dir}: the LoRA's alpha is recorded neither in the weights' metadata nor in clinalign_meta.json, "
        "so its scaling cannot be carried over. Re-save it with clinalign (save_lora)."
    )


def convert_to_kohya(
    tensors: Mapping[str, torch.Tensor], *, alpha: float, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """diffusers-format UNet LoRA tensors (``unet.<module>.lora.down.weight``) -> kohya names with alpha tensors.

    Args:
        tensors: the diffusers-format state dict (keys with or without the ``unet.`` prefix).
        alpha: the adapter's LoRA alpha, written as each module's ``.alpha`` tensor.
        dtype: cast the matrices to this dtype (``None`` keeps them).
    """
    out: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    for key, value in tensors.items():
        if key.startswith("text_encoder"):
            raise DataError(f"key {key!r}: text-encoder LoRA export is not supported (clinalign trains the UNet only).")
        split = split_diffusers_key(key)
        if split is None:
            raise DataError(f"unexpected key {key!r} in the LoRA file: only UNet LoRA up/down weights can be exported.")
        module, part = split
        tensor = value.detach().contiguous()
        out[f"{kohya_module_name(module)}.lora_{part}.weight"] = tensor.to(dtype) if dtype is not None else tensor
        modules.add(module)
    for module in modules:
        down = out.get(f"{kohya_module_name(module)}.lora_down.weight")
        up = out.get(f"{kohya_module_name(module)}.lora_up.weight")
        if down is None or up is None:
            raise DataError(f"module {module!r} has only one of its up/down matrices in the LoRA file (incomplete).")
        out[f"{kohya_module_name(module)}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def export_kohya(
    lora_dir: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the LoRA in ``lora_dir`` as one kohya/A1111 ``.safetensors`` file at ``out_file``, atomically.

    The file's metadata keeps the ``clinalign.*`` provenance and adds kohya's ``ss_network_dim`` /
    ``ss_network_alpha`` / ``ss_network_module`` so A1111-style tools show the rank and alpha.
    """
    from safetensors.torch import save

    from clinalign.utils.io import atomic_write_bytes

    lora_dir = Path(lora_dir)
    out_file = Path(out_file)
    if out_file.suffix != ".safetensors":
        raise DataError(f"--out {out_file}: the kohya export is one file; give it a .safetensors name.")
    tensors, metadata = _read_lora_file(lora_dir)
    folder = lora_dir if lora_dir.is_dir() else lora_dir.parent
    rank, alpha = _rank_and_alpha(metadata, folder)
    converted = convert_to_kohya(tensors, alpha=alpha, dtype=dtype)
    if rank is None:
        rank = next(t.shape[0] for k, t in converted.items() if k.endswith("lora_down.weight"))
    out_meta = {k: v for k, v in metadata.items() if k.startswith(PROVENANCE_PREFIX)}
    out_meta.update(
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_network_alpha": str(alpha),
            "format": "pt",
        }
    )
    atomic_write_bytes(out_file, save(converted, metadata=out_meta))
    return out_file


def lora_delta_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The weight update ``alpha / r * up @ down`` of every adapted UNet module, keyed by diffusers module name.

    Reads either format: a clinalign/diffusers LoRA (folder or file; alpha from its metadata) or a
    kohya file (alpha from its ``.alpha`` tensors). Linear layers only (clinalign adapts attention
    projections). Useful to check an export, or to compare two LoRAs.
    """
    path = Path(path)
    tensors, metadata = _read_lora_file(path)
    deltas: dict[str, torch.Tensor] = {}
    if any(k.startswith(KOHYA_PREFIX) for k in tensors):
        for key, down in tensors.items():
            if not key.endswith(".lora_down.weight"):
                continue
            stem = key[: -len(".lora_down.weight")]
            up = tensors[f"{stem}.lora_up.weight"].float()
            alpha_t = tensors.get(f"{stem}.alpha")
            alpha = float(alpha_t) if alpha_t is not None else float(down.shape[0])
            deltas[stem[len(KOHYA_PREFIX) :]] = up @ down.float() * (alpha / down.shape[0])
        return deltas
    _, alpha = _rank_and_alpha(metadata, path if path.is_dir() else path.parent)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        split = split_diffusers_key(key)
        if split is not None:
            parts.setdefault(split[0], {})[split[1]] = tensor.float()
    for module, pair in parts.items():
        # kohya names lose the dots, so key both formats the same way for comparison
        deltas[module.replace(".", "_")] = pair["up"] @ pair["down"] * (alpha / pair["down"].shape[0])
    return deltas
