"""LoRA on the UNet attention projections, via peft, saved in the format diffusers loads.

Kept apart from the trainer: this module knows how adapters are wired into a UNet; the trainer only
asks for "add LoRA", "its parameters", "its state" and "save it".
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from clinalign.errors import ConfigError, ModelLoadError

DEFAULT_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default name, found by load_lora_weights
ADAPTER_NAME = "default"
# safetensors metadata keys clinalign adds to the LoRA file (values are strings; JSON for lists/dicts)
PROVENANCE_PREFIX = "clinalign."


@dataclass(frozen=True)
class LoraSpec:
    """Where LoRA goes and how big it is.

    Attributes:
        rank: LoRA rank r.
        alpha: LoRA alpha (the update is scaled by alpha / rank).
        dropout: dropout on the LoRA branch input.
        targets: projection names inside attention blocks (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).
        layers: ``"cross_attention"`` (``attn2``, the paper's choice) or ``"all_attention"`` (also
            self-attention ``attn1``).
    """

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    layers: Literal["cross_attention", "all_attention"] = "cross_attention"

    def target_pattern(self) -> str:
        """A peft ``target_modules`` regex matching the chosen projections (full-match on module names)."""
        blocks = "attn2" if self.layers == "cross_attention" else r"attn[12]"
        names = "|".join(re.escape(t) for t in self.targets)
        return rf".*\.{blocks}\.({names})"


def inject_lora(unet: torch.nn.Module, spec: LoraSpec) -> list[torch.nn.Parameter]:
    """Add a trainable LoRA adapter to ``unet`` (base weights stay frozen) and return its parameters.

    LoRA parameters are kept in fp32 whatever the UNet's dtype, so optimiser updates are not lost to
    bf16/fp16 rounding while the frozen weights run in the inference dtype.
    """
    from peft import LoraConfig

    if spec.rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {spec.rank}.")
    unet.requires_grad_(False)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        init_lora_weights="gaussian",
        target_modules=spec.target_pattern(),
    )
    try:
        unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    except ValueError as exc:
        raise ConfigError(
            f"could not add LoRA with targets {list(spec.targets)} on {spec.layers}: {exc}. "
            "Check lora_targets against the UNet's attention module names (to_q, to_k, to_v, to_out.0)."
        ) from exc
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    if not params:
        raise ConfigError(f"LoRA targets {list(spec.targets)} on {spec.layers} matched no UNet module.")
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_parameters(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable LoRA parameters of ``unet`` with their names, in a stable order."""
    return [(n, p) for n, p in unet.named_parameters() if "lora_" in n and p.requires_grad]


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights in peft naming (``...lora_A.weight``), detached fp32 CPU copies."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def load_lora_state_dict(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy peft-named LoRA weights (from :func:`lora_state_dict`) back into ``unet``'s adapter, in place."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER_NAME)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ModelLoadError(f"LoRA checkpoint has {len(unexpected)} keys the model lacks, e.g. {unexpected[:3]}.")
    expected = {n.replace(f".{ADAPTER_NAME}.", ".") for n, _ in lora_parameters(unet)}
    missing = sorted(expected - set(state))
    if missing:
        raise ModelLoadError(
            f"LoRA checkpoint lacks {len(missing)} of the adapter's weights, e.g. {missing[:3]}; "
            "was it saved with different lora_targets/lora_layers/lora_rank?"
        )


