"""Trainable adapters behind :class:`~clinalign.diffusion.model.DiffusionModel`: LoRA and textual inversion.

Every adapter answers the same questions (its trainable parameters, an exact state dict for
checkpoints, load that state back, save the final artifact in the format diffusers loads, switch
it off and on), so trainers never reach into the UNet or the text encoder themselves.

- :class:`LoraAdapter`: LoRA on the UNet attention projections (peft), saved as
  ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(dir)``).
- :class:`TextualInversionAdapter`: new tokens added to the tokenizer whose embedding rows are the
  only trainable text-encoder weights; saved in diffusers' textual-inversion format
  (``pipe.load_textual_inversion(path)``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from clinalign.diffusion.lora import (
    LoraSpec,
    inject_lora,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    save_lora_diffusers,
)
from clinalign.errors import ConfigError, ModelLoadError

#: diffusers' default textual-inversion file name (found by ``load_textual_inversion(directory)``).
TI_WEIGHT_NAME = "learned_embeds.safetensors"
#: Prefix of textual-inversion keys in a trainer checkpoint's adapter state.
TI_STATE_PREFIX = "textual_inversion."


class Adapter(Protocol):
    """What a trainer needs from a trainable adapter."""

    name: str

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None: ...

    def set_enabled(self, enabled: bool) -> None: ...


class LoraAdapter:
    """The UNet's LoRA adapter (peft adapter ``"default"``)."""

    name = "lora"

    def __init__(self, unet: torch.nn.Module, spec: LoraSpec | None) -> None:
        self.unet = unet
        self.spec = spec

    @classmethod
    def inject(cls, unet: torch.nn.Module, spec: LoraSpec) -> LoraAdapter:
        inject_lora(unet, spec)
        return cls(unet, spec)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in lora_parameters(self.unet)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return lora_state_dict(self.unet)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        load_lora_state_dict(self.unet, dict(state))

    def set_enabled(self, enabled: bool) -> None:
        # peft's disable switches requires_grad off and enable back on for *every* adapter weight;
        # keep each weight's own flag so a frozen (inference) LoRA stays frozen
        flags = {n: p.requires_grad for n, p in self.unet.named_parameters() if "lora_" in n}
        if enabled:
            self.unet.enable_adapters()
        else:
            self.unet.disable_adapters()
        for n, p in self.unet.named_parameters():
            if n in flags:
                p.requires_grad_(flags[n])

    def make_trainable(self) -> list[torch.nn.Parameter]:
        """Turn a loaded (inference) LoRA into a trainable fp32 one; returns its parameters."""
        params = [p for n, p in self.unet.named_parameters() if "lora_" in n]
        for p in params:
            p.data = p.data.float()
            p.requires_grad_(True)
        return params

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        is_main_process: bool = True,
        provenance: Mapping[str, Any] | None = None,
    ) -> Path:
        return save_lora_diffusers(self.unet, directory, is_main_process=is_main_process, provenance=provenance)


def token_file_name(token: str) -> str:
    """File name of one token's embedding: the token without characters unsafe in file names."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", token).strip("._") or "token"
    return f"{stem}.safetensors"


def vector_tokens(token: str, num_vectors: int) -> list[str]:
    """The tokenizer entries of one placeholder: ``<t>``, ``<t>_1``, ... (diffusers' multi-vector naming)."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


class _ExtendedEmbedding(torch.nn.Module):
    """A token embedding whose first ``base`` rows are frozen and whose new rows are a trainable parameter.

    The frozen rows are never handed to the optimiser, so they stay bit-identical whatever it does
    (weight decay included); lookups see one table ``cat(base, new)``.
    """

    def __init__(self, base_weight: torch.Tensor, new_rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("base_weight", base_weight.detach(), persistent=False)
        self.new_rows = torch.nn.Parameter(new_rows.detach().clone().float())
        self.num_embeddings = base_weight.shape[0] + new_rows.shape[0]
        self.embedding_dim = base_weight.shape[1]

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.base_weight, self.new_rows.to(self.base_weight.dtype)])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(input_ids, self.weight)


class TextualInversionAdapter:
    """New placeholder tokens with trainable embedding rows in the text encoder.

    Args:
        text_encoder: the CLIP text encoder (its input embedding is replaced by one whose new rows train).
        tokenizer: its tokenizer; the placeholder tokens are added to it.
        placeholder_tokens: class name -> placeholder token, e.g. ``{"cardiomegaly": "<cardiomegaly>"}``.
        initializer_token: a word whose (single-token) embedding initialises every new row.
        num_vectors: embedding vectors per placeholder (``<t>``, ``<t>_1``, ... in the tokenizer).
    """

    name = "textual_inversion"

    def __init__(
        self,
        text_encoder: Any,
        tokenizer: Any,
        placeholder_tokens: Mapping[str, str],
        *,
        initializer_token: str,
        num_vectors: int = 1,
    ) -> None:
        if not placeholder_tokens:
            raise ConfigError("placeholder_tokens is empty; map each class to a new token, e.g. {'a': '<a>'}.")
        if num_vectors < 1:
            raise ConfigError(f"num_vectors must be >= 1, got {num_vectors}.")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.placeholder_tokens = dict(placeholder_tokens)
        self.num_vectors = num_vectors
        self.initializer_token = initializer_token
        init_ids = tokenizer.encode(initializer_token, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ConfigError(
                f"initializer_token {initializer_token!r} is {len(init_ids)} tokens for this tokenizer; "
                "use a single word the tokenizer knows (e.g. 'heart', 'lung')."
            )
        vocab = tokenizer.get_vocab()
        self.tokens: list[str] = []
        for token in self.placeholder_tokens.values():
            for entry in vector_tokens(token, num_vectors):
                if entry in vocab or entry in self.tokens:
                    raise ConfigError(
                        f"placeholder token {entry!r} is already in the tokenizer's vocabulary or listed twice; "
                        "pick a new string such as '<cardiomegaly>'."
                    )
                self.tokens.append(entry)
        old = text_encoder.get_input_embeddings()
        base = old.weight.detach()
        added = tokenizer.add_tokens(self.tokens)
        if added != len(self.tokens):
            raise ConfigError(f"the tokenizer added {added} of the tokens {self.tokens}; choose other strings.")
        self.token_ids = tokenizer.convert_tokens_to_ids(self.tokens)
        if self.token_ids != list(range(base.shape[0], base.shape[0] + len(self.tokens))):
            raise ConfigError(
                f"the new tokens got ids {self.token_ids}, not the rows after the vocabulary ({base.shape[0]}); "
                "the tokenizer and text encoder sizes disagree."
            )
        init = base[init_ids[0]].float()
        self.init_rows = init.expand(len(self.tokens), -1).clone()
        self.embedding = _ExtendedEmbedding(base, self.init_rows.to(base.device))
        text_encoder.set_input_embeddings(self.embedding)
        text_encoder.config.vocab_size = self.embedding.num_embeddings
        self._enabled = True
        self._saved_rows: torch.Tensor | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.embedding.new_rows]

    def rows(self) -> dict[str, torch.Tensor]:
        """placeholder token -> its learnt vectors [num_vectors, D] (fp32 CPU copies)."""
        rows = self.embedding.new_rows.detach().float().cpu()
        out = {}
        for i, token in enumerate(self.placeholder_tokens.values()):
            out[token] = rows[i * self.num_vectors : (i + 1) * self.num_vectors].clone()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{TI_STATE_PREFIX}{token}": rows for token, rows in self.rows().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        rows = []
        for token in self.placeholder_tokens.values():
            key = f"{TI_STATE_PREFIX}{token}"
            if key not in state:
                raise ModelLoadError(f"the textual-inversion state lacks {token!r}; saved with other tokens?")
            value = state[key]
            if tuple(value.shape) != (self.num_vectors, self.embedding.embedding_dim):
                raise ModelLoadError(
                    f"the textual-inversion state of {token!r} has shape {tuple(value.shape)}, expected "
                    f"({self.num_vectors}, {self.embedding.embedding_dim})."
                )
            rows.append(value)
        with torch.no_grad():
            self.embedding.new_rows.copy_(torch.cat(rows).to(self.embedding.new_rows))

    def set_enabled(self, enabled: bool) -> None:
        """Disabled, each placeholder embeds as its initializer word (the state before training)."""
        if enabled == self._enabled:
            return
        with torch.no_grad():
            if enabled and self._saved_rows is not None:
                self.embedding.new_rows.copy_(self._saved_rows)
                self._saved_rows = None
            else:
                self._saved_rows = self.embedding.new_rows.detach().clone()
                self.embedding.new_rows.copy_(self.init_rows.to(self.embedding.new_rows))
        self._enabled = enabled

    def expand_prompt(self, prompt: str) -> str:
        """Write each multi-vector placeholder as all its tokens, as diffusers' ``maybe_convert_prompt`` does."""
        if self.num_vectors == 1:
            return prompt
        for token in self.placeholder_tokens.values():
            prompt = prompt.replace(token, " ".join(vector_tokens(token, self.num_vectors)))
        return prompt

    def save(self, directory: str | os.PathLike[str], *, is_main_process: bool = True) -> list[Path]:
        """One diffusers-format file per placeholder (``{token: [num_vectors, D]}``); with a single placeholder
        also ``learned_embeds.safetensors``, so ``pipe.load_textual_inversion(directory)`` loads it."""
        return save_textual_inversion(self.rows(), directory, is_main_process=is_main_process)


def save_textual_inversion(
    rows: Mapping[str, torch.Tensor], directory: str | os.PathLike[str], *, is_main_process: bool = True
) -> list[Path]:
    """Write ``{token: vectors}`` files in diffusers' textual-inversion format; returns the per-token files."""
    from safetensors.torch import save

    from clinalign.utils.io import atomic_write_bytes

    directory = Path(directory)
    paths = [directory / token_file_name(token) for token in rows]
    if len({p.name for p in paths}) != len(paths):
        raise ConfigError(f"placeholder tokens {list(rows)} map to the same file name; make them differ.")
    if is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        for (token, vectors), path in zip(rows.items(), paths, strict=True):
            atomic_write_bytes(path, save({token: vectors.detach().float().cpu().contiguous()}))
        if len(rows) == 1:
            token, vectors = next(iter(rows.items()))
            atomic_write_bytes(directory / TI_WEIGHT_NAME, save({token: vectors.detach().float().cpu().contiguous()}))
    return paths


def textual_inversion_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The per-token files of a textual-inversion folder (clinalign's or any folder of diffusers TI files)."""
    path = Path(directory).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ModelLoadError(f"textual-inversion folder not found: {directory}. Check the path.")
    files = sorted(p for p in path.glob("*.safetensors") if p.name != TI_WEIGHT_NAME)
    if not files and (path / TI_WEIGHT_NAME).is_file():
        files = [path / TI_WEIGHT_NAME]
    if not files:
        raise ModelLoadError(f"{directory} holds no textual-inversion .safetensors file.")
    return files


@contextlib.contextmanager
def adapters_disabled(adapters: Sequence[Any]) -> Iterator[None]:
    """Run the block with ``adapters`` switched off (e.g. the DPO reference model), then back on."""
    for adapter in adapters:
        adapter.set_enabled(False)
    try:
        yield
    finally:
        for adapter in adapters:
            adapter.set_enabled(True)