def save_lora_diffusers(
    unet: torch.nn.Module,
    directory: str | os.PathLike[str],
    *,
    is_main_process: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the adapter as ``pytorch_lora_weights.safetensors`` in diffusers' LoRA format.

    The adapter config (rank, alpha, targets) is stored in the safetensors metadata, so
    ``StableDiffusionPipeline.load_lora_weights(directory)`` rebuilds the same scaling. The file also
    carries its provenance under ``clinalign.*`` metadata keys (see :func:`lora_provenance`), so it
    describes itself when copied away from its folder; :func:`read_lora_metadata` reads it back.

    Args:
        unet: the UNet holding the adapter.
        directory: output folder (created).
        is_main_process: only the main process writes.
        provenance: what trained the adapter (base model, training critics, rewards, ...), as
            accepted by :func:`lora_provenance`.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors import safe_open
    from safetensors.torch import save

    from clinalign.utils.io import atomic_write_bytes

    directory = Path(directory)
    state = convert_state_dict_to_diffusers(lora_state_dict(unet))
    metadata = _adapter_metadata(unet)
    if is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        # diffusers lays the file out (key prefixes, its adapter-metadata entry); clinalign then adds its
        # provenance keys and renames the result into place atomically with the user's umask
        with tempfile.TemporaryDirectory(prefix=".lora-", dir=directory) as staging:
            StableDiffusionPipeline.save_lora_weights(
                save_directory=staging,
                unet_lora_layers=state,
                is_main_process=True,
                weight_name=LORA_WEIGHT_NAME,
                safe_serialization=True,
                unet_lora_adapter_metadata=metadata,
            )
            with safe_open(str(Path(staging) / LORA_WEIGHT_NAME), framework="pt") as handle:
                file_metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        file_metadata.update(lora_provenance(unet, provenance))
        atomic_write_bytes(directory / LORA_WEIGHT_NAME, save(tensors, metadata=file_metadata))
    return directory


def lora_provenance(unet: torch.nn.Module, provenance: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The ``clinalign.*`` safetensors metadata describing the adapter in ``unet`` and what trained it.

    Always: ``clinalign.version``, ``clinalign.lora_rank``, ``clinalign.lora_alpha``,
    ``clinalign.lora_target_modules``. From ``provenance`` (the trainer's metadata, e.g.
    ``DraftKTrainer.metadata()``), when present: ``base_model``, ``training_critics`` (names and
    weights fingerprints), ``rewards``, ``steps``, ``class_names``, ``trainer`` and the LoRA
    ``targets``/``layers`` as configured. Values are strings; lists and dicts are JSON.
    """
    from clinalign import __version__

    config = unet.peft_config[ADAPTER_NAME]
    targets = config.target_modules
    out: dict[str, Any] = {
        "version": __version__,
        "lora_rank": int(config.r),
        "lora_alpha": float(config.lora_alpha),
        "lora_target_modules": sorted(targets) if isinstance(targets, set | list | tuple) else str(targets),
    }
    meta = dict(provenance or {})
    lora = meta.get("lora") or {}
    critics = meta.get("training_critic_identities") or [{"name": n} for n in meta.get("training_critics") or []]
    optional = {
        "base_model": meta.get("base_model"),
        "training_critics": critics or None,
        "rewards": meta.get("rewards") or None,
        "steps": meta.get("steps"),
        "class_names": meta.get("class_names") or None,
        "trainer": meta.get("_class_name"),
        "lora_targets": lora.get("targets"),
        "lora_layers": lora.get("layers"),
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return {PROVENANCE_PREFIX + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in out.items()}


def read_lora_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``clinalign.*`` provenance of a LoRA file (or of the weights file in a LoRA folder), decoded.

    Keys lose their ``clinalign.`` prefix; JSON values are decoded (strings that are not JSON stay
    strings). A file written by another tool gives ``{}``.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise ModelLoadError(f"LoRA weights not found: {path}. Pass a LoRA folder or its .safetensors file.")
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith(PROVENANCE_PREFIX):
            try:
                out[key[len(PROVENANCE_PREFIX) :]] = json.loads(value)
            except json.JSONDecodeError:
                out[key[len(PROVENANCE_PREFIX) :]] = value
    return out


def _adapter_metadata(unet: torch.nn.Module) -> dict[str, Any]:
    config = unet.peft_config[ADAPTER_NAME].to_dict()
    # only the fields peft needs to rebuild the adapter; sets become lists for JSON
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "init_lora_weights", "bias", "use_dora")
    out = {k: config[k] for k in keys if k in config}
    if isinstance(out.get("target_modules"), set):
        out["target_modules"] = sorted(out["target_modules"])
    return out
